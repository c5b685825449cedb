import type pg from 'pg';
import type PQueue from 'p-queue';
import { createPool, importSnapshot, qualify, withClient, type Server } from '../pg/connect.ts';
import type { TableCounts } from '../state/store.ts';
import { AbortError } from '../errors.ts';

export interface TableRef {
  schema: string;
  name: string;
  /** r: table, p: partitioned table, m: materialized view */
  kind: 'r' | 'p' | 'm';
  /** pg_class.reltuples (-1: never analyzed on PostgreSQL 14+). */
  reltuples: number;
  relpages: number;
}

/** The key of a table in a counts map: schema and name, each quoted as SQL would. */
export const tableKey = (schema: string, name: string): string => qualify(schema, name);

/** Every table, partitioned table and populated materialized view in every user schema. */
export async function listTables(client: pg.Client | pg.PoolClient): Promise<TableRef[]> {
  const r = await client.query<{ schema: string; name: string; kind: 'r' | 'p' | 'm'; reltuples: number; relpages: number }>(
    `select n.nspname as schema, c.relname as name, c.relkind::text as kind, c.reltuples::float8 as reltuples, c.relpages as relpages
       from pg_class c join pg_namespace n on n.oid = c.relnamespace
      where c.relkind in ('r', 'p', 'm')
        and (c.relkind <> 'm' or c.relispopulated)
        and n.nspname not in ('pg_catalog', 'information_schema')
        and n.nspname !~ '^pg_(toast|temp_|toast_temp_)'
      order by n.nspname, c.relname`,
  );
  return r.rows.map((row) => ({ ...row, reltuples: Number(row.reltuples), relpages: Number(row.relpages) }));
}

export interface CountRequest {
  server: Server;
  database: string;
  /** p-queue shared by the whole run: one cap on count queries over both servers. */
  verifyQueue: PQueue;
  /** Count inside this exported snapshot (the dump's), when given. */
  snapshot?: string;
  /** Tables whose counts are wanted; undefined: all of listTables. */
  tables?: TableRef[];
  /** Only the tables whose key this accepts are counted (the others are left out of the result). */
  select?: (key: string) => boolean;
  /** Use reltuples instead of count(*) for tables not in `exact` whose estimate is known. */
  fast?: { exact: Set<string> };
  signal?: AbortSignal;
}

export interface CountResult {
  counts: TableCounts;
  /** Keys of partitioned parents and materialized views (their rows are other tables' rows too). */
  aggregates: Set<string>;
  /** Keys counted from pg_class.reltuples rather than count(*). */
  estimated: string[];
}

/** An estimate is trusted only for a table that has been analyzed and looks non-empty. */
export function estimateUsable(t: TableRef): boolean {
  return t.kind !== 'p' && t.reltuples > 0;
}

export async function countTables(req: CountRequest): Promise<CountResult> {
  const pool = createPool(req.server, req.database, Math.max(1, req.verifyQueue.concurrency));
  try {
    let tables = req.tables;
    if (tables === undefined) {
      const c = await pool.connect();
      try {
        if (req.snapshot) await importSnapshot(c, req.snapshot);
        tables = await listTables(c);
        if (req.snapshot) await c.query('commit');
      } finally {
        c.release();
      }
    }
    const counts: TableCounts = {};
    const estimated: string[] = [];
    const exactTables: TableRef[] = [];
    if (req.select) tables = tables.filter((t) => req.select!(tableKey(t.schema, t.name)));
    for (const t of tables) {
      const key = tableKey(t.schema, t.name);
      if (req.fast && !req.fast.exact.has(key) && estimateUsable(t)) {
        counts[key] = Math.round(t.reltuples);
        estimated.push(key);
      } else exactTables.push(t);
    }
    await Promise.all(
      exactTables.map((t) =>
        req.verifyQueue.add(
          async () => {
            if (req.signal?.aborted) throw new AbortError();
            const c = await pool.connect();
            try {
              const only = t.kind === 'p' ? '' : 'only ';
              const sql = `select count(*)::text as n from ${only}${qualify(t.schema, t.name)}`;
              let n: string;
              if (req.snapshot) {
                try {
                  await importSnapshot(c, req.snapshot);
                  n = (await c.query<{ n: string }>(sql)).rows[0]!.n;
                } finally {
                  await c.query('rollback').catch(() => undefined);
                }
              } else n = (await c.query<{ n: string }>(sql)).rows[0]!.n;
              counts[tableKey(t.schema, t.name)] = Number(n);
            } finally {
              c.release();
            }
          },
          { signal: req.signal },
        ),
      ),
    );
    const aggregates = new Set(tables.filter((t) => t.kind !== 'r').map((t) => tableKey(t.schema, t.name)));
    return { counts: sortKeys(counts), estimated, aggregates };
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
export function compareCounts(src: TableCounts, dst: TableCounts, estimated: Set<string> = new Set(), notRows: Set<string> = new Set()): Comparison {
  const errors: string[] = [];
  const warnings: string[] = [];
  let rows = 0;
  for (const [key, n] of Object.entries(src)) {
    if (!notRows.has(key)) rows += n;
    const m = dst[key];
    if (m === undefined) errors.push(`table ${key} is missing on the target (${n} rows on the source)`);
    else if (m !== n) {
      const text = `table ${key}: ${n} rows on the source, ${m} on the target`;
      if (estimated.has(key)) warnings.push(`${text} (estimates from pg_class.reltuples, not checked exactly)`);
      else errors.push(text);
    }
  }
  for (const key of Object.keys(dst)) if (!(key in src)) warnings.push(`table ${key} exists only on the target`);
  return { ok: errors.length === 0, errors, warnings, rows };
}
