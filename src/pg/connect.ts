/**
 * The tool's own sessions (node-postgres). The first session to an endpoint goes through connectSpec
 * (libpq's host order, sslmode fallbacks, target_session_attrs; a password prompt when the server
 * wants one and none was given) and pins the host and TLS choice it made: every later session, pool
 * and client program of the run goes to that same server the same way.
 */
import pg from 'pg';
import type { Endpoint } from './endpoint.ts';
import { withPassword } from './endpoint.ts';
import { toLibpqConninfo, type ConnectionSpec, type HostTarget } from './conninfo.ts';
import { connectSpec, toClientConfigs } from './conninfo-node.ts';
import { describeConnectError, needsPassword, serverAway } from './connect-errors.ts';
import { MigrateError } from '../errors.ts';

export { describeConnectError } from './connect-errors.ts';

export type Side = 'source' | 'target';

/** A server as the pipeline talks to it. */
export interface Server {
  side: Side;
  endpoint: Endpoint;
  /** application_name of every session of this run, children included (for cancellation). */
  appName: string;
}

/** Asks the operator for a password (a terminal prompt); undefined when nobody can answer. */
export type PasswordPrompt = (question: string) => Promise<string | undefined>;

let prompt: { ask: PasswordPrompt; always: boolean } | undefined;

/** Installs the terminal prompt (the CLI does, on a terminal). `always`: ask before the first connection (-W). */
export function setPasswordPrompt(ask: PasswordPrompt | undefined, always = false): void {
  prompt = ask === undefined ? undefined : { ask, always };
}

/** The host and TLS choice of an endpoint's first session. */
interface Pin {
  target: HostTarget;
  tls: boolean;
  /** server_version_num: the session settings the server knows depend on it. */
  versionNum: number;
}
const pins = new WeakMap<Endpoint, Promise<Pin>>();
/** Endpoints whose password was asked for already: the operator is asked once per run and side. */
const asked = new WeakSet<Endpoint>();
const resolvedPins = new WeakMap<Endpoint, Pin>();

/** The prompt being answered: one question at a time on the terminal (both servers may want a password at once). */
let prompting: Promise<unknown> = Promise.resolve();

async function askPassword(server: Server): Promise<boolean> {
  const e = server.endpoint;
  const ask = prompt?.ask;
  if (asked.has(e) || ask === undefined) return false;
  asked.add(e);
  const question = `Password for user ${e.user} on the ${server.side} server ${e.host === '' ? 'local socket' : e.host}:${String(e.port)}: `;
  const turn = prompting.then(() => ask(question));
  prompting = turn.catch(() => undefined);
  const answer = await turn;
  if (answer === undefined) return false;
  e.spec = withPassword(e.spec, answer);
  return true;
}

async function establish(server: Server): Promise<Pin> {
  const e = server.endpoint;
  if (prompt?.always === true && e.spec.password === undefined) await askPassword(server);
  for (;;) {
    try {
      const c = await connectSpec(firstSessionSpec(server), e.database, server.appName);
      const version = await c.client
        .query<{ v: string }>("select current_setting('server_version_num') as v")
        .finally(() => c.client.end().catch(() => undefined));
      const pin = { target: c.target, tls: c.config.ssl !== false && c.config.ssl !== undefined, versionNum: Number(version.rows[0]?.v ?? 0) };
      resolvedPins.set(e, pin);
      return pin;
    } catch (err) {
      if (e.spec.password === undefined && needsPassword(err) && (await askPassword(server))) continue;
      throw describeConnectError(err, server, e.database);
    }
  }
}

/** Connects once to the endpoint's maintenance database (prompting for a password if need be) and pins host and TLS. */
export function authenticate(server: Server): Promise<void> {
  let p = pins.get(server.endpoint);
  if (!p) {
    p = establish(server);
    pins.set(server.endpoint, p);
    p.catch(() => pins.delete(server.endpoint));
  }
  return p.then(() => undefined);
}

/**
 * With a terminal prompt installed: the first session of each server now, before a live display
 * takes the terminal, so a password is asked for on a clean line. Failures are left for the run to
 * meet in its own order (the target's leftover tuning is reverted before the source may fail).
 */
export async function authenticateEarly(servers: Server[]): Promise<void> {
  if (prompt === undefined) return;
  for (const s of servers) await authenticate(s).catch(() => undefined);
}

/**
 * Settings every session of the tool starts with, those the server's version knows: a database or
 * role of the servers may set a statement, lock, idle-in-transaction, idle-session or transaction
 * timeout (that would end a long count, an index build, the snapshot's idle exporter or the idle
 * control connection) or
 * default_transaction_read_only (an archive database: its restore must write).
 */
