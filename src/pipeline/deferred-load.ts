/**
 * The deferred tables' data, copied straight from the source to the target in load units (a table,
 * or a page range of a big one), each one transaction on the target whose transaction id that very
 * transaction writes to the state directory before it copies a row. A rerun after an interruption
 * asks the target which of them committed and removes exactly their rows (xmin = that id) before the
 * load is done again: rows that applications wrote into the tables meanwhile are never touched. The
 * deferred verify counts (and with --verify checksum hashes) the rows the load committed the same way.
 */
import { readFile, rm } from 'node:fs/promises';
import path from 'node:path';
import type pg from 'pg';
import { withClient } from '../pg/connect.ts';
import { databaseEncoding, tablesToCopy } from '../pg/catalog.ts';
import { inSnapshot } from '../pg/snapshot.ts';
import { qualify, tableKey, type RelationName } from '../pg/sql.ts';
import { MigrateError } from '../errors.ts';
import type { SplitCopyResult } from '../events.ts';
import type { TableCounts } from '../state/store.ts';
import { copyUnits, pageRanges, rangeCount, SPLIT_MIN_SOURCE_MAJOR, toSplitTable, type CopyUnit, type PageRange } from '../transfer/ranges.ts';
import type { DeferredPlan } from './deferred-plan.ts';
import { BOOKKEEPING_SESSION } from './deferred-indexes.ts';
import { dbName, type Context, type DatabaseJob } from './context.ts';
import { checksumOptions, formatChecksum, runChecksum } from './checksum.ts';

/** One load unit as the state records it. */
interface LoadUnit extends RelationName {
  range: PageRange | null;
  /** The target transaction that copied it (the low 32 bits are its rows' xmin), once known. */
  xid?: string;
  rows?: number;
}

interface LoadRecord {
  startedAt: string;
  units: LoadUnit[];
  /** Set when the state was converted from the first layout in the middle of a deferred load, which recorded nothing of what it committed. */
  legacy?: boolean;
}

/** Which load: the deferred tables' (after the regular phase) or, online, the unreplicated tables' at cutover. */
export interface LoadSpec {
  /** The state document listing its units. */
  doc: 'delayed_loads.json' | 'cutover_loads.json';
  /** The database state's directory for the units' transaction ids. */
  dir: string;
  /** The tables, as the source's catalog knows them (ordinary tables are loaded; partitioned ones have no rows). */
  tables: { oid: string; schema: string; name: string; kind: 'r' | 'p' }[];
}

/** The deferred tables' load. */
export const deferredLoad = (plan: DeferredPlan): LoadSpec => ({ doc: 'delayed_loads.json', dir: 'loads', tables: plan.tables });
const xidFileName = (i: number): string => `${String(i)}.xid`;
/** A 64-bit transaction id (txid_current) as the xid its rows carry in xmin. */
const asXmin = (xid: string): string => (BigInt(xid) & 0xffffffffn).toString();

/** The transaction ids the units' sessions wrote, where they got that far. */
async function readXids(dir: string, units: LoadUnit[]): Promise<(string | undefined)[]> {
  return Promise.all(
    units.map(async (u, i) => {
      if (u.xid !== undefined) return u.xid;
      const text = await readFile(path.join(dir, xidFileName(i)), 'utf8').catch(() => '');
      return /^\d+$/.test(text.trim()) ? text.trim() : undefined;
    }),
  );
}

/**
 * Undoes what an interrupted load committed: for every unit whose transaction committed, its rows
 * (and only those: xmin = that transaction) are deleted, no user trigger firing. A load recorded by no
 * state (an earlier pg-migrate's) is refused when the tables hold rows, since they cannot be told
 * apart from the applications'.
 */
