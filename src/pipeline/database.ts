/**
 * The regular phase of one database: dump (source queue) and restore (target queue) on the file path,
 * or both at once on the stream path; the source counted in the dump's snapshot.
 */
import { withClient } from '../pg/connect.ts';
import { quoteIdent } from '../pg/sql.ts';
import { withExportedSnapshot } from '../pg/snapshot.ts';
import { isDirectory, type MarkerInfo } from '../state/store.ts';
import { Marker } from '../state/names.ts';
import { MigrateError } from '../errors.ts';
import type { DataPath, DataPart } from '../transfer/data-path.ts';
import { addForeignKeysNotValid, deferredForeignKeys } from './deferred.ts';
import { clearCounts, countSource, ensureSourceCounts, verifyPhase } from './verify.ts';
import { dbName, secondsSince, together, type Context, type DatabaseJob } from './context.ts';

/**
 * Files or stream for one phase of a database (regular, or the deferred data). Dump files an earlier
 * run finished and nothing restored yet are kept: that phase stays on files.
 */
export async function chooseDataPath(job: DatabaseJob, part: DataPart): Promise<'files' | 'stream'> {
  const [dumpedMarker, doneMarker] = part === 'regular' ? [Marker.dumped, Marker.restored] : [Marker.deferredDumped, Marker.deferredLoaded];
  const dumped = await job.state.marker(dumpedMarker);
  if (dumped && dumped.streamed !== true && !(await job.state.marker(doneMarker))) return 'files';
  return job.plan.dataPath;
}

/** The deferred tables' keys, sorted: what the `dumped` marker records of the regular phase. */
const deferredKeys = (job: DatabaseJob): string[] => [...(job.plan.deferred?.keys ?? [])].sort();

/**
 * The `dumped` marker, unless the regular phase it records left other tables empty than this run
 * would fill (other --delay-table-data tables): then nothing of that phase can be kept.
 */
async function regularPhaseMarker(ctx: Context, job: DatabaseJob): Promise<MarkerInfo | undefined> {
  const db = dbName(job);
  const dumped = await job.state.marker(Marker.dumped);
  if (dumped && JSON.stringify(dumped.deferred ?? []) !== JSON.stringify(deferredKeys(job))) {
    ctx.emit({ type: 'warning', db, message: `the --delay-table-data tables of ${db} differ from those of the earlier run; migrating ${db} afresh` });
    await job.state.forget();
    return undefined;
  }
  return dumped;
}

/** Source queue, file path: the dump and the source counts, in one exported snapshot. */
export async function dumpStep(ctx: Context, job: DatabaseJob, dataPath: DataPath): Promise<void> {
  const { emit } = ctx;
  const db = dbName(job);
  let dumped = await regularPhaseMarker(ctx, job);
  if (dumped && !(await job.state.marker(Marker.restored)) && !(await isDirectory(dataPath.location(db, 'regular')))) {
    emit({ type: 'warning', db, message: `the dump of ${db} is gone from ${dataPath.location(db, 'regular')}; dumping it again` });
    dumped = undefined;
  }
  if (dumped) {
    job.result.dumpSeconds = dumped.seconds;
    await ensureSourceCounts(ctx, job, 'regular');
    return;
  }
  await job.state.clearFrom(Marker.dumped);
  await clearCounts(job, 'src', 'both');
  await clearCounts(job, 'dst', 'both');
  await withExportedSnapshot(ctx.source, db, async (snapshot) => {
    emit({ type: 'phase', db, phase: 'dumping' });
    const t0 = performance.now();
    // The counts read the same snapshot while the dump runs (concurrent scans of a table share reads).
    await together(
      async () => {
        await dataPath.dumpDatabase(job.plan, { snapshot, excludeData: job.plan.deferred?.tables ?? [] });
        job.result.dumpSeconds = secondsSince(t0);
      },
      () => countSource(ctx, job, 'regular', snapshot),
    );
    await job.state.setMarker(Marker.dumped, { seconds: job.result.dumpSeconds, deferred: deferredKeys(job) });
  });
}

/** Whether a database exists on the target. */
async function targetDatabaseExists(ctx: Context, db: string): Promise<boolean> {
  const r = await ctx.control.query(ctx.target, 'select 1 from pg_database where datname = $1', [db]);
  return (r.rowCount ?? 0) > 0;
}

/** Drops a database this migration created earlier (all sessions in it are ended first). */
async function dropTargetDatabase(ctx: Context, db: string): Promise<void> {
  if (db === ctx.target.endpoint.database) throw new MigrateError(`refusing to drop ${db}: it is the target's --to-db`);
  await ctx.control.query(ctx.target, `alter database ${quoteIdent(db)} allow_connections false`).catch(() => undefined);
  await ctx.control.query(ctx.target, 'select pg_terminate_backend(pid) from pg_stat_activity where datname = $1 and pid <> pg_backend_pid()', [db]);
  await ctx.control.query(ctx.target, `drop database if exists ${quoteIdent(db)}${ctx.targetMajor >= 13 ? ' with (force)' : ''}`);
}