export function sessionOptions(versionNum: number): string {
  const settings = ['statement_timeout=0', 'default_transaction_read_only=off'];
  if (versionNum >= 90300) settings.push('lock_timeout=0');
  // As pg_dump: a table whose row-level security would hide rows from the tool's user is an error, never a partial count or checksum.
  if (versionNum >= 90500) settings.push('row_security=off');
  if (versionNum >= 90600) settings.push('idle_in_transaction_session_timeout=0');
  if (versionNum >= 140000) settings.push('idle_session_timeout=0');
  if (versionNum >= 170000) settings.push('transaction_timeout=0');
  return settings.map((s) => `-c ${s}`).join(' ');
}

/** The session settings ahead of the operator's own `options` (later ones win in libpq's options). */
function withSessionOptions(server: Server, own: string | undefined): string {
  const ours = sessionOptions(resolvedPins.get(server.endpoint)?.versionNum ?? 0);
  return own === undefined || own.trim() === '' ? ours : `${ours} ${own}`;
}

/**
 * The spec of an endpoint's first session: the server's version is not known yet, so it starts with
 * the session settings every version knows (a statement_timeout of the role or database would
 * otherwise cancel the version query itself).
 */
function firstSessionSpec(server: Server): ConnectionSpec {
  const spec = server.endpoint.spec;
  const params = { ...spec.params, options: withSessionOptions(server, spec.params.options) };
  return Object.defineProperty({ side: spec.side, params, origins: spec.origins }, 'password', { value: spec.password, enumerable: false }) as ConnectionSpec;
}

const sameTarget = (a: HostTarget, b: HostTarget): boolean => a.host === b.host && a.hostaddr === b.hostaddr && a.port === b.port;

/** The node-postgres config of a session to `database`: the pinned host and TLS choice, else libpq's first. */
export function clientConfig(server: Server, database: string): pg.ClientConfig {
  const plans = toClientConfigs(server.endpoint.spec, database, server.appName);
  const pin = resolvedPins.get(server.endpoint);
  const plan = (pin && plans.find((p) => sameTarget(p.target, pin.target))) ?? plans[0];
  const config = (pin && plan?.attempts.find((a) => (a.ssl !== false && a.ssl !== undefined) === pin.tls)) ?? plan?.attempts[0];
  if (config === undefined) throw new MigrateError(`the ${server.side} server has no host to connect to`);
  return { ...config, options: withSessionOptions(server, config.options) };
}

/** The spec narrowed to the pinned host (the same server for every client program as for the tool's sessions). */
export function pinnedSpec(server: Server): ConnectionSpec {
  const spec = server.endpoint.spec;
  const pin = resolvedPins.get(server.endpoint);
  if (!pin) return spec;
  const params = { ...spec.params, port: String(pin.target.port) };
  delete params.load_balance_hosts;
  if (pin.target.host === '') delete params.host;
  else params.host = pin.target.host;
  if (pin.target.hostaddr === undefined) delete params.hostaddr;
  else params.hostaddr = pin.target.hostaddr;
  return Object.defineProperty({ side: spec.side, params, origins: spec.origins }, 'password', { value: spec.password, enumerable: false }) as ConnectionSpec;
}

/**
 * The `--dbname` of a client program: the side's whole conninfo (TLS settings included) narrowed to
 * the pinned host, naming `database` and the run's application_name. The password is never in it.
 */
export function clientConninfo(server: Server, database: string): string {
  return toLibpqConninfo(pinnedSpec(server), database, {
    application_name: server.appName,
    options: withSessionOptions(server, server.endpoint.spec.params.options),
  });
}

/** Connection arguments of a client program: `-w` (never prompt) and the conninfo (see clientConninfo). */
export function clientArgs(server: Server, database: string): string[] {
  return ['-w', `--dbname=${clientConninfo(server, database)}`];
}

export async function connect(server: Server, database: string): Promise<pg.Client> {
  await authenticate(server);
  const client = new pg.Client(clientConfig(server, database));
  client.on('error', () => undefined); // a broken connection surfaces in the next query
  try {
    await client.connect();
  } catch (err) {
    await client.end().catch(() => undefined);
    const described = describeConnectError(err, server, database);
    if (serverAway(err)) Object.defineProperty(described, 'serverAway', { value: true });
    throw described;
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

/** A pool of sessions to `database` (the endpoint is authenticated by an earlier connect()). */
export function createPool(server: Server, database: string, max: number): pg.Pool {
  const pool = new pg.Pool({ ...clientConfig(server, database), max, idleTimeoutMillis: 250 });
  pool.on('error', () => undefined); // idle client lost: the pool replaces it
  // pg-pool takes its own error listener off a client while it is checked out, and a client whose
  // session ends then (pg_terminate_backend, a server restart, the run's own interruption ending its
  // sessions) emits 'error' with nobody listening: the process would die before the tuning is put back.
  // The broken connection surfaces in the query instead.
  pool.on('connect', (client) => {
    client.on('error', () => undefined);
  });
  return pool;
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
