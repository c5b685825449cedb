/**
 * Tables copied straight from the source to the target (`COPY (SELECT …) TO STDOUT` → `COPY … FROM
 * STDIN`), every piece read under the snapshot the rest of the database uses. pg_dump copies a table
 * as one stream whatever its size; page ranges that run in parallel let one big table use more than
 * one core. The deferred tables' loads use the same copies, one transaction per piece whose
 * transaction id is kept, so that a rerun knows what an interrupted load committed.
 */
import { rm } from 'node:fs/promises';
import path from 'node:path';
import PQueue from 'p-queue';
import type { Context } from '../pipeline/context.ts';
import type { SplitCopyResult } from '../events.ts';
import { AbortError, MigrateError } from '../errors.ts';
import { clientArgs, withClient, type Server } from '../pg/connect.ts';
import { splitCandidateTables, type CopyTableRow } from '../pg/catalog.ts';
import { inSnapshot, snapshotImportStatements } from '../pg/snapshot.ts';
import { qualify, quoteIdent, quoteLiteral } from '../pg/sql.ts';
import { mainFailure, runPiped, type PipeSide } from '../proc/run.ts';

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
 * versions) with binary send and receive functions, none of the reg* types (their binary form is an
 * oid of the source), and the target is not older than the source. PostgreSQL's own logical
 * replication copies tables in binary across versions under the same terms.
 */
export function binaryCopy(sourceMajor: number, targetMajor: number, allTypesBuiltInWithBinaryIo: boolean): boolean {
  return allTypesBuiltInWithBinaryIo && targetMajor >= sourceMajor;
}

/** A catalog row as a table to copy. */
export const toSplitTable = (ctx: Pick<Context, 'sourceMajor' | 'targetMajor'>, row: CopyTableRow): SplitTable => ({
  schema: row.schema,
  name: row.name,
  bytes: row.bytes,
  pages: row.pages,
  columns: row.columns,
  binary: binaryCopy(ctx.sourceMajor, ctx.targetMajor, row.builtin),
});

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
const sourceSettings = (encoding: string): string[] => [
  `set client_encoding = ${quoteLiteral(encoding)}`,
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
 * foreign keys created NOT VALID before a deferred load) do not fire, as with --disable-triggers. A
 * target user that is not superuser may not set session_replication_role: it loads only before the
 * tables have triggers or foreign keys (preflight refuses deferred loads for it).
 */
const targetSettings = (encoding: string, superuser: boolean): string[] => [
  `set client_encoding = ${quoteLiteral(encoding)}`,
  ...(superuser ? ["set session_replication_role = 'replica'"] : []),
  "set datestyle = 'ISO, MDY'",
  "set intervalstyle = 'postgres'",
  'set statement_timeout = 0',
  'set lock_timeout = 0',
  'set idle_in_transaction_session_timeout = 0',
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
  return rows.map((row) => toSplitTable(ctx, row));
}

/** The rows a psql `\copy` reported (its `COPY n` line), or undefined if it printed none. */
export function copiedRows(psqlStdout: string): number | undefined {
  const all = [...psqlStdout.matchAll(/^COPY (\d+)$/gm)];
  const last = all.at(-1);
  return last === undefined ? undefined : Number(last[1]);
}

/** One piece of a table's copy: the whole table (range null) or one page range of it. */
export interface CopyUnit {
  table: SplitTable;
  range: PageRange | null;
  /**
   * Where the target's session writes its transaction id before it copies a row (deferred loads):
   * the rows that session commits are exactly those whose xmin is that id.
   */
  xidFile?: string;
}

export interface CopyOptions {
  /** client_encoding of both sessions: the database's own for deferred loads (no conversion at all). */
  encoding: string;
  /** The FIFOs' directory (the programs name them relative to it). */
  dir: string;
}

/**
 * Copies one unit; returns the rows copied. Two psql processes do the copy, one `\copy (SELECT …) TO`
 * a FIFO on the source, one `\copy … FROM` it on the target, so the rows never pass through this
 * process (its memory stays the same whatever the tables' size). Both name the FIFO relative to their
 * working directory: no path is quoted into a command (the transaction-id file goes in as a psql
 * variable).
 *
 * The target's session is one transaction that commits when the FIFO ends, so a source that fails
 * half-way leaves nothing behind unless the target saw a well-formed end: the two sides' row counts
 * must then agree, or the unit fails.
 */