export async function undoInterruptedLoad(ctx: Context, job: DatabaseJob, load: LoadSpec): Promise<void> {
  const db = dbName(job);
  const record = await job.state.doc<LoadRecord>(load.doc);
  await withClient(ctx.target, db, async (c) => {
    await c.query(BOOKKEEPING_SESSION);
    if (record === undefined) return; // no load was started
    if (record.legacy === true) {
      for (const t of load.tables.filter((t) => t.kind === 'r')) {
        const r = await c.query(`select 1 from only ${qualify(t.schema, t.name)} limit 1`);
        if ((r.rowCount ?? 0) > 0) {
          throw new MigrateError(
            `${db}: the deferred table ${qualify(t.schema, t.name)} holds rows, but no record says which of them an earlier load committed (it ran under an earlier pg-migrate, or its state was removed); they cannot be told apart from rows applications wrote, so nothing is deleted. Empty the deferred tables yourself if they hold nothing you need, or migrate ${db} afresh with --redo-db ${JSON.stringify(db)}`,
          );
        }
      }
      return;
    }
    const dir = await job.state.workDir(load.dir);
    const xids = await readXids(dir, record.units);
    let removed = 0;
    for (const [i, unit] of record.units.entries()) {
      const xid = xids[i];
      if (xid === undefined) continue;
      const status = (await c.query<{ s: string | null }>('select txid_status($1::bigint) as s', [xid])).rows[0]?.s ?? null;
      if (status === 'in progress') {
        throw new MigrateError(
          `${db}: the load of ${qualify(unit.schema, unit.name)} by an earlier run (transaction ${xid}) is still running on the target; stop it (pg_terminate_backend) and run again`,
        );
      }
      if (status === null) {
        throw new MigrateError(
          `${db}: the target no longer knows whether the earlier load of ${qualify(unit.schema, unit.name)} (transaction ${xid}) committed; migrate ${db} afresh with --redo-db ${JSON.stringify(db)}`,
        );
      }
      if (status !== 'committed') continue;
      const r = await c.query(`delete from only ${qualify(unit.schema, unit.name)} where xmin = $1::xid`, [asXmin(xid)]);
      removed += r.rowCount ?? 0;
    }
    if (removed > 0)
      ctx.emit({
        type: 'info',
        message: `${db}: removed the ${String(removed)} rows an interrupted load of the deferred tables had committed (rows written by applications were left as they are)`,
      });
  });
  await job.state.removeDoc(load.doc);
  await rm(await job.state.workDir(load.dir), { recursive: true, force: true });
}

/**
 * Loads the deferred tables in the snapshot (the one their source counts read), `jobs` units at a
 * time; big tables in page ranges (source 14 or newer). The units are recorded before any starts.
 */
export async function loadUnits(ctx: Context, job: DatabaseJob, load: LoadSpec, snapshot: string | undefined, fifoDir: string): Promise<SplitCopyResult[]> {
  const db = dbName(job);
  const jobs = Math.max(1, Math.min(ctx.plan.parallelism.dumpJobs, ctx.plan.parallelism.restoreJobs));
  const oids = load.tables.filter((t) => t.kind === 'r').map((t) => t.oid);
  const { rows, encoding } = await withClient(ctx.source, db, (c) =>
    inSnapshot(c, snapshot, async () => ({ rows: await tablesToCopy(c, ctx.sourceMajor, oids), encoding: await databaseEncoding(c) })),
  );
  const splitBytes = ctx.options.splitTableBytes;
  const canSplit = snapshot !== undefined && splitBytes !== null && ctx.sourceMajor >= SPLIT_MIN_SOURCE_MAJOR && jobs > 1;
  const units: LoadUnit[] = [];
  const copies: CopyUnit[] = [];
  const dir = await job.state.workDir(load.dir);
  for (const row of rows) {
    const table = toSplitTable(ctx, row);
    const ranges: (PageRange | null)[] = canSplit && row.bytes >= splitBytes ? pageRanges(row.pages, rangeCount(row.bytes, jobs)) : [null];
    for (const range of ranges) {
      copies.push({ table, range, xidFile: path.join(dir, xidFileName(units.length)) });
      units.push({ schema: row.schema, name: row.name, range });
    }
  }
  const split = rows.filter((r) => canSplit && r.bytes >= splitBytes);
  if (split.length > 0)
    ctx.emit({ type: 'phase', db, phase: 'deferred loading', detail: split.map((t) => `${qualify(t.schema, t.name)} in ranges`).join(', ') });
  await job.state.setDoc(load.doc, { startedAt: new Date().toISOString(), units } satisfies LoadRecord);
  const results = await copyUnits(ctx, db, snapshot, copies, jobs, { encoding, dir: fifoDir });
  const xids = await readXids(dir, units);
  const done = units.map((u, i) => ({ ...u, xid: xids[i] }));
  if (done.some((u) => u.xid === undefined)) throw new MigrateError(`${db}: a load unit left no transaction id in ${dir}`);
  await job.state.setDoc(load.doc, { startedAt: new Date().toISOString(), units: done } satisfies LoadRecord);
  return results.filter((r) => r.ranges > 1);
}

