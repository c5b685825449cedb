/**
 * The steps of a cutover that touch the servers besides the fence (cutover-fence.ts): waiting until
 * every subscription applied the source's WAL up to a point, copying what logical replication does not
 * carry (sequences, large objects), and the roles the target lacks.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type pg from 'pg';
import { oneRow, withClient, type Server } from '../pg/connect.ts';
import { sequences } from '../pg/catalog.ts';
import { qualify, quoteIdent } from '../pg/sql.ts';
import { AbortError, ExitCode, MigrateError } from '../errors.ts';

/** A point in the source's WAL, with the transactions (txid_current_snapshot) running or assigned by then. */
export interface WalPoint {
  lsn: string;
  snapshot: string;
  /** The server's clock then. */
  time: string;
}

/**
 * The source's WAL end now (the write position, which the subscriptions can reach: the insert position
 * may hold records nobody flushes), and its snapshot. With `flush`, one empty transaction that takes
 * an id commits first (synchronous_commit = local: no wait for a synchronous standby); its commit
 * flushes the WAL before it, so commits acknowledged before their WAL was written
 * (synchronous_commit = off) are inside the point too.
 */
export async function walPoint(source: Server, flush: boolean): Promise<WalPoint> {
  return withClient(source, source.endpoint.database, async (c) => {
    if (flush) {
      await c.query('begin; set local synchronous_commit = local; select txid_current()');
      await c.query('commit');
    }
    return oneRow(
      await c.query<WalPoint>('select pg_current_wal_lsn()::text as lsn, txid_current_snapshot()::text as snapshot, clock_timestamp()::text as time'),
    );
  });
}

/**
 * Whether nothing can have committed on the source between two points: no transaction was running at
 * the first (xmin = xmax, no xip) and no transaction id was handed out since (the same snapshot). Every
 * transaction that writes (a sequence's nextval too) takes an id; one that does not changes nothing.
 */
export function nothingCommittedBetween(a: WalPoint, b: WalPoint): boolean {
  const [xmin, xmax, xip] = a.snapshot.split(':');
  return a.snapshot === b.snapshot && xmin === xmax && (xip ?? '') === '';
}

/**
 * Waits until every slot confirmed the source's WAL up to `point` (the subscriptions applied everything
 * committed before it); fails when an apply worker is not running or after the timeout.
 */
export async function waitForCatchUp(
  source: Server,
  target: Server,
  subs: { db: string; slot: string; subscription: string }[],
  timeoutSeconds: number,
  point: WalPoint,
  signal?: AbortSignal,
): Promise<void> {
  const lsn = point.lsn;
  const deadline = Date.now() + timeoutSeconds * 1000;
  await withClient(source, source.endpoint.database, (src) =>
    withClient(target, target.endpoint.database, async (dst) => {
      for (;;) {
        if (signal?.aborted === true) throw new AbortError();
        // A slot gone from the source carries nothing more: "caught up" would be a lie, and the writes
        // since it went are not on the target.
        const slots = await src.query<{ slot: string; behind: boolean }>(
          'select slot_name as slot, (confirmed_flush_lsn is null or confirmed_flush_lsn < $2::pg_lsn) as behind from pg_replication_slots where slot_name = any($1::text[])',
          [subs.map((s) => s.slot), lsn],
        );
        const gone = subs.filter((s) => !slots.rows.some((p) => p.slot === s.slot));
        if (gone.length > 0) {
          throw new MigrateError(
            `the replication slots of ${gone.map((g) => `${g.db} (${g.slot})`).join(', ')} are gone from the source, so the changes committed since cannot reach the target: migrate ${gone.length === 1 ? 'that database' : 'those databases'} afresh with pg-migrate migrate --online --redo-db, then cut over`,
            ExitCode.failed,
          );
        }
        const behind = slots.rows.filter((r) => r.behind);
        if (behind.length === 0) return;
        const workers = await dst.query<{ name: string }>(
          'select subname as name from pg_stat_subscription where pid is not null and subname = any($1::text[])',
          [subs.map((s) => s.subscription)],
        );
        const running = new Set(workers.rows.map((r) => r.name));
        const dead = subs.filter((s) => behind.some((b) => b.slot === s.slot) && !running.has(s.subscription));
        if (dead.length > 0 && Date.now() > deadline - timeoutSeconds * 500) {
          throw new MigrateError(
            `the subscriptions of ${dead.map((d) => d.db).join(', ')} are not applying changes (no apply worker on the target): look for errors in the target's server log`,
            ExitCode.failed,
          );
        }
        if (Date.now() > deadline) {
          throw new MigrateError(
            `the subscriptions of ${behind.map((b) => subs.find((s) => s.slot === b.slot)?.db ?? b.slot).join(', ')} did not catch up with the source within ${String(timeoutSeconds)} s; raise --catchup-timeout or look at the target's server log`,
            ExitCode.failed,
          );
        }
        await sleep(50);
      }
    }),
  );
}

