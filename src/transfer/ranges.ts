import { rm } from 'node:fs/promises';
import path from 'node:path';
import PQueue from 'p-queue';
import type { Context } from '../pipeline/context.ts';
import type { SplitCopyResult } from '../events.ts';
import { MigrateError } from '../errors.ts';
import { withClient, type Server } from '../pg/connect.ts';
import { splitCandidateTables } from '../pg/catalog.ts';
import { connArgs, dbnameConninfo } from '../pg/passfile.ts';
import { inSnapshot, snapshotImportStatements } from '../pg/snapshot.ts';
import { qualify, quoteIdent } from '../pg/sql.ts';
import { runPiped, type PipeSide } from '../proc/run.ts';

/**
 * The second data path of the design: a big table's rows copied straight from the source to the
 * target (`COPY (SELECT … WHERE ctid range) TO STDOUT` → `COPY … FROM STDIN`) in page ranges that run in
 * parallel, every range read under the snapshot the rest of the database's dump uses. pg_dump copies
 * a table as one stream whatever its size; this lets one big table use more than one core.
 */

/** TID range scans (`WHERE ctid >= … AND ctid < …` reading only those pages) exist from PostgreSQL 14. */
export const SPLIT_MIN_SOURCE_MAJOR = 14;
/** A range is at most this big, so that a huge table is copied in many pieces (never fewer than the jobs). */
export const RANGE_BYTES = 1024 ** 3;

export interface SplitTable {
  schema: string;
  name: string;
  bytes: number;
  /** Heap pages when the snapshot was taken (the last range is open-ended, so growth cannot lose rows). */
  pages: number;
  /** Columns as COPY lists them: not dropped, not generated. */
  columns: string[];
  /** Copied in COPY's binary format (see binaryCopy); text otherwise. */
  binary: boolean;
}

/**
 * Binary COPY skips printing and parsing every value (about a quarter less CPU on both servers for a
 * table of bigints, timestamps and jsonb). It is used when every column has a built-in type (oid below
 * 16384: no domains, enums, composites or extension types, whose binary form may differ between
 * versions) with binary send and receive functions, and the target is not older than the source.
 * PostgreSQL's own logical replication copies tables in binary across versions under the same terms.
 */
export function binaryCopy(sourceMajor: number, targetMajor: number, allTypesBuiltInWithBinaryIo: boolean): boolean {
  return allTypesBuiltInWithBinaryIo && targetMajor >= sourceMajor;
}

export interface PageRange {
  from: number;
  /** Exclusive; null for the last range (no upper bound). */
  to: number | null;
}

/**
 * Splits `pages` heap pages into `parts` contiguous ranges of nearly equal size. The last range has no
 * upper bound. Never more ranges than pages (an empty table is one range).
 */
export function pageRanges(pages: number, parts: number): PageRange[] {
  const n = Math.max(1, Math.min(Math.floor(parts), Math.floor(pages)));
  const out: PageRange[] = [];
  for (let i = 0; i < n; i++) {
    out.push({ from: Math.floor((pages * i) / n), to: i === n - 1 ? null : Math.floor((pages * (i + 1)) / n) });
  }
  return out;
}

/** How many ranges a table of `bytes` is copied in, given the parallel copies allowed. */
export function rangeCount(bytes: number, jobs: number): number {
  return Math.max(jobs, Math.ceil(bytes / RANGE_BYTES));
}

/** The WHERE clause of one range. */
export function rangePredicate(r: PageRange): string {
  const lower = `ctid >= '(${r.from},0)'::tid`;
  return r.to === null ? lower : `${lower} and ctid < '(${r.to},0)'::tid`;
}

/** Settings of a session that reads COPY data: the text pg_dump would write, never cut short. */
const SOURCE_SETTINGS = [
  "set client_encoding = 'UTF8'",
  "set datestyle = 'ISO'",
  "set intervalstyle = 'postgres'",
  'set extra_float_digits = 3',
  'set statement_timeout = 0',
  'set lock_timeout = 0',
  'set idle_in_transaction_session_timeout = 0',
  'set row_security = off',
];
/**
 * Settings of a session that loads COPY data, as pg_restore sets them; triggers (and the checks of
 * foreign keys created NOT VALID before a deferred load) do not fire, as with --disable-triggers.
 */
const TARGET_SETTINGS = [
  "set client_encoding = 'UTF8'",
  "set session_replication_role = 'replica'",
  "set datestyle = 'ISO, MDY'",
  "set intervalstyle = 'postgres'",
  'set statement_timeout = 0',
  'set lock_timeout = 0',
  "set xmloption = 'content'",
  'set row_security = off',
];

/**
 * Tables of a source database to copy in ranges, read in the dump's snapshot: ordinary tables of at
 * least `minBytes`, not members of an extension (pg_dump decides about those). None when the source is
 * older than 14 or the database is not UTF8 (the rows pass through a UTF8 client encoding).
 */
