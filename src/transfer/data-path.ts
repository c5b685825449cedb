/**
 * How table data travels from the source to the target, behind one interface: the file path
 * (files.ts: pg_dump -Fd into the dump root, pg_restore from there) and the stream path (stream.ts:
 * pg_dump piped into pg_restore, big tables copied server to server in page ranges under the same
 * exported snapshot: ranges.ts).
 */
import { rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { runPiped, runTool, type RunResult } from '../proc/run.ts';
import { qualify, type RelationName } from '../pg/sql.ts';
import { filterTocList, POST_DATA_PASSES } from '../pg/toc.ts';
import { encodeName } from '../state/names.ts';
import type { DatabasePlan } from '../plan.ts';
import type { SplitCopyResult } from '../events.ts';
import type { Context } from '../pipeline/context.ts';
import { fileDataPath } from './files.ts';
import { streamDataPath } from './stream.ts';

export type DataPart = 'regular' | 'deferred';

export interface DataPath {
  /** Schema and data of a whole database (with its properties: --create), data of `excludeData` left out. */
  dumpDatabase(db: DatabasePlan, opts: { snapshot?: string; excludeData: RelationName[] }): Promise<void>;
  /**
   * Creates the database on the target with its properties and restores the dump into it, leaving
   * out the constraints whose source oids are in `skipConstraints` (pg_constraint entries of the TOC).
   */
  restoreDatabase(db: DatabasePlan, opts?: { skipConstraints?: Set<string> }): Promise<void>;
  /**
   * Dump and restore at once: `pg_dump -Fc -Z0` writes into a FIFO that `pg_restore --create` reads,
   * so the data never lands on disk and the restore runs while the dump does. pg_restore cannot run
   * parallel jobs on a stream, so for a database that gets more than one job the post-data section
   * (indexes, constraints) is dumped to a small file and restored with -j after the data. Tables of at
   * least --split-table-size are copied in parallel page ranges beside the stream (ranges.ts); what
   * was copied so is returned. `excludeData` and `skipConstraints` as for dumpDatabase and
   * restoreDatabase (the constraints are left out of the post-data file's restore list). The
   * post-data file is restored in up to three passes (postDataPasses).
   */
  streamDatabase(db: DatabasePlan, opts: { snapshot?: string; excludeData?: RelationName[]; skipConstraints?: Set<string> }): Promise<SplitCopyResult[]>;
  /** Where a database's files are (to check and remove them). */
  location: (db: string, part: DataPart) => string;
  remove(db: string, part: DataPart): Promise<void>;
}

/** Both data paths of a run. */
export function createDataPath(ctx: Context): DataPath {
  const io = transferIo(ctx);
  return {
    ...fileDataPath(ctx, io),
    ...streamDataPath(ctx, io),
    location: io.location,
    async remove(db, part) {
      const base = io.location(db, part);
      for (const suffix of ['', '.restore.list', '.post-data', ...POST_DATA_PASSES.map((p) => `.post-data.${p}.list`), '.ranges']) {
        await rm(`${base}${suffix}`, { recursive: true, force: true });
      }
    },
  };
}

/** `"schema"."table"`: a pg_dump pattern that matches this one table and nothing else. */
export const exactPattern = (t: RelationName): string => qualify(t.schema, t.name);

/** pg_dump arguments that leave the given tables' data out. */
export const excludeDataArgs = (tables: RelationName[]): string[] => tables.map((t) => `--exclude-table-data=${exactPattern(t)}`);

/** The client-program plumbing both data paths share. */
export interface TransferIo {
  /** A database's dump directory (or the stem of its stream files) in the dump root. */
  location: (db: string, part: DataPart) => string;
  run(tool: string, args: string[]): Promise<RunResult>;
  /** pg_dump -Fc into a FIFO that pg_restore reads; one failing side stops the other. */
  pipe(fifo: string, dumpArgs: string[], restoreArgs: string[]): Promise<void>;
  /** An archive's table of contents (`pg_restore -l`), the input of a `--use-list` file. */
  tocListing(archive: string): Promise<string>;
  /**
   * `--use-list` arguments that restore an archive without the given constraints (none when there is
   * nothing to leave out); the list is written beside the archive.
   */
  restoreListSkipping(archive: string, skip: Set<string> | undefined): Promise<string[]>;
}

/** Where a database's dump (of one part) is written on the file path. */
export const dumpLocation = (dumpRoot: string, db: string, part: DataPart): string =>
  path.join(dumpRoot, part === 'regular' ? encodeName(db) : `${encodeName(db)}.delayed`);

function transferIo(ctx: Context): TransferIo {
  const { options, tools, childEnv, signal, children } = ctx;
  const location = (db: string, part: DataPart): string => dumpLocation(options.dumpRoot, db, part);
  const run = (tool: string, args: string[]): Promise<RunResult> => runTool(tool, args, { env: childEnv, signal, children });
  const tocListing = async (archive: string): Promise<string> =>
    (await runTool(tools.pgRestore.path, ['-l', archive], { env: childEnv, signal, children, captureStdout: true })).stdout;
  return {
    location,
    run,
    tocListing,
    async pipe(fifo, dumpArgs, restoreArgs) {
      await runPiped(
        fifo,
        { file: tools.pgDump.path, args: ['-Fc', '-Z', '0', '--no-sync', '-f', fifo, '-w', ...dumpArgs] },
        { file: tools.pgRestore.path, args: ['-Fc', '-w', ...restoreArgs, fifo] },
        { env: childEnv, signal, children },
      );
    },
    async restoreListSkipping(archive, skip) {
      if (!skip || skip.size === 0) return [];
      const listFile = `${archive}.restore.list`;
      await writeFile(listFile, filterTocList(await tocListing(archive), skip));
      return [`--use-list=${listFile}`];
    },
  };
}
