import { mkdir, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { runPiped, runTool } from '../proc/run.ts';
import { connArgs, dbnameConninfo } from '../pg/passfile.ts';
import { controlQuery, importSnapshot, qualify, quoteIdent, withClient, type Server } from '../pg/connect.ts';
import { encodeName } from '../state/names.ts';
import { MigrateError } from '../errors.ts';
import { jobsForDatabase } from '../options.ts';
import { together, type Context } from './context.ts';
import { copyTablesInRanges, splitCandidates } from './ranges.ts';
import type { SplitCopyResult } from '../events.ts';

/**
 * How table data travels from the source to the target: the file path (pg_dump -Fd into the dump
 * root, pg_restore from there) and the stream path (pg_dump piped into pg_restore, big tables copied
 * server to server in page ranges under the same exported snapshot: ranges.ts).
 */
export interface DataPath {
  /** Schema and data of a whole database (with its properties: --create), data of `excludeData` left out. */
  dumpDatabase(db: string, opts: { snapshot?: string; excludeData: { schema: string; name: string }[] }): Promise<void>;
  /**
   * Creates the database on the target with its properties and restores the dump into it, leaving
   * out the constraints whose source oids are in `skipConstraints` (pg_constraint entries of the TOC).
   */
  restoreDatabase(db: string, opts?: { skipConstraints?: Set<string> }): Promise<void>;
  /** Data only of the given tables. */
  dumpTableData(db: string, tables: { schema: string; name: string }[], opts: { snapshot?: string }): Promise<void>;
  /** Loads what dumpTableData wrote into the existing database (triggers disabled). */
  restoreTableData(db: string): Promise<void>;
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
  streamDatabase(db: string, opts: { snapshot?: string; excludeData?: { schema: string; name: string }[]; skipConstraints?: Set<string> }): Promise<SplitCopyResult[]>;
  /**
   * Data of the given tables, streamed the same way into the existing database (triggers disabled);
   * tables of at least --split-table-size in page ranges.
   */
  streamTableData(db: string, tables: { schema: string; name: string }[], opts: { snapshot?: string }): Promise<SplitCopyResult[]>;
  /** Where a database's files are (to check and remove them). */
  location(db: string, part: 'regular' | 'delayed'): string;
  remove(db: string, part: 'regular' | 'delayed'): Promise<void>;
}

/** `"schema"."table"`: a pg_dump pattern that matches this one table and nothing else. */
export const exactPattern = (t: { schema: string; name: string }): string => qualify(t.schema, t.name);

/** pg_dump arguments that leave the given tables' data out. */
const excludeDataArgs = (tables: { schema: string; name: string }[]): string[] => tables.map((t) => `--exclude-table-data=${exactPattern(t)}`);

/** Progress detail naming the tables copied in page ranges. */
const inRanges = (tables: { schema: string; name: string }[]): string => tables.map((t) => `${exactPattern(t)} in ranges`).join(', ');

export function fileDataPath(ctx: Context): DataPath {
  const { options, tools, childEnv, signal, parallelism } = ctx;
  const location = (db: string, part: 'regular' | 'delayed'): string =>
    path.join(options.dumpRoot, part === 'regular' ? encodeName(db) : `${encodeName(db)}.delayed`);
  const run = (tool: string, args: string[]) => runTool(tool, args, { env: childEnv, signal });
  const jobs = (db: string, side: 'dump' | 'restore'): number =>
    side === 'dump'
      ? jobsForDatabase(parallelism.dumpJobs, options.dumpJobs, ctx.sizes.get(db) ?? null)
      : jobsForDatabase(parallelism.restoreJobs, options.restoreJobs, ctx.sizes.get(db) ?? null);
  /** pg_dump -Fc into a FIFO that pg_restore reads; one failing side stops the other. */
  const pipe = async (fifo: string, dumpArgs: string[], restoreArgs: string[]): Promise<void> => {
    await runPiped(
      fifo,
      { file: tools.pgDump.path, args: ['-Fc', '-Z', '0', '--no-sync', '-f', fifo, ...connArgs(ctx.source), ...dumpArgs] },
      { file: tools.pgRestore.path, args: ['-Fc', ...connArgs(ctx.target), ...restoreArgs, fifo] },
      { env: childEnv, signal },
    );
  };
  /** An archive's table of contents (`pg_restore -l`), the input of a `--use-list` file. */
  const tocListing = async (archive: string): Promise<string> =>
    (await runTool(tools.pgRestore.path, ['-l', archive], { env: childEnv, signal, captureStdout: true })).stdout;
  /**
   * `--use-list` arguments that restore an archive without the given constraints (none when there is
   * nothing to leave out); the list is written beside the archive.
   */
  const restoreListSkipping = async (archive: string, skip: Set<string> | undefined): Promise<string[]> => {
    if (!skip || skip.size === 0) return [];
    const listFile = `${archive}.restore.list`;
    await writeFile(listFile, filterTocList(await tocListing(archive), skip));
    return [`--use-list=${listFile}`];
  };
  /** Tables to copy in page ranges: none without a snapshot, with --split-table-size off, or with one job. */
  const rangeCandidates = async (db: string, snapshot: string | undefined, rangeJobs: number) =>
    snapshot !== undefined && options.splitTableBytes !== null && rangeJobs > 1 ? splitCandidates(ctx, db, snapshot, options.splitTableBytes) : [];
  return {
    location,
    async remove(db, part) {
      for (const suffix of ['', '.restore.list', '.post-data', ...POST_DATA_PASSES.map((p) => `.post-data.${p}.list`), '.ranges']) {
        await rm(`${location(db, part)}${suffix}`, { recursive: true, force: true });
      }
    },
    async dumpDatabase(db, { snapshot, excludeData }) {
      const dir = location(db, 'regular');
      await rm(dir, { recursive: true, force: true });
      const args = ['-Fd', '-j', String(jobs(db, 'dump')), '-Z', ctx.compression, '--create', '-f', dir, ...connArgs(ctx.source)];
      if (snapshot) args.push(`--snapshot=${snapshot}`);
      args.push(...excludeDataArgs(excludeData));
      args.push(`--dbname=${dbnameConninfo(db)}`);
      await run(tools.pgDump.path, args);
    },
    async restoreDatabase(db, opts) {
      const dir = location(db, 'regular');
      const args = ['-j', String(jobs(db, 'restore')), '--disable-triggers', '--create', ...connArgs(ctx.target)];
      args.push(...(await restoreListSkipping(dir, opts?.skipConstraints)));
      args.push(`--dbname=${dbnameConninfo(ctx.target.endpoint.database)}`, dir);
      await run(tools.pgRestore.path, args);
    },
    async streamDatabase(db, { snapshot, excludeData = [], skipConstraints }) {
      const snap = snapshot ? [`--snapshot=${snapshot}`] : [];
      const noData = excludeDataArgs(excludeData);
      const deferred = new Set(excludeData.map(exactPattern));
      const dbArg = `--dbname=${dbnameConninfo(db)}`;
      const restoreArgs = ['--disable-triggers', '--create', `--dbname=${dbnameConninfo(ctx.target.endpoint.database)}`];
      const fifo = `${location(db, 'regular')}.fifo`;
      const postJobs = jobs(db, 'restore');
      const rangeJobs = Math.min(jobs(db, 'dump'), postJobs);
      const split = (await rangeCandidates(db, snapshot, rangeJobs)).filter((t) => !deferred.has(exactPattern(t)));
      if (postJobs <= 1 && split.length === 0 && (skipConstraints?.size ?? 0) === 0) {
        await pipe(fifo, ['--create', ...noData, ...snap, dbArg], restoreArgs);
        return [];
      }
      // Indexes and constraints (post-data) are built by parallel jobs, which pg_restore cannot run
      // from a stream (nor leave entries out of it): their definitions (a few kB) go to a file first,
      // from the same snapshot.
      const postFile = `${location(db, 'regular')}.post-data`;
      await mkdir(options.dumpRoot, { recursive: true });
      await run(tools.pgDump.path, ['-Fc', '--no-sync', '--section=post-data', ...snap, '-f', postFile, ...connArgs(ctx.source), dbArg]);
      let copied: SplitCopyResult[] = [];
      if (split.length === 0) {
        await pipe(fifo, ['--create', '--section=pre-data', '--section=data', ...noData, ...snap, dbArg], restoreArgs);
      } else {
        // The big tables' rows go in parallel page ranges beside the stream of the other tables' data,
        // once the tables exist (pre-data) and before any index or constraint does (post-data).
        ctx.emit({ type: 'phase', db, phase: 'streaming', detail: inRanges(split) });
        await pipe(fifo, ['--create', '--section=pre-data', ...snap, dbArg], restoreArgs);
        const dataArgs = ['--section=data', ...excludeDataArgs([...excludeData, ...split]), ...snap, dbArg];
        await together(
          () => pipe(`${fifo}.data`, dataArgs, ['--disable-triggers', dbArg]),
          async () => {
            copied = await copyTablesInRanges(ctx, db, snapshot!, split, rangeJobs, `${location(db, 'regular')}.ranges`);
          },
        );
      }
      const listing = await tocListing(postFile);
      const referenced = / FK CONSTRAINT /.test(listing) ? await referencedKeys(ctx.source, ctx.sourceMajor, db, snapshot) : new Map<string, string>();
      const passes = postDataPasses(listing, skipConstraints ?? new Set(), referenced);
      const listFile = (pass: PostDataPass): string => `${postFile}.${pass}.list`;
      for (const pass of POST_DATA_PASSES) {
        const list = passes[pass];
        if (list === undefined) continue;
        await writeFile(listFile(pass), list);
        await run(tools.pgRestore.path, ['-j', String(postJobs), ...connArgs(ctx.target), `--use-list=${listFile(pass)}`, dbArg, postFile]);
      }
      for (const file of [postFile, ...POST_DATA_PASSES.map(listFile)]) await rm(file, { force: true });
      return copied;
    },
    async streamTableData(db, tables, { snapshot }) {
      const rangeJobs = Math.min(parallelism.dumpJobs, parallelism.restoreJobs);
      const wanted = new Set(tables.map(exactPattern));
      const split = (await rangeCandidates(db, snapshot, rangeJobs)).filter((t) => wanted.has(exactPattern(t)));
      const inSplit = new Set(split.map(exactPattern));
      const rest = tables.filter((t) => !inSplit.has(exactPattern(t)));
      if (split.length > 0) ctx.emit({ type: 'phase', db, phase: 'delayed restoring', detail: inRanges(split) });
      let copied: SplitCopyResult[] = [];
      await together(
        async () => {
          if (rest.length === 0) return;
          const dumpArgs = ['--data-only', ...(snapshot ? [`--snapshot=${snapshot}`] : []), ...rest.map((t) => `--table=${exactPattern(t)}`), `--dbname=${dbnameConninfo(db)}`];
          await pipe(`${location(db, 'delayed')}.fifo`, dumpArgs, ['--data-only', '--disable-triggers', `--dbname=${dbnameConninfo(db)}`]);
        },
        async () => {
          if (split.length > 0) copied = await copyTablesInRanges(ctx, db, snapshot!, split, rangeJobs, `${location(db, 'delayed')}.ranges`);
        },
      );
      return copied;
    },
    async dumpTableData(db, tables, { snapshot }) {
      const dir = location(db, 'delayed');
      await rm(dir, { recursive: true, force: true });
      const args = ['-Fd', '-j', String(parallelism.dumpJobs), '-Z', ctx.compression, '--data-only', '-f', dir, ...connArgs(ctx.source)];
      if (snapshot) args.push(`--snapshot=${snapshot}`);
      for (const t of tables) args.push(`--table=${exactPattern(t)}`);
      args.push(`--dbname=${dbnameConninfo(db)}`);
      await run(tools.pgDump.path, args);
    },
    async restoreTableData(db) {
      const args = ['-j', String(parallelism.restoreJobs), '--data-only', '--disable-triggers', ...connArgs(ctx.target)];
      args.push(`--dbname=${dbnameConninfo(db)}`, location(db, 'delayed'));
      await run(tools.pgRestore.path, args);
    },
  };
}

/** Whether a database exists on a server. */
export async function databaseExists(server: Server, db: string): Promise<boolean> {
  const r = await controlQuery(server, 'select 1 from pg_database where datname = $1', [db]);
  return (r.rowCount ?? 0) > 0;
}

/** Drops a database this run created earlier (all sessions in it are ended first). */
export async function dropTargetDatabase(ctx: Context, db: string): Promise<void> {
  if (db === ctx.target.endpoint.database) throw new MigrateError(`refusing to drop ${db}: it is the target's --to-db`);
  await controlQuery(ctx.target, `alter database ${quoteIdent(db)} allow_connections false`).catch(() => undefined);
  await controlQuery(ctx.target, 'select pg_terminate_backend(pid) from pg_stat_activity where datname = $1 and pid <> pg_backend_pid()', [db]);
  await controlQuery(ctx.target, `drop database if exists ${quoteIdent(db)}${ctx.targetMajor >= 13 ? ' with (force)' : ''}`);
}

/** A `pg_restore -l` line of a pg_constraint row (catalog oid 2606): its oid and the entry's kind. */
const TOC_CONSTRAINT = /^\d+; 2606 (\d+) (CONSTRAINT|FK CONSTRAINT|CHECK CONSTRAINT) /;

/** A `pg_restore -l` listing with the lines for which `drop` is true commented out. */
function commentOut(listing: string, drop: (line: string) => boolean): string {
  return listing
    .split('\n')
    .map((line) => (/^\d+;/.test(line) && drop(line) ? `;${line}` : line))
    .join('\n');
}

/**
 * Comments out the TOC entries of the given pg_constraint rows in a `pg_restore -l` listing. Lines are
 * matched by the object's oid, never by its name.
 */
export function filterTocList(listing: string, constraintOids: Set<string>): string {
  return commentOut(listing, (line) => constraintOids.has(TOC_CONSTRAINT.exec(line)?.[1] ?? ''));
}

/**
 * The foreign keys between ordinary tables of a source database, each with the PRIMARY KEY or UNIQUE
 * constraint whose index it references (pg_constraint oids), as the dump's snapshot sees them. A
 * foreign key that references a unique index without a constraint, or a partitioned table, is not
 * listed: what it needs is restored with the indexes. Nor are the foreign keys that the server clones
 * for partitions (pg_dump does not dump them).
 */
export async function referencedKeys(source: Server, sourceMajor: number, db: string, snapshot: string | undefined): Promise<Map<string, string>> {
  return withClient(source, db, async (client) => {
    if (snapshot !== undefined) await importSnapshot(client, snapshot);
    const r = await client.query<{ fk: string; key: string }>(
      `select f.oid::text as fk, k.oid::text as key
         from pg_constraint f
         join pg_class fr on fr.oid = f.conrelid and fr.relkind = 'r'
         join pg_class kr on kr.oid = f.confrelid and kr.relkind = 'r'
         join pg_constraint k on k.conrelid = f.confrelid and k.conindid = f.conindid and k.contype in ('p', 'u')
        where f.contype = 'f'${sourceMajor >= 11 ? ' and f.conparentid = 0' : ''}`,
    );
    if (snapshot !== undefined) await client.query('rollback');
    return new Map(r.rows.map((row) => [row.fk, row.key]));
  });
}

/** The passes of postDataPasses, in the order they are restored. */
const POST_DATA_PASSES = ['keys', 'fks', 'rest'] as const;
type PostDataPass = (typeof POST_DATA_PASSES)[number];

/**
 * The post-data section as up to three restore lists, run one after the other (each with pg_restore
 * -j), leaving out the constraints in `skip` as filterTocList does:
 * 1. `keys`: the PRIMARY KEY, UNIQUE and EXCLUDE constraints (entries of kind CONSTRAINT). pg_restore
 *    -j starts `ALTER TABLE … ADD PRIMARY KEY` (an ACCESS EXCLUSIVE lock) beside the CREATE INDEX of
 *    the same table and the job waits until that index is built; keys first, the indexes of one
 *    table then build side by side.
 * 2. `fks`: the foreign keys whose referenced key (`referenced`: foreign key oid → key constraint oid)
 *    was restored in the first pass. Checking a foreign key is one single-threaded scan of the
 *    referencing table that needs only the referenced key; after the indexes (pg_dump's order) the
 *    check of the biggest table ends the run on one core, after waiting for that table's index builds
 *    (its lock conflicts with theirs). Here it runs beside the other databases' work instead.
 * 3. `rest`: everything else (indexes, the other foreign keys, check constraints, triggers, comments...).
 * `keys` and `fks` are undefined when they would be empty.
 */
export function postDataPasses(
  listing: string,
  skip: Set<string>,
  referenced: Map<string, string> = new Map(),
): Record<PostDataPass, string | undefined> & { rest: string } {
  const entry = (line: string) => TOC_CONSTRAINT.exec(line);
  const wanted = filterTocList(listing, skip);
  const lines = wanted.split('\n').filter((line) => /^\d+;/.test(line));
  const isKey = (line: string): boolean => entry(line)?.[2] === 'CONSTRAINT';
  const keyOids = new Set(lines.filter(isKey).map((line) => entry(line)![1]!));
  const isEarlyFk = (line: string): boolean => {
    const e = entry(line);
    return e?.[2] === 'FK CONSTRAINT' && keyOids.has(referenced.get(e[1]!) ?? '');
  };
  return {
    keys: keyOids.size > 0 ? commentOut(wanted, (line) => !isKey(line)) : undefined,
    fks: lines.some(isEarlyFk) ? commentOut(wanted, (line) => !isEarlyFk(line)) : undefined,
    rest: commentOut(wanted, (line) => isKey(line) || isEarlyFk(line)),
  };
}