/**
 * The target's side of the deferred verify: each deferred table's rows that the load committed (the
 * applications' rows beside them are reported, not compared); a partitioned table as the sum of its
 * leaves (deferred leaves by what the load committed, the others by what the regular phase verified);
 * the materialized views refreshed after the load as they are.
 */
export async function loadedCounts(
  ctx: Context,
  job: DatabaseJob,
  plan: DeferredPlan,
): Promise<{ counts: TableCounts; estimated: string[]; aggregates: Set<string>; checksums: Record<string, string> }> {
  const db = dbName(job);
  const record = await job.state.doc<LoadRecord>('delayed_loads.json');
  if (record === undefined)
    throw new MigrateError(
      `${db}: the record of the deferred load is missing from ${job.state.dir}; migrate ${db} afresh with --redo-db ${JSON.stringify(db)}`,
    );
  const xmins = new Map<string, string[]>();
  for (const u of record.units) {
    const key = tableKey(u.schema, u.name);
    xmins.set(key, [...(xmins.get(key) ?? []), ...(u.xid === undefined ? [] : [asXmin(u.xid)])]);
  }
  const regular = (await job.state.counts('dst', ctx.options.fastVerify ? 'fast' : '')) ?? {};
  const counts: TableCounts = {};
  const checksums: Record<string, string> = {};
  let applicationRows = 0;
  await withClient(ctx.target, db, async (c: pg.Client) => {
    for (const t of plan.tables.filter((t) => t.kind === 'r')) {
      const key = tableKey(t.schema, t.name);
      const r = await c.query<{ loaded: string; total: string }>(
        `select count(*) filter (where xmin = any($1::xid[]))::text as loaded, count(*)::text as total from only ${qualify(t.schema, t.name)}`,
        [xmins.get(key) ?? []],
      );
      const row = r.rows[0];
      counts[key] = Number(row?.loaded ?? 0);
      applicationRows += Number(row?.total ?? 0) - counts[key];
      if (ctx.options.verify === 'checksum') {
        // The rows hashed are the rows counted (a difference of content is then never hidden by one of count).
        const where = { where: 'xmin = any($1::xid[])', params: [xmins.get(key) ?? []] };
        const sum = await runChecksum(c, qualify(t.schema, t.name), true, null, checksumOptions(ctx.sourceMajor, ctx.targetMajor), where);
        if (sum.rows !== counts[key]) throw new MigrateError(`${db}: ${key} changed while it was verified; run again`);
        checksums[key] = formatChecksum(sum);
      }
    }
    for (const mv of plan.dependentMatviews) {
      counts[tableKey(mv.schema, mv.name)] = Number(
        (await c.query<{ n: string }>(`select count(*)::text as n from ${qualify(mv.schema, mv.name)}`)).rows[0]?.n ?? 0,
      );
    }
  });
  const estimated: string[] = [];
  const parents = [...plan.tables.filter((t) => t.kind === 'p').map((t) => tableKey(t.schema, t.name)), ...plan.ancestorKeys];
  for (const parent of parents) {
    const leaves = plan.leaves.get(parent) ?? [];
    let sum = 0;
    for (const leaf of leaves) {
      const n = plan.keys.has(leaf) ? counts[leaf] : regular[leaf];
      if (n === undefined)
        throw new MigrateError(
          `${db}: no verified count of the partition ${leaf} of ${parent} from the regular phase; migrate ${db} afresh with --redo-db ${JSON.stringify(db)}`,
        );
      sum += n;
    }
    counts[parent] = sum;
    // Under --fast-verify the regular phase may have kept estimates of the other partitions.
    if (ctx.options.fastVerify && leaves.some((l) => !plan.keys.has(l))) estimated.push(parent);
  }
  if (applicationRows > 0) {
    ctx.emit({
      type: 'info',
      message: `${db}: the deferred tables also hold ${String(applicationRows)} rows written by applications since the regular phase; they are left out of the comparison`,
    });
  }
  return { counts, estimated, aggregates: new Set([...parents, ...plan.matviewKeys]), checksums };
}
