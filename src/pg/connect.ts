import pg from 'pg';
import type { Endpoint } from '../options.ts';
import { MigrateError } from '../errors.ts';

export type Side = 'source' | 'target';

/** A server as the pipeline talks to it. */
export interface Server {
  side: Side;
  endpoint: Endpoint;
  /** application_name of every session of this run, children included (for cancellation). */
  appName: string;
}

/** How long a connection attempt may take, for node-postgres and (PGCONNECT_TIMEOUT) the client programs. */
export const CONNECT_TIMEOUT_SECONDS = 30;

export function clientConfig(server: Server, database: string): pg.ClientConfig {
  return {
    host: server.endpoint.host,
    port: server.endpoint.port,
    user: server.endpoint.user,
    password: server.endpoint.password,
    database,
    application_name: server.appName,
    connectionTimeoutMillis: CONNECT_TIMEOUT_SECONDS * 1000,
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
  const message = e.message ?? String(err);
  const { host, port, user } = server.endpoint;
  const where = `the ${server.side} server ${host}:${String(port)}`;
  switch (e.code) {
    case 'ECONNREFUSED':
      return new MigrateError(
        `${where} refused the connection: is PostgreSQL running there, and are ${flag(server.side, 'host')}/${flag(server.side, 'port')} right?`,
      );
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
      return new MigrateError(
        `${where} does not let user "${user}" in (${message}): add a pg_hba.conf entry for this client, or use another ${flag(server.side, 'user')}`,
      );
    case '3D000':
      return new MigrateError(
        `${where} has no database "${database}" (${message})${database === server.endpoint.database ? `: pass an existing one with ${flag(server.side, 'db')}` : ''}`,
      );
    default:
      if (/timeout/i.test(message)) {
        return new MigrateError(
          `${where} did not answer within ${String(CONNECT_TIMEOUT_SECONDS)} s: check ${flag(server.side, 'host')}/${flag(server.side, 'port')}`,
        );
      }
      if (/password/i.test(message) && /SASL|client password must be a string/i.test(message)) {
        return new MigrateError(
          `${where} asks for a password for user "${user}" and none was given: pass ${flag(server.side, 'pass')}, set ${envName(server.side, 'pass')} or PGPASSWORD, or use ~/.pgpass`,
        );
      }
      return new MigrateError(`cannot connect to ${where} as "${user}" (database "${database}"): ${message}`);
  }
}

/** Decorates a server error with the parts PostgreSQL gives beside the message. */
export function describePgError(err: unknown): string {
  const e = err as { message?: string; detail?: string; hint?: string };
  let text = e.message ?? String(err);
  if (e.detail) text += ` (detail: ${e.detail})`;
  if (e.hint) text += ` (hint: ${e.hint})`;
  return text;
}

/** The one row a query must return (an aggregate, current_setting, ...). */
export function oneRow<R extends pg.QueryResultRow>(r: pg.QueryResult<R>): R {
  const row = r.rows[0];
  if (row === undefined) throw new MigrateError(`a query that returns one row returned none: ${r.command}`);
  return row;
}

/** The SQLSTATE of a server error, if it is one. */
export const sqlState = (err: unknown): string | undefined => (err as { code?: unknown }).code as string | undefined;

/**
 * Ends every session with the given application_name on a server (queries and children's connections
 * alike), except the one asking. Used on cancellation and to end what a killed run left behind.
 */
export async function terminateSessions(server: Server, appName: string = server.appName): Promise<number> {
  try {
    return await withClient(server, server.endpoint.database, async (c) => {
      await c.query('select pg_cancel_backend(pid) from pg_stat_activity where application_name = $1 and pid <> pg_backend_pid()', [appName]);
      const r = await c.query<{ n: string }>(
        'select count(pg_terminate_backend(pid))::text as n from pg_stat_activity where application_name = $1 and pid <> pg_backend_pid()',
        [appName],
      );
      return Number(r.rows[0]?.n ?? 0);
    });
  } catch {
    return 0;
  }
}

/**
 * Queries on a server's maintenance database (--from-db / --to-db) through one connection kept per
 * server for the run: cheap checks per database cost no new session. pg.Client queues concurrent
 * queries. One instance per run (the run context holds it).
 */
export class ControlConnections {
  private readonly clients = new Map<Server, Promise<pg.Client>>();
  private closed = false;

  async query<R extends pg.QueryResultRow>(server: Server, sql: string, params: unknown[] = []): Promise<pg.QueryResult<R>> {
    // After close no connection is opened again (nothing of the run may outlive it).
    if (this.closed) throw new MigrateError('the run is ending: no more queries on its control connections');
    let client = this.clients.get(server);
    if (!client) {
      client = connect(server, server.endpoint.database);
      this.clients.set(server, client);
      client.catch(() => this.clients.delete(server));
    }
    try {
      return await (await client).query<R>(sql, params);
    } catch (err) {
      // A broken control connection is replaced on the next call.
      if (sqlState(err) === undefined) this.clients.delete(server);
      throw err;
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    const all = [...this.clients.values()];
    this.clients.clear();
    await Promise.all(all.map((p) => p.then((c) => c.end()).catch(() => undefined)));
  }
}
