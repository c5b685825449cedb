/** What a run needs to know of each server before it plans anything. */
import type pg from 'pg';
import { oneRow, withClient, type Server } from '../pg/connect.ts';
import { majorOfVersionNum } from '../proc/tools.ts';
import type { ServerIdentity, StateStore } from '../state/store.ts';
import { beforeAnyChange } from '../errors.ts';
import type { ServerInfo } from '../events.ts';
import { alterSystemAllowed } from './tune.ts';

export interface ServerFacts {
  identity: ServerIdentity;
  major: number;
  versionNum: number;
  /** e.g. "PostgreSQL 15.18". */
  version: string;
  superuser: boolean;
  /** The user's CREATEDB, CREATEROLE and BYPASSRLS attributes (what a user that is not superuser may do). */
  createdb: boolean;
  createrole: boolean;
  bypassrls: boolean;
  /** Connections this run may open. */
  available: number;
  maxConnections: number;
  inRecovery: boolean;
  /** Whether ALTER SYSTEM may be used (the tuning needs it). */
  alterSystem: { ok: boolean; why?: string };
}

/** The server's system identifier (what names it in the state), with the host and port as given (a hint for messages). */
export async function serverIdentity(client: pg.Client, server: Server): Promise<ServerIdentity> {
  const num = Number(oneRow(await client.query<{ num: string }>("select current_setting('server_version_num') as num")).num);
  let systemIdentifier: string;
  if (num >= 90600) {
    systemIdentifier = oneRow(await client.query<{ id: string }>('select system_identifier::text as id from pg_control_system()')).id;
  } else {
    // pg_control_system() came with 9.6; the data directory stands in for the identifier.
    const dd = await client.query<{ dd: string }>("select current_setting('data_directory') as dd").catch(() => undefined);
    systemIdentifier = `data_directory:${dd?.rows[0]?.dd ?? 'unknown'}`;
  }
  return { host: server.endpoint.host, port: server.endpoint.port, systemIdentifier };
}

/** Refuses (exit 4) servers that are not the pair the state records, before anything is asked of them; one out of reach is exit 3. */
export async function checkStatePair(store: StateStore, source: Server, target: Server): Promise<void> {
  const identity = (s: Server): Promise<ServerIdentity> => withClient(s, s.endpoint.database, (c) => serverIdentity(c, s)).catch(beforeAnyChange);
  await store.checkPair({ source: await identity(source), target: await identity(target) });
}

/** A server as the JSON report names it. */
export const serverInfo = (f: ServerFacts): ServerInfo => ({
  host: f.identity.host,
  port: f.identity.port,
  version: f.version,
  systemIdentifier: f.identity.systemIdentifier,
});

export async function serverFacts(client: pg.Client, server: Server): Promise<ServerFacts> {
  const v = await client.query<{
    num: string;
    version: string;
    superuser: boolean;
    createdb: boolean;
    createrole: boolean;
    bypassrls: boolean;
    max: string;
    reserved: string;
    used: string;
    recovery: boolean;
  }>(
    `select current_setting('server_version_num') as num, current_setting('server_version') as version,
            (select rolsuper from pg_roles where rolname = current_user) as superuser,
            (select rolcreatedb from pg_roles where rolname = current_user) as createdb,
            (select rolcreaterole from pg_roles where rolname = current_user) as createrole,
            (select rolbypassrls from pg_roles where rolname = current_user) as bypassrls,
            current_setting('max_connections') as max,
            (current_setting('superuser_reserved_connections')::int
              + coalesce((select setting::int from pg_settings where name = 'reserved_connections'), 0))::text as reserved,
            (select count(*) from pg_stat_activity where datid is not null)::text as used,
            pg_is_in_recovery() as recovery`,
  );
  const row = oneRow(v);
  const versionNum = Number(row.num);
  const max = Number(row.max);
  return {
    identity: await serverIdentity(client, server),
    major: majorOfVersionNum(versionNum),
    versionNum,
    version: `PostgreSQL ${row.version.split(' ')[0] ?? row.version}`,
    superuser: row.superuser,
    createdb: row.createdb,
    createrole: row.createrole,
    bypassrls: row.bypassrls,
    maxConnections: max,
    available: max - Number(row.reserved) - Number(row.used),
    inRecovery: row.recovery,
    alterSystem: await alterSystemAllowed(client),
  };
}