/** Sets every sequence of the target database to the source's value (last_value and is_called, read from each sequence itself). */
export async function copySequences(source: Server, target: Server, db: string): Promise<number> {
  const values = await withClient(source, db, async (c) => {
    const out: { name: string; last: string; called: boolean }[] = [];
    for (const s of await sequences(c)) {
      const name = qualify(s.schema, s.name);
      const r = oneRow(await c.query<{ last: string; called: boolean }>(`select last_value::text as last, is_called as called from ${name}`));
      out.push({ name, ...r });
    }
    return out;
  });
  await withClient(target, db, async (c) => {
    for (const v of values) await c.query('select setval($1::regclass, $2::bigint, $3::boolean)', [v.name, v.last, v.called]);
  });
  return values.length;
}

/**
 * Makes the target's large objects those of the source: any that differ (content or owner) or are
 * missing are written again, and any the source no longer has are removed. Returns how many changed.
 */
export async function copyLargeObjects(source: Server, target: Server, db: string): Promise<number> {
  const list = async (c: pg.Client): Promise<Map<string, string>> => {
    const r = await c.query<{ oid: string; h: string }>(
      "select m.oid::text as oid, md5(lo_get(m.oid)) || ':' || pg_get_userbyid(m.lomowner) as h from pg_largeobject_metadata m",
    );
    return new Map(r.rows.map((row) => [row.oid, row.h]));
  };
  return withClient(source, db, (src) =>
    withClient(target, db, async (dst) => {
      const [a, b] = await Promise.all([list(src), list(dst)]);
      let changed = 0;
      for (const [oid, h] of a) {
        if (b.get(oid) === h) continue;
        const data = oneRow(
          await src.query<{ d: Buffer; owner: string }>(
            'select lo_get($1::oid) as d, pg_get_userbyid(lomowner) as owner from pg_largeobject_metadata where oid = $1::oid',
            [oid],
          ),
        );
        await dst.query('begin');
        if (b.has(oid)) await dst.query('select lo_unlink($1::oid)', [oid]);
        await dst.query('select lo_from_bytea($1::oid, $2::bytea)', [oid, data.d]);
        await dst.query(`alter large object ${oid} owner to ${quoteIdent(data.owner)}`);
        await dst.query('commit');
        changed++;
      }
      for (const oid of b.keys()) {
        if (a.has(oid)) continue;
        await dst.query('select lo_unlink($1::oid)', [oid]);
        changed++;
      }
      return changed;
    }),
  );
}

/**
 * Roles are not replicated: the source's roles the target lacks (created since the copy, or left out
 * with the globals), and, of them, those that own a large object of a migrated database (the cutover
 * could not give it its owner), each as "db: large object N of role R".
 */
export async function rolesMissingOnTarget(source: Server, target: Server, dbs: string[]): Promise<{ missing: string[]; largeObjects: string[] }> {
  const names = async (s: Server): Promise<Set<string>> =>
    withClient(
      s,
      s.endpoint.database,
      async (c) => new Set((await c.query<{ r: string }>("select rolname as r from pg_roles where rolname !~ '^pg_'")).rows.map((x) => x.r)),
    );
  const [have, there] = await Promise.all([names(source), names(target)]);
  const missing = [...have].filter((r) => !there.has(r)).sort();
  const largeObjects: string[] = [];
  if (missing.length > 0) {
    for (const db of dbs) {
      const rows = await withClient(
        source,
        db,
        async (c) =>
          (
            await c.query<{ oid: string; owner: string }>(
              'select oid::text as oid, pg_get_userbyid(lomowner) as owner from pg_largeobject_metadata where pg_get_userbyid(lomowner) = any($1::text[]) order by oid',
              [missing],
            )
          ).rows,
      );
      for (const r of rows) largeObjects.push(`${db}: large object ${r.oid} of role ${r.owner}`);
    }
  }
  return { missing, largeObjects };
}
