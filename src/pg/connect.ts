import pg from 'pg';
import type { Endpoint } from '../options.ts';
import { MigrateError } from '../errors.ts';

export const quoteIdent = pg.escapeIdentifier;
export const quoteLiteral = pg.escapeLiteral;
export const qualify = (schema: string, name: string): string => `${quoteIdent(schema)}.${quoteIdent(name)}`;

export type Side = 'source' | 'target';

/** A server as the pipeline talks to it. */
export interface Server {
  side: Side;
  endpoint: Endpoint;
  /** application_name of every session of this run, children included (for cancellation). */
  appName: string;
}

export function clientConfig(server: Server, database: string): pg.ClientConfig {
  return {
    host: server.endpoint.host,
    port: server.endpoint.port,
    user: server.endpoint.user,
    password: server.endpoint.password,
    database,
    application_name: server.appName,
    connectionTimeoutMillis: 30_000,
    keepAlive: true,
  };
}

export async function connect(server: Server, database: string): Promise<pg.Client> {
  const client = new pg.Client(clientConfig(server, database));
  client.on('error', () => undefined); // a broken connection surfaces in the next query
  try {
    await client.connect();
  } catch (err) {
    await client.end().catch(() => undefined);
    throw describeConnectError(err, server, database);
  }
  return client;
}

export async function withClient<T>(server: Server, database: string, fn: (c: pg.Client) => Promise<T>): Promise<T> {
  const client = await connect(server, database);
  try {
    return await fn(client);
  } finally {
    await client.end().catch(() => undefined);
  }
}

/**
 * The statements that start a read-only repeatable-read transaction seeing exactly the exported
 * `snapshot`, each sent on its own (SET TRANSACTION SNAPSHOT must come first in its transaction).
 */
export function snapshotImportStatements(snapshot: string): string[] {
  return ['begin isolation level repeatable read read only', `set transaction snapshot ${quoteLiteral(snapshot)}`];
}

/** Starts a read-only repeatable-read transaction that sees exactly the exported `snapshot`. */
export async function importSnapshot(client: pg.ClientBase, snapshot: string): Promise<void> {
  for (const sql of snapshotImportStatements(snapshot)) await client.query(sql);
}

export function createPool(server: Server, database: string, max: number): pg.Pool {
  const pool = new pg.Pool({ ...clientConfig(server, database), max, idleTimeoutMillis: 250 });
  pool.on('error', () => undefined); // idle client lost: the pool replaces it
  return pool;
}

const flag = (side: Side, what: string): string => `--${side === 'source' ? 'from' : 'to'}-${what}`;
const envName = (side: Side, what: string): string => `PG_MIGRATE_${side === 'source' ? 'FROM' : 'TO'}_${what.toUpperCase()}`;

/** Turns a connection failure into one sentence that names the server and the fix. */
export function describeConnectError(err: unknown, server: Server, database: string): MigrateError {
  const e = err as { code?: string; message?: string };
  const { host, port, user } = server.endpoint;
  const where = `the ${server.side} server ${host}:${port}`;
  switch (e.code) {
    case 'ECONNREFUSED':
      return new MigrateError(`${where} refused the connection: is PostgreSQL running there, and are ${flag(server.side, 'host')}/${flag(server.side, 'port')} right?`);
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      return new MigrateError(`${where} cannot be found: the host name ${host} does not resolve; check ${flag(server.side, 'host')}`);
    case 'ETIMEDOUT':
    case 'EHOSTUNREACH':
    case 'ENETUNREACH':
      return new MigrateError(`${where} cannot be reached (${e.code}): check ${flag(server.side, 'host')}, the network and firewalls`);
    case '28P01':
      return new MigrateError(
        `${where} rejected the password of user "${user}": pass the right one with ${flag(server.side, 'pass')} or ${envName(server.side, 'pass')}, or put it in ~/.pgpass`,
      );
    case '28000':
      return new MigrateError(`${where} does not let user "${user}" in (${e.message}): add a pg_hba.conf entry for this client, or use another ${flag(server.side, 'user')}`);
    case '3D000':
      return new MigrateError(`${where} has no database "${database}" (${e.message})${database === server.endpoint.database ? `: pass an existing one with ${flag(server.side, 'db')}` : ''}`);
    default:
      if (/timeout/i.test(e.message ?? '')) return new MigrateError(`${where} did not answer within 30 s: check ${flag(server.side, 'host')}/${flag(server.side, 'port')}`);
      if (/password/i.test(e.message ?? '') && /SASL|client password must be a string/i.test(e.message ?? '')) {
        return new MigrateError(
          `${where} asks for a password for user "${user}" and none was given: pass ${flag(server.side, 'pass')}, set ${envName(server.side, 'pass')} or PGPASSWORD, or use ~/.pgpass`,
        );
      }
      return new MigrateError(`cannot connect to ${where} as "${user}" (database "${database}"): ${e.message ?? String(err)}`);
  }
}

/** Decorates a server error with the parts PostgreSQL gives beside the message. */
export function describePgError(err: unknown): string {
  const e = err as { message?: string; detail?: string; hint?: string; code?: string };
  let text = e.message ?? String(err);
  if (e.detail) text += ` (detail: ${e.detail})`;
  if (e.hint) text += ` (hint: ${e.hint})`;
  return text;
}

/**
 * Ends every session of this run on a server (queries and children's connections alike), except the
 * one asking. Used on cancellation, so that nothing keeps running on either server.
 */
export async function terminateRunSessions(server: Server): Promise<number> {
  try {
    return await withClient(server, server.endpoint.database, async (c) => {
      await c.query('select pg_cancel_backend(pid) from pg_stat_activity where application_name = $1 and pid <> pg_backend_pid()', [server.appName]);
      const r = await c.query<{ n: string }>(
        'select count(pg_terminate_backend(pid))::text as n from pg_stat_activity where application_name = $1 and pid <> pg_backend_pid()',
        [server.appName],
      );
      return Number(r.rows[0]?.n ?? 0);
    });
  } catch {
    return 0;
  }
}

const controls = new Map<Server, Promise<pg.Client>>();

/**
 * A query on the server's maintenance database (--from-db / --to-db) through one connection kept for
 * the run: cheap checks per database cost no new session. pg.Client queues concurrent queries.
 */
export async function controlQuery<R extends pg.QueryResultRow>(server: Server, sql: string, params: unknown[] = []): Promise<pg.QueryResult<R>> {
  let client = controls.get(server);
  if (!client) {
    client = connect(server, server.endpoint.database);
    controls.set(server, client);
    client.catch(() => controls.delete(server));
  }
  try {
    return await (await client).query<R>(sql, params);
  } catch (err) {
    // A broken control connection is replaced on the next call.
    if (!(err as { code?: string }).code) controls.delete(server);
    throw err;
  }
}

export async function closeControlConnections(): Promise<void> {
  const all = [...controls.values()];
  controls.clear();
  await Promise.all(all.map((p) => p.then((c) => c.end()).catch(() => undefined)));
}
