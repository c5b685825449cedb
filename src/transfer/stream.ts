/**
 * The stream path: pg_dump piped into pg_restore through a FIFO, nothing on disk but the post-data
 * definitions, the restore running while the dump does; tables of at least --split-table-size copied
 * straight from server to server in page ranges under the same snapshot (ranges.ts).
 */
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { withClient } from '../pg/connect.ts';
import { referencedKeys } from '../pg/catalog.ts';
import { clientConninfo } from '../pg/connect.ts';
import { inSnapshot } from '../pg/snapshot.ts';
import type { RelationName } from '../pg/sql.ts';
import { hasForeignKey, POST_DATA_PASSES, postDataPasses, type PostDataPass } from '../pg/toc.ts';
import type { SplitCopyResult } from '../events.ts';
import { restoreFlags, together, type Context } from '../pipeline/context.ts';
import { copyTablesInRanges, splitCandidates, type SplitTable } from './ranges.ts';
import { excludeDataArgs, exactPattern, type DataPath, type TransferIo } from './data-path.ts';

/** Progress detail naming the tables copied in page ranges. */
const inRanges = (tables: RelationName[]): string => tables.map((t) => `${exactPattern(t)} in ranges`).join(', ');

export function streamDataPath(ctx: Context, io: TransferIo): Pick<DataPath, 'streamDatabase'> {
  const { options, tools } = ctx;
  /** Tables to copy in page ranges: none without a snapshot, with --split-table-size off, or with one job. */
  const rangeCandidates = async (db: string, snapshot: string | undefined, rangeJobs: number): Promise<SplitTable[]> =>
    snapshot !== undefined && options.splitTableBytes !== null && rangeJobs > 1 ? splitCandidates(ctx, db, snapshot, options.splitTableBytes) : [];
  return {
    async streamDatabase(db, { snapshot, excludeData = [], skipConstraints }) {
      const snap = snapshot ? [`--snapshot=${snapshot}`] : [];
      const noData = excludeDataArgs(excludeData);
      const deferred = new Set(excludeData.map(exactPattern));
      const dbArg = `--dbname=${clientConninfo(ctx.source, db.name)}`;
      const intoDb = `--dbname=${clientConninfo(ctx.target, db.name)}`;
      const restoreArgs = [...restoreFlags(ctx), '--create', `--dbname=${clientConninfo(ctx.target, ctx.target.endpoint.database)}`];
      const stem = io.location(db.name, 'regular');
      const fifo = `${stem}.fifo`;
      const postJobs = db.restoreJobs;
      const rangeJobs = Math.min(db.dumpJobs, postJobs);
      if (db.inPlace === true) {
        // Into the target's own database of that name, all or nothing: one transaction, no --create.
        await io.pipe(fifo, [...snap, dbArg], ['--single-transaction', ...restoreFlags(ctx), intoDb]);
        return [];
      }
      const split = (await rangeCandidates(db.name, snapshot, rangeJobs)).filter((t) => !deferred.has(exactPattern(t)));
      if (postJobs <= 1 && split.length === 0 && (skipConstraints?.size ?? 0) === 0) {
        await io.pipe(fifo, ['--create', ...noData, ...snap, dbArg], restoreArgs);
        return [];
      }
      // Indexes and constraints (post-data) are built by parallel jobs, which pg_restore cannot run
      // from a stream (nor leave entries out of it): their definitions (a few kB) go to a file first,
      // from the same snapshot.
      const postFile = `${stem}.post-data`;
      await mkdir(options.dumpRoot, { recursive: true });
      await io.run(tools.pgDump.path, ['-Fc', '--no-sync', '--section=post-data', ...snap, '-f', postFile, '-w', dbArg]);
      let copied: SplitCopyResult[] = [];
      if (split.length === 0) {
        await io.pipe(fifo, ['--create', '--section=pre-data', '--section=data', ...noData, ...snap, dbArg], restoreArgs);
      } else {
        // The big tables' rows go in parallel page ranges beside the stream of the other tables' data,
        // once the tables exist (pre-data) and before any index or constraint does (post-data).
        ctx.emit({ type: 'phase', db: db.name, phase: 'streaming', detail: inRanges(split) });
        await io.pipe(fifo, ['--create', '--section=pre-data', ...snap, dbArg], restoreArgs);
        const dataArgs = ['--section=data', ...excludeDataArgs([...excludeData, ...split]), ...snap, dbArg];
        await together(
          () => io.pipe(`${fifo}.data`, dataArgs, [...restoreFlags(ctx), intoDb]),
          async () => {
            copied = await copyTablesInRanges(ctx, db.name, snapshot ?? '', split, rangeJobs, `${stem}.ranges`);
          },
        );
      }
      const listing = await io.tocListing(postFile);
      const referenced = hasForeignKey(listing)
        ? await withClient(ctx.source, db.name, (c) => inSnapshot(c, snapshot, () => referencedKeys(c, ctx.sourceMajor)))
        : new Map<string, string>();
      const passes = postDataPasses(listing, skipConstraints ?? new Set(), referenced);
      const listFile = (pass: PostDataPass): string => `${postFile}.${pass}.list`;
      for (const pass of POST_DATA_PASSES) {
        const list = passes[pass];
        if (list === undefined) continue;
        await writeFile(listFile(pass), list);
        await io.run(tools.pgRestore.path, ['-j', String(postJobs), '-w', ...restoreFlags(ctx), `--use-list=${listFile(pass)}`, intoDb, postFile]);
      }
      for (const file of [postFile, ...POST_DATA_PASSES.map(listFile)]) await rm(file, { force: true });
      return copied;
    },
  };
}
