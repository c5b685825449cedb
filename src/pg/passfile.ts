import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { clientProgramEnv, conninfoPassfileLines } from './conninfo.ts';
import type { Endpoint } from './endpoint.ts';

const escapeField = (s: string): string => s.replaceAll('\\', '\\\\').replaceAll(':', '\\:');

/**
 * One passfile line `host:port:*:user:password` (any database), `:` and `\` escaped as libpq reads
 * them. libpq looks a socket directory up by its path, or as `localhost` when it is libpq's default
 * directory: give a socket directory twice, once as `localhost`.
 */
export function passfileLine(host: string, port: string, user: string, password: string): string {
  return [host, port, '*', user, password].map(escapeField).join(':');
}

export interface ChildAuth {
  /** Environment for client programs: no PG* connection variable (the conninfo says it all), PGPASSFILE when the tool holds a password. */
  env: NodeJS.ProcessEnv;
  /** The private directory of the passfile, when there is one (recorded in the run lock, so a run that takes over removes it). */
  dir?: string;
  dispose(): Promise<void>;
}

/**
 * Passwords never go on a child's command line. The children get the whole connection as
 * `--dbname=<conninfo>` (clientArgs), and an environment without libpq's connection variables or the
 * tool's own PG_MIGRATE_* ones. A side that holds a password (flag, variable, prompt) has it in a
 * private 0600 passfile (PGPASSFILE); a side without one keeps its passfile setting in its conninfo.
 */
export async function prepareChildAuth(endpoints: Endpoint[], baseEnv: NodeJS.ProcessEnv): Promise<ChildAuth> {
  const env = clientProgramEnv(Object.fromEntries(Object.entries(baseEnv).filter(([k]) => !k.startsWith('PG_MIGRATE_'))));
  const lines = [...new Set(endpoints.flatMap((e) => conninfoPassfileLines(e.spec)))];
  if (lines.length === 0) return { env, dispose: () => Promise.resolve() };
  const dir = await mkdtemp(path.join(os.tmpdir(), `pg-migrate-${String(process.pid)}-`));
  const file = path.join(dir, 'pgpass');
  await writeFile(file, `${lines.join('\n')}\n`, { mode: 0o600 });
  env.PGPASSFILE = file;
  const cleanup = (): void => {
    rmSync(dir, { recursive: true, force: true });
  };
  process.once('exit', cleanup);
  return {
    env,
    dir,
    dispose: async () => {
      process.removeListener('exit', cleanup);
      await rm(dir, { recursive: true, force: true });
    },
  };
}
