/**
 * The cutover's fence on the source's databases: new sessions read-only (default_transaction_read_only
 * for the database, its earlier setting recorded and put back), the sessions still open ended after a
 * grace period; and what can write past it (roles that turn it off, sessions that hold a transaction
 * id, prepared transactions), named.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type pg from 'pg';
import { withClient, type Server } from '../pg/connect.ts';
import { quoteIdent, quoteLiteral } from '../pg/sql.ts';
import { AbortError, ExitCode, MigrateError } from '../errors.ts';

/** A database's setting of default_transaction_read_only before the fence (null: not set for the database). */
export interface FenceRecord {
  at: string;
  databases: { name: string; previous: string | null }[];
  /**
   * Set when the cutover, everything compared, began dropping the replication: from then on the source
   * stays fenced (writes made now would reach no subscription) and a rerun finishes the drop.
   */
  droppingAt?: string;
  /** Set once the cutover completed: the source stays read-only on purpose. */
  completedAt?: string;
}

/** The database-level value of default_transaction_read_only, if set. */
async function dbSetting(c: pg.ClientBase, db: string): Promise<string | null> {
  const r = await c.query<{ v: string | null }>(
    `select (select substr(s, length('default_transaction_read_only=') + 1) from unnest(setconfig) s where s like 'default_transaction_read_only=%') as v
       from pg_db_role_setting where setdatabase = (select oid from pg_database where datname = $1) and setrole = 0`,
    [db],
  );
  return r.rows[0]?.v ?? null;
}

/** What the fence will change, read before it changes anything. */
export async function fenceRecord(source: Server, dbs: string[]): Promise<FenceRecord> {
  return withClient(source, source.endpoint.database, async (c) => {
    // One query at a time: a pg client given several at once queues them, which pg deprecates.
    const databases: FenceRecord['databases'] = [];
    for (const name of dbs) databases.push({ name, previous: await dbSetting(c, name) });
    return { at: new Date().toISOString(), databases };
  });
}

/** How long the fence waits for the sessions it ended to be gone before it gives up. */
const ENDED_SESSIONS_TIMEOUT_MS = 30_000;

/**
 * Stops writes on the source's databases: new sessions start read-only (default_transaction_read_only
 * = on for the database); after the grace period the client sessions still in them are ended (the
 * run's own and the replication connections excepted), and it waits until they are gone:
 * pg_terminate_backend only sends the signal, and a session still exiting may yet commit after the
 * point the subscriptions are then asked to reach. Returns the sessions ended, and the server's time
 * when new sessions became read-only (sessions begun before can still write).
 */
export async function fence(
  source: Server,
  record: FenceRecord,
  graceSeconds: number,
  roles: string[] | undefined,
  signal?: AbortSignal,
): Promise<{ ended: number; serverAt: string }> {
  return withClient(source, source.endpoint.database, async (c) => {
    for (const d of record.databases) await c.query(`alter database ${quoteIdent(d.name)} set default_transaction_read_only = on`);
    const serverAt = (await c.query<{ t: string }>('select clock_timestamp()::text as t')).rows[0]?.t ?? '';
    // A signal in the grace period stops the cutover (the caller opens the source again).
    await sleep(graceSeconds * 1000, undefined, signal ? { signal } : undefined).catch(() => {
      throw new AbortError();
    });
    // pg_terminate_backend in the select list: it runs only for the rows the WHERE clause kept.
    const r = await c.query<{ pid: number; ended: boolean }>(
      `select pid, pg_terminate_backend(pid) as ended from pg_stat_activity
        where datname = any($1::text[]) and pid <> pg_backend_pid() and backend_type = 'client backend'
          and coalesce(application_name, '') not like 'pg-migrate/%'
          and ($2::text[] is null or usename = any($2::text[]))`,
      [record.databases.map((d) => d.name), roles ?? null],
    );
    const pids = r.rows.filter((x) => x.ended).map((x) => x.pid);
    const deadline = Date.now() + ENDED_SESSIONS_TIMEOUT_MS;
    for (;;) {
      const left = await c.query<{ pid: number }>('select pid from pg_stat_activity where pid = any($1::int[])', [pids]);
      if (left.rowCount === 0) break;
      if (Date.now() > deadline) {
        throw new MigrateError(
          `sessions ${left.rows.map((x) => String(x.pid)).join(', ')} on the source were ended but did not exit within ${String(ENDED_SESSIONS_TIMEOUT_MS / 1000)} s: look at them in pg_stat_activity, then cut over again`,
          ExitCode.failed,
        );
      }
      await sleep(20);
    }
    return { ended: pids.length, serverAt };
  });
}