export async function splitCandidates(ctx: Context, db: string, snapshot: string, minBytes: number): Promise<SplitTable[]> {
  if (ctx.sourceMajor < SPLIT_MIN_SOURCE_MAJOR) return [];
  const rows = await withClient(ctx.source, db, (c) => inSnapshot(c, snapshot, () => splitCandidateTables(c, ctx.sourceMajor, minBytes)));
  return rows.map(({ builtin, ...t }) => ({ ...t, binary: binaryCopy(ctx.sourceMajor, ctx.targetMajor, builtin) }));
}

/** The rows a psql `\copy` reported (its `COPY n` line), or undefined if it printed none. */
export function copiedRows(psqlStdout: string): number | undefined {
  const all = [...psqlStdout.matchAll(/^COPY (\d+)$/gm)];
  const last = all.at(-1);
  return last === undefined ? undefined : Number(last[1]);
}

/**
 * Copies one range of one table; returns the rows copied. Two psql processes do the copy, one
 * `\copy (SELECT …) TO` a FIFO on the source, one `\copy … FROM` it on the target, so the rows
 * never pass through this process (its memory stays the same whatever the tables' size). Both name
 * the FIFO relative to their working directory (`dir`): no path is quoted into a command.
 *
 * The target commits its COPY when the FIFO ends, so a source that fails half-way leaves a partial
 * range behind: the range then fails (psql's exit status, and the two sides' row counts must agree),
 * which fails the database, and a later run re-creates it (or truncates the deferred tables first).
 */
async function copyRange(
  ctx: Context,
  db: string,
  snapshot: string,
  table: SplitTable,
  range: PageRange,
  dir: string,
  fifoName: string,
  signal: AbortSignal,
): Promise<number> {
  const cols = table.columns.map(quoteIdent).join(', ');
  const rel = qualify(table.schema, table.name);
  const format = table.binary ? ' with (format binary)' : '';
  const psql = (server: Server, commands: string[]): PipeSide => ({
    file: ctx.tools.psql.path,
    args: ['-X', '-v', 'ON_ERROR_STOP=1', ...connArgs(server), '-d', dbnameConninfo(db), ...commands.flatMap((c) => ['-c', c])],
    cwd: dir,
    captureStdout: true,
  });
  const [out, into] = await runPiped(
    path.join(dir, fifoName),
    psql(ctx.source, [
      SOURCE_SETTINGS.join('; '),
      ...snapshotImportStatements(snapshot),
      `\\copy (select ${cols} from only ${rel} where ${rangePredicate(range)}) to '${fifoName}'${format}`,
      'commit',
    ]),
    psql(ctx.target, [TARGET_SETTINGS.join('; '), `\\copy ${rel} (${cols}) from '${fifoName}'${format}`]),
    { env: ctx.childEnv, children: ctx.children, signal },
  );
  const sent = copiedRows(out.stdout);
  const took = copiedRows(into.stdout);
  if (sent === undefined || sent !== took) {
    const to = range.to === null ? 'end' : String(range.to);
    throw new MigrateError(
      `copying ${rel} pages ${String(range.from)}..${to}: the source sent ${sent === undefined ? 'no' : String(sent)} rows, the target took ${took === undefined ? 'no' : String(took)} rows`,
    );
  }
  return took;
}

/**
 * Copies the given tables, each in its ranges, `jobs` ranges at a time. The tables must exist on the
 * target and be empty, without indexes, constraints or triggers yet (the post-data section comes after).
 */
export async function copyTablesInRanges(
  ctx: Context,
  db: string,
  snapshot: string,
  tables: SplitTable[],
  jobs: number,
  dir: string,
): Promise<SplitCopyResult[]> {
  const queue = new PQueue({ concurrency: Math.max(1, jobs) });
  // One failing range stops the others (and Ctrl-C stops them all).
  const stop = new AbortController();
  const signal = AbortSignal.any([ctx.signal, stop.signal]);
  const t0 = performance.now();
  const results: SplitCopyResult[] = [];
  const tasks = tables.flatMap((t, i) => {
    const ranges = pageRanges(t.pages, rangeCount(t.bytes, jobs));
    const result: SplitCopyResult = { table: qualify(t.schema, t.name), ranges: ranges.length, binary: t.binary, rows: 0, seconds: 0 };
    results.push(result);
    return ranges.map((r, j) => async () => {
      try {
        // Read the rows first: `result.rows += await …` would read result.rows before the await and lose the other ranges' rows.
        const rows = await copyRange(ctx, db, snapshot, t, r, dir, `${String(i)}-${String(j)}.fifo`, signal);
        result.rows += rows;
        result.seconds = (performance.now() - t0) / 1000;
      } catch (err) {
        stop.abort();
        throw err;
      }
    });
  });
  // Every task is awaited, so none is left running; the failure reported is the first one that was
  // not merely stopped because of another.
  const settled = await Promise.allSettled(tasks.map((task) => queue.add(task, { signal })));
  await rm(dir, { recursive: true, force: true });
  const failures = settled.filter((s): s is PromiseRejectedResult => s.status === 'rejected').map((s) => s.reason as Error);
  const reported = failures.find((e) => e.name !== 'AbortError') ?? failures[0];
  if (reported) throw reported;
  return results;
}