async function copyUnit(
  ctx: Context,
  db: string,
  snapshot: string | undefined,
  unit: CopyUnit,
  opts: CopyOptions,
  fifoName: string,
  signal: AbortSignal,
): Promise<number> {
  const { table, range, xidFile } = unit;
  const cols = table.columns.map(quoteIdent).join(', ');
  const rel = qualify(table.schema, table.name);
  const format = table.binary ? ' with (format binary)' : '';
  const where = range === null ? '' : ` where ${rangePredicate(range)}`;
  const psql = (server: Server, variables: string[], commands: string[]): PipeSide => ({
    file: ctx.tools.psql.path,
    args: ['-X', '-A', '-t', '-v', 'ON_ERROR_STOP=1', ...variables, ...clientArgs(server, db), ...commands.flatMap((c) => ['-c', c])],
    cwd: opts.dir,
    captureStdout: true,
  });
  const recordXid = xidFile === undefined ? [] : ['\\o :xidfile', 'select txid_current()', '\\o'];
  const [out, into] = await runPiped(
    path.join(opts.dir, fifoName),
    psql(
      ctx.source,
      [],
      [
        sourceSettings(opts.encoding).join('; '),
        ...(snapshot === undefined ? ['begin isolation level repeatable read read only'] : snapshotImportStatements(snapshot)),
        `\\copy (select ${cols} from only ${rel}${where}) to '${fifoName}'${format}`,
        'commit',
      ],
    ),
    psql(ctx.target, xidFile === undefined ? [] : ['-v', `xidfile=${xidFile}`], [
      targetSettings(opts.encoding, ctx.targetSuperuser).join('; '),
      'begin',
      ...recordXid,
      `\\copy ${rel} (${cols}) from '${fifoName}'${format}`,
      'commit',
    ]),
    { env: ctx.childEnv, children: ctx.children, signal },
  );
  const sent = copiedRows(out.stdout);
  const took = copiedRows(into.stdout);
  if (sent === undefined || sent !== took) {
    const where = range === null ? '' : ` pages ${String(range.from)}..${range.to === null ? 'end' : String(range.to)}`;
    throw new MigrateError(
      `copying ${rel}${where}: the source sent ${sent === undefined ? 'no' : String(sent)} rows, the target took ${took === undefined ? 'no' : String(took)} rows`,
    );
  }
  return took;
}

/**
 * Copies the given units, `jobs` at a time; a table's result sums its units. The tables must exist on
 * the target. One failing unit stops the others (and Ctrl-C stops them all).
 */
export async function copyUnits(
  ctx: Context,
  db: string,
  snapshot: string | undefined,
  units: CopyUnit[],
  jobs: number,
  opts: CopyOptions,
): Promise<SplitCopyResult[]> {
  const queue = new PQueue({ concurrency: Math.max(1, jobs) });
  const stop = new AbortController();
  const signal = AbortSignal.any([ctx.signal, stop.signal]);
  const t0 = performance.now();
  const results = new Map<SplitTable, SplitCopyResult>();
  const failed: Error[] = [];
  const tasks = units.map((unit, i) => {
    const result = results.get(unit.table) ?? { table: qualify(unit.table.schema, unit.table.name), ranges: 0, binary: unit.table.binary, rows: 0, seconds: 0 };
    result.ranges++;
    results.set(unit.table, result);
    return async () => {
      if (signal.aborted) throw new AbortError(); // stopped before it started
      try {
        // Read the rows first: `result.rows += await …` would read result.rows before the await and lose the other units' rows.
        const rows = await copyUnit(ctx, db, snapshot, unit, opts, `${String(i)}.fifo`, signal);
        result.rows += rows;
        result.seconds = (performance.now() - t0) / 1000;
      } catch (err) {
        failed.push(err as Error); // in the order they failed: the first is the cause, the others often its echo
        stop.abort();
        throw err;
      }
    };
  });
  // Every task is awaited, so none is left running; the failure reported is the first one that was
  // not merely stopped because of another. No signal goes to p-queue: it would reject the add() of the
  // very task whose failure aborted the others, before its own error, with "This operation was aborted".
  const settled = await Promise.allSettled(tasks.map((task) => queue.add(task)));
  await rm(opts.dir, { recursive: true, force: true });
  const failures = [...failed, ...settled.filter((s): s is PromiseRejectedResult => s.status === 'rejected').map((s) => s.reason as Error)];
  const reported = mainFailure(failures);
  if (reported) throw reported;
  return [...results.values()];
}

/**
 * Copies the given tables, each in its page ranges, `jobs` ranges at a time (regular phase: the tables
 * exist on the target and are empty, without indexes, constraints or triggers yet).
 */
export function copyTablesInRanges(ctx: Context, db: string, snapshot: string, tables: SplitTable[], jobs: number, dir: string): Promise<SplitCopyResult[]> {
  const units = tables.flatMap((table) => pageRanges(table.pages, rangeCount(table.bytes, jobs)).map((range) => ({ table, range })));
  return copyUnits(ctx, db, snapshot, units, jobs, { encoding: 'UTF8', dir });
}