/** A target database this run may (re)create: absent, or created by this migration (then dropped). */
async function prepareTargetDatabase(ctx: Context, job: DatabaseJob): Promise<void> {
  const db = dbName(job);
  if (await targetDatabaseExists(ctx, db)) {
    if (!(await job.state.marker(Marker.restoreStarted))) {
      throw new MigrateError(
        `database ${JSON.stringify(db)} already exists on the target and was not created by this migration; drop it there or leave it out with --exclude-db`,
      );
    }
    ctx.emit({ type: 'info', message: `${db}: dropping the partly restored database on the target to restore it afresh` });
    await dropTargetDatabase(ctx, db);
  }
  await job.state.setMarker(Marker.restoreStarted);
}

/** The restore marker, if the restore is done and the database still there on the target. */
async function restoreDone(ctx: Context, job: DatabaseJob): Promise<MarkerInfo | undefined> {
  const db = dbName(job);
  const done = await job.state.marker(Marker.restored);
  if (done && !(await targetDatabaseExists(ctx, db))) {
    ctx.emit({ type: 'warning', db, message: `${db} was restored by an earlier run but is gone from the target; restoring it again` });
    return undefined;
  }
  return done;
}

/**
 * Target queue, file path: the restore (deferred tables' foreign keys left out and added NOT VALID
 * after it: they cannot be validated before the deferred data is in), then the verification.
 */
export async function restoreStep(ctx: Context, job: DatabaseJob, dataPath: DataPath): Promise<void> {
  const done = await restoreDone(ctx, job);
  if (done) job.result.restoreSeconds = done.seconds;
  else {
    await job.state.clearFrom(Marker.restored);
    await clearCounts(job, 'dst', 'both');
    await prepareTargetDatabase(ctx, job);
    ctx.emit({ type: 'phase', db: dbName(job), phase: 'restoring' });
    const t0 = performance.now();
    const plan = job.plan.deferred;
    if (plan) {
      const fks = await deferredForeignKeys(ctx, job, plan);
      await dataPath.restoreDatabase(job.plan, { skipConstraints: new Set(fks.map((f) => f.oid)) });
      await withClient(ctx.target, dbName(job), (c) => addForeignKeysNotValid(c, fks));
    } else await dataPath.restoreDatabase(job.plan);
    job.result.restoreSeconds = secondsSince(t0);
    await job.state.setMarker(Marker.restored, { seconds: job.result.restoreSeconds });
  }
  await verifyPhase(ctx, job, 'regular');
}

/**
 * Source and target queue at once, stream path: dump and restore run together through a FIFO; the
 * source counts are taken in the snapshot the dump used. Deferred tables get no data, and their
 * foreign keys are left out of the restore and added NOT VALID after it.
 */
export async function streamStep(ctx: Context, job: DatabaseJob, dataPath: DataPath): Promise<void> {
  const { emit } = ctx;
  const db = dbName(job);
  const done = (await regularPhaseMarker(ctx, job)) ? await restoreDone(ctx, job) : undefined;
  if (done) {
    job.result.restoreSeconds = done.seconds;
    await ensureSourceCounts(ctx, job, 'regular');
    return;
  }
  await job.state.clearFrom(Marker.dumped);
  await clearCounts(job, 'src', 'both');
  await clearCounts(job, 'dst', 'both');
  await prepareTargetDatabase(ctx, job);
  const plan = job.plan.deferred;
  const fks = plan ? await deferredForeignKeys(ctx, job, plan) : [];
  await withExportedSnapshot(ctx.source, db, async (snapshot) => {
    emit({ type: 'phase', db, phase: 'streaming' });
    const t0 = performance.now();
    await together(
      async () => {
        const split = await dataPath.streamDatabase(job.plan, { snapshot, excludeData: plan?.tables ?? [], skipConstraints: new Set(fks.map((f) => f.oid)) });
        if (split.length > 0) job.result.splitTables = split;
        if (fks.length > 0) await withClient(ctx.target, db, (c) => addForeignKeysNotValid(c, fks));
        job.result.restoreSeconds = secondsSince(t0);
      },
      () => countSource(ctx, job, 'regular', snapshot),
    );
    await job.state.setMarker(Marker.dumped, { seconds: 0, deferred: deferredKeys(job), streamed: true });
    await job.state.setMarker(Marker.restored, { seconds: job.result.restoreSeconds });
  });
}
