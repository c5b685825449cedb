/**
 * The progress sampler: every few seconds, one small query on the run's own control connection to the
 * target (database sizes, the run's COPYs and index builds in flight) and the size of the dumps being
 * written, emitted as a `progress` event. It never blocks the run and never fails it: a sample still
 * running skips the next tick, and any error only skips that sample.
 */
import { readdir, stat } from 'node:fs/promises';
import path from 'node:path';
import type { DbProgress } from '../events.ts';
import { dumpLocation } from '../transfer/data-path.ts';
import type { Context } from './context.ts';

/** How often the servers are asked (ms). */
export const SAMPLE_EVERY_MS = 3000;

/** Phases in which a database is on the target (its size there means something). */
const ON_TARGET = new Set([
  'streaming',
  'restoring',
  'counting target',
  'verifying',
  'deferred dumping',
  'dropping indexes',
  'deferred loading',
  'rebuilding indexes',
  'deferred verifying',
  'subscribing',
]);
const DUMPING: Record<string, 'regular' | 'deferred'> = { dumping: 'regular', 'deferred dumping': 'deferred' };

/** One query: per database its size, an empty database's size, and the run's COPYs (14+) and index builds (12+). */
export function sampleSql(targetMajor: number): string {
  const parts = [
    "select 'size' as kind, datname::text as db, pg_database_size(oid)::float8 as a, 0::float8 as b from pg_database where datname = any($1::text[])",
    "select 'empty', null, pg_database_size('template0')::float8, 0",
  ];
  if (targetMajor >= 14) {
    parts.push(
      "select 'copy', p.datname::text, p.tuples_processed::float8, 0 from pg_stat_progress_copy p join pg_stat_activity s using (pid) where s.application_name = $2 and p.datname = any($1::text[])",
    );
  }
  if (targetMajor >= 12) {
    parts.push(
      "select 'index', p.datname::text, p.blocks_done::float8, p.blocks_total::float8 from pg_stat_progress_create_index p join pg_stat_activity s using (pid) where s.application_name = $2 and p.datname = any($1::text[])",
    );
  }
  return parts.join('\nunion all ');
}

interface SampleRow {
  kind: 'size' | 'empty' | 'copy' | 'index';
  db: string | null;
  a: number;
  b: number;
}

/** Turns the rows of one sample into per-database progress (sizes minus an empty database's). */
export function progressFromRows(rows: SampleRow[], sizes: ReadonlyMap<string, number | null>): Map<string, DbProgress> {
  const out = new Map<string, DbProgress>();
  const of = (db: string): DbProgress => {
    let p = out.get(db);
    if (!p) out.set(db, (p = { db }));
    return p;
  };
  const empty = rows.find((r) => r.kind === 'empty')?.a ?? 0;
  for (const r of rows) {
    if (r.db === null) continue;
    const p = of(r.db);
    if (r.kind === 'size') {
      const cap = sizes.get(r.db);
      const bytes = Math.max(0, r.a - empty);
      p.targetBytes = cap === null || cap === undefined ? bytes : Math.min(bytes, cap);
    } else if (r.kind === 'copy') {
      p.copies = (p.copies ?? 0) + 1;
      p.copyRows = (p.copyRows ?? 0) + r.a;
    } else if (r.kind === 'index') {
      p.indexes = (p.indexes ?? 0) + 1;
      if (r.b > 0) p.indexDone = Math.max(p.indexDone ?? 0, Math.min(1, r.a / r.b));
    }
  }
  return out;
}

/** Bytes of the files in a directory (a pg_dump -Fd directory is flat); 0 when it is not there. */
async function dirBytes(dir: string): Promise<number> {
  const names = await readdir(dir).catch(() => [] as string[]);
  const sizes = await Promise.all(
    names.map((n) =>
      stat(path.join(dir, n)).then(
        (s) => (s.isFile() ? s.size : 0),
        () => 0,
      ),
    ),
  );
  return sizes.reduce((a, b) => a + b, 0);
}

export interface Sampler {
  /** Stops sampling and waits for a sample in flight (before the control connections close). */
  stop(): Promise<void>;
}

/** Starts sampling the databases whose phase (`phases`, kept by the run) says they are in flight. */
export function startSampler(ctx: Context, phases: ReadonlyMap<string, string>, everyMs = SAMPLE_EVERY_MS): Sampler {
  const sizes = new Map(ctx.plan.databases.map((d) => [d.name, d.sizeBytes]));
  const sql = sampleSql(ctx.targetMajor);
  let running: Promise<void> | undefined;
  const sample = async (): Promise<void> => {
    const inFlight = [...phases].filter(([, p]) => p !== 'queued' && p !== 'verified' && p !== 'failed');
    if (inFlight.length === 0 || ctx.signal.aborted) return;
    const onTarget = inFlight.filter(([, p]) => ON_TARGET.has(p)).map(([db]) => db);
    const rows = onTarget.length === 0 ? [] : (await ctx.control.query<SampleRow>(ctx.target, sql, [onTarget, ctx.target.appName])).rows;
    const progress = progressFromRows(rows, sizes);
    for (const [db, p] of inFlight) {
      const part = DUMPING[p];
      if (part === undefined || ctx.options.dataPath === 'stream') continue;
      const bytes = await dirBytes(dumpLocation(ctx.options.dumpRoot, db, part));
      const entry = progress.get(db) ?? { db };
      entry.dumpBytes = bytes;
      progress.set(db, entry);
    }
    ctx.emit({ type: 'progress', at: performance.now(), databases: [...progress.values()] });
  };
  const timer = setInterval(() => {
    if (running) return;
    running = sample()
      .catch(() => undefined)
      .finally(() => (running = undefined));
  }, everyMs);
  timer.unref();
  return {
    async stop() {
      clearInterval(timer);
      await running;
    },
  };
}
