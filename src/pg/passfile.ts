import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Endpoint } from '../options.ts';
import { CONNECT_TIMEOUT_SECONDS } from './connect.ts';

const escapeField = (s: string): string => s.replaceAll('\\', '\\\\').replaceAll(':', '\\:');

/**
 * One passfile line `host:port:*:user:password` (any database), `:` and `\` escaped as libpq reads
 * them. libpq looks a socket directory up by its path, or as `localhost` when it is libpq's default
 * directory: give a socket directory twice, once as `localhost`.
 */
export function passfileLine(host: string, port: string, user: string, password: string): string {
  return [host, port, '*', user, password].map(escapeField).join(':');
}

/**
 * Passfile lines for one endpoint. libpq looks a socket directory up by its path, or as `localhost`
 * when it is libpq's default directory: a socket endpoint gets both lines.
 */
export function passfileLines(e: Endpoint, password: string): string[] {
  const hosts = e.host.startsWith('/') ? [e.host, 'localhost'] : [e.host];
  return hosts.map((host) => passfileLine(host, String(e.port), e.user, password));
}

export interface ChildAuth {
  /** Environment for client programs: PGPASSFILE set when the tool holds a password, PGPASSWORD and PG_MIGRATE_* removed. */
  env: NodeJS.ProcessEnv;
  /** The private directory of the passfile, when there is one (recorded in the run lock, so a run that takes over removes it). */
  dir?: string;
  dispose(): Promise<void>;
}

/**
 * Passwords never go on a child's command line. When the operator gave a password (flag or
 * environment), children read it from a private 0600 passfile that also carries the lines of the
 * operator's own passfile; otherwise libpq's usual sources apply unchanged.
 */
export async function prepareChildAuth(endpoints: Endpoint[], baseEnv: NodeJS.ProcessEnv, appName: string): Promise<ChildAuth> {
  // The tool's own variables (PG_MIGRATE_FROM_PASS, ...) are not the children's business.
  const env: NodeJS.ProcessEnv = Object.fromEntries(Object.entries(baseEnv).filter(([k]) => !k.startsWith('PG_MIGRATE_')));
  env.PGAPPNAME = appName;
  env.PGCONNECT_TIMEOUT = baseEnv.PGCONNECT_TIMEOUT ?? String(CONNECT_TIMEOUT_SECONDS);
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
  const dir = await mkdtemp(path.join(os.tmpdir(), `pg-migrate-${String(process.pid)}-`));
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
    dir,
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
