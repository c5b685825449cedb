import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Endpoint } from '../options.ts';

const escapeField = (s: string): string => s.replaceAll('\\', '\\\\').replaceAll(':', '\\:');

/**
 * Passfile lines for one endpoint. libpq looks a socket directory up by its path, or as `localhost`
 * when it is libpq's default directory: a socket endpoint gets both lines.
 */
export function passfileLines(e: Endpoint, password: string): string[] {
  const hosts = e.host.startsWith('/') ? [e.host, 'localhost'] : [e.host];
  return hosts.map((host) => [host, String(e.port), '*', e.user, password].map(escapeField).join(':'));
}

export interface ChildAuth {
  /** Environment for client programs: PGPASSFILE set when the tool holds a password, PGPASSWORD removed. */
  env: NodeJS.ProcessEnv;
  dispose(): Promise<void>;
}

/**
 * Passwords never go on a child's command line. When the operator gave a password (flag or
 * environment), children read it from a private 0600 passfile that also carries the lines of the
 * operator's own passfile; otherwise libpq's usual sources apply unchanged.
 */
export async function prepareChildAuth(endpoints: Endpoint[], baseEnv: NodeJS.ProcessEnv, appName: string): Promise<ChildAuth> {
  const env: NodeJS.ProcessEnv = { ...baseEnv, PGAPPNAME: appName, PGCONNECT_TIMEOUT: baseEnv.PGCONNECT_TIMEOUT ?? '30' };
  const lines: string[] = [];
  for (const e of endpoints) {
    const pw = e.password ?? baseEnv.PGPASSWORD;
    if (pw !== undefined) lines.push(...passfileLines(e, pw));
  }
  if (lines.length === 0 || !endpoints.some((e) => e.password !== undefined)) return { env, dispose: () => Promise.resolve() };
  const own = baseEnv.PGPASSFILE ?? path.join(baseEnv.HOME ?? os.homedir(), '.pgpass');
  try {
    lines.push((await readFile(own, 'utf8')).trimEnd());
  } catch {
    // no passfile of the operator's
  }
  const dir = await mkdtemp(path.join(os.tmpdir(), 'pg-migrate-'));
  const file = path.join(dir, 'pgpass');
  await writeFile(file, `${lines.join('\n')}\n`, { mode: 0o600 });
  delete env.PGPASSWORD;
  env.PGPASSFILE = file;
  const cleanup = (): void => {
    rmSync(dir, { recursive: true, force: true });
  };
  process.once('exit', cleanup);
  return {
    env,
    dispose: async () => {
      process.removeListener('exit', cleanup);
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/** A libpq connection string naming one database, for `--dbname` (safe for any database name). */
export function dbnameConninfo(database: string): string {
  return `dbname='${database.replaceAll('\\', '\\\\').replaceAll("'", "\\'")}'`;
}

/** Connection arguments of a client program (the password comes from the passfile, never the command line). */
export function connArgs(server: { endpoint: Endpoint }): string[] {
  const e = server.endpoint;
  return ['-h', e.host, '-p', String(e.port), '-U', e.user, '-w'];
}