/**
 * Roles whose own settings turn default_transaction_read_only off (ALTER ROLE ... SET, for every
 * database or for a fenced one): their new sessions start writable despite the fence.
 */
export async function rolesOutsideFence(source: Server, dbs: string[]): Promise<string[]> {
  const rows = await withClient(
    source,
    source.endpoint.database,
    async (c) =>
      (
        await c.query<{ role: string; config: string[] }>(
          `select r.rolname as role, s.setconfig as config
           from pg_db_role_setting s join pg_roles r on r.oid = s.setrole
           left join pg_database d on d.oid = s.setdatabase
          where s.setdatabase = 0 or d.datname = any($1::text[])`,
          [dbs],
        )
      ).rows,
  );
  const off = (entry: string): boolean => {
    const m = /^default_transaction_read_only=(.*)$/i.exec(entry);
    // A boolean setting's "false" spellings (and their unique prefixes): off, false, no, 0.
    return m !== null && /^(of|off|f|fa|fal|fals|false|n|no|0)$/i.test((m[1] ?? '').trim());
  };
  return [...new Set(rows.filter((r) => r.config.some(off)).map((r) => r.role))].sort();
}

/**
 * What can still write into the fenced databases once the subscriptions caught up, and would be lost
 * when they are dropped: a client session that holds a transaction id; one that could write (begun
 * before the fence, so not read-only by default, or of a role whose settings turn the fence off) and
 * ran something after `since` (the server's time of the catch-up point), whose write may have missed
 * the copies made after it; and prepared transactions, which can be committed later. Each named.
 */
export async function writesPastFence(
  source: Server,
  record: FenceRecord,
  fence: { serverAt: string; since: string; outsideRoles: string[] },
): Promise<string[]> {
  return withClient(source, source.endpoint.database, async (c) => {
    const dbs = record.databases.map((d) => d.name);
    const sessions = await c.query<{ pid: number; db: string; usr: string | null; app: string | null; state: string | null; xid: boolean }>(
      `select pid, datname as db, usename as usr, application_name as app, state, backend_xid is not null as xid from pg_stat_activity
        where datname = any($1::text[]) and pid <> pg_backend_pid() and backend_type <> 'autovacuum worker'
          and coalesce(application_name, '') not like 'pg-migrate/%'
          and (backend_xid is not null
               or (backend_type = 'client backend' and state_change > $3::timestamptz
                   and (backend_start < $2::timestamptz or usename = any($4::text[]))))
        order by pid`,
      [dbs, fence.serverAt, fence.since, fence.outsideRoles],
    );
    const prepared = await c.query<{ gid: string; db: string; owner: string }>(
      'select gid, database as db, owner from pg_prepared_xacts where database = any($1::text[]) order by prepared',
      [dbs],
    );
    return [
      ...sessions.rows.map(
        (s) =>
          `${s.db}: session ${String(s.pid)} of ${s.usr ?? '?'}${s.app ? ` (application ${s.app})` : ''} ${
            s.xid
              ? `has a transaction that writes (${s.state ?? 'unknown state'})`
              : 'can write (the fence left it open) and ran a statement after the catch-up'
          }`,
      ),
      ...prepared.rows.map((p) => `${p.db}: prepared transaction ${p.gid} of ${p.owner} can still be committed`),
    ];
  });
}

/** Puts back each fenced database's setting as it was. */
export async function unfence(source: Server, record: FenceRecord): Promise<void> {
  await withClient(source, source.endpoint.database, async (c) => {
    for (const d of record.databases) {
      await c.query(
        d.previous === null
          ? `alter database ${quoteIdent(d.name)} reset default_transaction_read_only`
          : `alter database ${quoteIdent(d.name)} set default_transaction_read_only = ${quoteLiteral(d.previous)}`,
      );
    }
  });
}
