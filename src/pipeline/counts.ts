import type PQueue from 'p-queue';
import type pg from 'pg';
import { createPool, withClient, type Server } from '../pg/connect.ts';
import { listTables, type TableRef } from '../pg/catalog.ts';
import { inSnapshot } from '../pg/snapshot.ts';
import { qualify, tableKey } from '../pg/sql.ts';
import type { TableCounts } from '../state/store.ts';
import { AbortError } from '../errors.ts';
import { addChecksums, checksumRanges, formatChecksum, relationPages, runChecksum, type Checksum, type ChecksumOptions } from './checksum.ts';

export interface CountRequest {
  server: Server;
  database: string;
  /** p-queue shared by the whole run: one cap on count queries over both servers. */
  verifyQueue: PQueue;
  /** Count inside this exported snapshot (the dump's), when given. */
  snapshot?: string;
  /** Only the tables whose key this accepts are counted (the others are left out of the result). */
  select?: (key: string) => boolean;
  /** Use reltuples instead of count(*) for tables not in `exact` whose estimate is known. */
  fast?: { exact: Set<string> };
  /**
   * Hash the content of every ordinary table (partitions included) too. Partitioned tables are counted
   * (their rows are their partitions'), and so are materialized views: the target refreshes them from
   * its own data, so a source's stale one would differ in content where pg_dump copied it right.
   */
  checksum?: ChecksumOptions;
  signal?: AbortSignal;
}

export interface CountResult {
  counts: TableCounts;
  /** Keys of partitioned parents and materialized views (their rows are other tables' rows too). */
  aggregates: Set<string>;
  /** Keys counted from pg_class.reltuples rather than count(*). */
  estimated: string[];
  /** With `checksum`: each hashed table's checksum (see checksum.ts), keyed as the counts. */
  checksums: Record<string, string>;
}

/** An estimate is trusted only for a table that has been analyzed and looks non-empty. */
export function estimateUsable(t: TableRef): boolean {
  return t.kind !== 'p' && t.reltuples > 0;
}

/** Counts the tables of a database, `verifyQueue.concurrency` at a time at most. */
export async function countTables(req: CountRequest): Promise<CountResult> {
  const pool = createPool(req.server, req.database, Math.max(1, req.verifyQueue.concurrency));
  try {
    const first = await pool.connect();
    let tables: TableRef[];
    let layout: { major: number; pages: Map<string, number>; blockSize: number } | undefined;
    try {
      tables = await inSnapshot(first, req.snapshot, () => listTables(first));
      if (req.select) tables = tables.filter((t) => req.select?.(tableKey(t.schema, t.name)));
      if (req.checksum) {
        const major = Math.floor(Number((await first.query<{ v: string }>("select current_setting('server_version_num') as v")).rows[0]?.v) / 10000);
        const hashed = tables.filter((t) => t.kind === 'r').map((t) => tableKey(t.schema, t.name));
        layout = { major, ...(await relationPages(first, hashed)) };
      }
    } finally {
      first.release();
    }
    const counts: TableCounts = {};
    const checksums: Record<string, string> = {};
    const estimated: string[] = [];
    const exactTables: TableRef[] = [];
    for (const t of tables) {
      const key = tableKey(t.schema, t.name);
      if (req.fast && !req.fast.exact.has(key) && estimateUsable(t)) {
        counts[key] = Math.round(t.reltuples);
        estimated.push(key);
      } else exactTables.push(t);
    }
    /** Runs one query of the count on a session of the pool, in the snapshot when given, under the shared cap. */
    const onQueue = <T>(fn: (c: pg.PoolClient) => Promise<T>): Promise<T> =>
      req.verifyQueue.add(
        async () => {
          if (req.signal?.aborted) throw new AbortError();
          const c = await pool.connect();
          try {
            return await inSnapshot(c, req.snapshot, () => fn(c));
          } finally {
            c.release();
          }
        },
        { signal: req.signal },
      );
    await Promise.all(
      exactTables.map(async (t) => {
        const key = tableKey(t.schema, t.name);
        const rel = qualify(t.schema, t.name);
        const checksum = req.checksum;
        if (layout && checksum && t.kind === 'r') {
          const ranges = checksumRanges(layout.pages.get(key) ?? 0, layout.blockSize, layout.major, req.verifyQueue.concurrency);
          const parts: Checksum[] = await Promise.all(ranges.map((range) => onQueue((c) => runChecksum(c, rel, true, range, checksum))));
          const sum = addChecksums(parts);
          counts[key] = sum.rows;
          checksums[key] = formatChecksum(sum);
          return;
        }
        const only = t.kind === 'p' ? '' : 'only ';
        const n = await onQueue(async (c) => (await c.query<{ n: string }>(`select count(*)::text as n from ${only}${rel}`)).rows[0]?.n);
        counts[key] = Number(n);
      }),
    );
    const aggregates = new Set(tables.filter((t) => t.kind !== 'r').map((t) => tableKey(t.schema, t.name)));
    return { counts: sortKeys(counts), estimated, aggregates, checksums };
  } finally {
    await pool.end().catch(() => undefined);
  }
}

export function sortKeys(c: TableCounts): TableCounts {
  return Object.fromEntries(Object.entries(c).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
}

export interface Comparison {
  ok: boolean;
  /** Problems that fail the database. */
  errors: string[];
  /** Differences tolerated (estimates under --fast-verify). */
  warnings: string[];
  /** Rows of the source, each counted once (see aggregateKeys). */
  rows: number;
}

/** Keys whose rows are other tables' rows too (partitioned parents, materialized views): left out of row totals. */
export async function aggregateKeys(server: Server, database: string): Promise<Set<string>> {
  return withClient(server, database, async (c) => new Set((await listTables(c)).filter((t) => t.kind !== 'r').map((t) => tableKey(t.schema, t.name))));
}

/**
 * Compares source and target counts. A table missing on the target or a count that differs is an
 * error, unless both sides were estimates (fast verify), where a difference is a warning.
 */
export function compareCounts(src: TableCounts, dst: TableCounts, estimated = new Set<string>(), notRows = new Set<string>()): Comparison {
  const errors: string[] = [];
  const warnings: string[] = [];
  let rows = 0;
  for (const [key, n] of Object.entries(src)) {
    if (!notRows.has(key)) rows += n;
    const m = dst[key];
    if (m === undefined) errors.push(`table ${key} is missing on the target (${String(n)} rows on the source)`);
    else if (m !== n) {
      const text = `table ${key}: ${String(n)} rows on the source, ${String(m)} on the target`;
      if (estimated.has(key)) warnings.push(`${text} (estimates from pg_class.reltuples, not checked exactly)`);
      else errors.push(text);
    }
  }
  for (const key of Object.keys(dst)) if (!(key in src)) warnings.push(`table ${key} exists only on the target`);
  return { ok: errors.length === 0, errors, warnings, rows };
}
