/**
 * The regular phase of one database: dump (source queue) and restore (target queue) on the file path,
 * or both at once on the stream path; the source counted in the dump's snapshot. The target database
 * is created by pg_restore --create, and its oid recorded as soon as it exists: a later run drops and
 * recreates only a database whose oid matches, and never one that verified. Slightly over 300 lines:
 * the ownership rules of the target database and the steps that rely on them stay together.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { oneRow, withClient } from '../pg/connect.ts';
import { quoteIdent } from '../pg/sql.ts';
import { withExportedSnapshot, type WithSnapshot } from '../pg/snapshot.ts';
import type { RelationName } from '../pg/sql.ts';
import { isDirectory, type MarkerInfo } from '../state/store.ts';
import { Marker } from '../state/names.ts';
import { MigrateError, errorMessage, isAborted } from '../errors.ts';
import type { DataPath } from '../transfer/data-path.ts';
import { addForeignKeysNotValid, deferredForeignKeys } from './deferred.ts';
import { clearCounts, countSource, ensureSourceCounts, verifyPhase } from './verify.ts';
import { dbName, secondsSince, together, type Context, type DatabaseJob } from './context.ts';

/** Files or stream for the regular phase. Dump files an earlier run finished and nothing restored yet are kept: it stays on files. */
export async function chooseDataPath(job: DatabaseJob): Promise<'files' | 'stream'> {
  const dumped = await job.state.marker(Marker.dumped);
  if (dumped && dumped.streamed !== true && !(await job.state.marker(Marker.restored))) return 'files';
  return job.plan.dataPath;
}

/** Where the regular phase reads the source: the job's snapshot (online: a slot's), or one exported now. */
const readSource = (ctx: Context, job: DatabaseJob): WithSnapshot => job.snapshot ?? ((fn) => withExportedSnapshot(ctx.source, dbName(job), fn));

/** Tables whose data the regular phase leaves out: the deferred ones, and (online) those copied at cutover. */
const leftOut = (job: DatabaseJob): RelationName[] => [...(job.plan.deferred?.tables ?? []), ...(job.notCopied ?? [])];

/** The deferred tables' keys, sorted: what the `dumped` marker records of the regular phase. */
export const deferredKeys = (job: DatabaseJob): string[] => [...(job.plan.deferred?.keys ?? [])].sort();

const describeKeys = (keys: string[]): string => (keys.length === 0 ? 'none' : keys.join(', '));

/**
 * A database whose regular phase verified is never redone, dropped or emptied unless the operator
 * names it with --redo-db: when this run defers other tables of it than the run that migrated it, it
 * is left alone and the run says what to do.
 */
export async function checkDeferredSetUnchanged(job: DatabaseJob): Promise<void> {
  const db = dbName(job);
  const dumped = await job.state.marker(Marker.dumped);
  const recorded = (dumped?.deferred as string[] | undefined) ?? [];
  if (!dumped || !(await job.state.marker(Marker.verified)) || JSON.stringify(recorded) === JSON.stringify(deferredKeys(job))) return;
  throw new MigrateError(
    `the --delay-table-data tables of ${db} differ from those of the run that migrated it (then: ${describeKeys(recorded)}; now: ${describeKeys(deferredKeys(job))}). ` +
      `${db} verified on the target and may be in use, so it was left as it is: run with the --delay-table-data of that run, or migrate ${db} afresh (its target copy dropped) with --redo-db ${JSON.stringify(db)}`,
  );
}

/**
 * The `dumped` marker, unless the regular phase it records left other tables empty than this run
 * would fill (other --delay-table-data tables, before the database verified): then nothing of that
 * phase can be kept.
 */
async function regularPhaseMarker(ctx: Context, job: DatabaseJob): Promise<MarkerInfo | undefined> {
  const db = dbName(job);
  const dumped = await job.state.marker(Marker.dumped);
  if (dumped && JSON.stringify(dumped.deferred ?? []) !== JSON.stringify(deferredKeys(job))) {
    await checkDeferredSetUnchanged(job);
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
  await readSource(
    ctx,
    job,
  )(async (snapshot) => {
    emit({ type: 'phase', db, phase: 'dumping' });
    const t0 = performance.now();
    // The counts read the same snapshot while the dump runs (concurrent scans of a table share reads).
    await together(
      async () => {
        await dataPath.dumpDatabase(job.plan, { snapshot, excludeData: leftOut(job) });
        job.result.dumpSeconds = secondsSince(t0);
      },
      () => countSource(ctx, job, 'regular', snapshot),
    );
    await job.state.setMarker(Marker.dumped, { seconds: job.result.dumpSeconds, deferred: deferredKeys(job) });
  });
}

/** The oid of the target's database of that name, or undefined when there is none. */
async function targetOid(ctx: Context, db: string): Promise<string | undefined> {
  const r = await ctx.control.query<{ oid: string }>(ctx.target, 'select oid::text as oid from pg_database where datname = $1', [db]);
  return r.rows[0]?.oid;
}

/** The oid this migration recorded for the database it created on the target, if any. */
const ownedOid = (started: MarkerInfo | undefined): string | undefined => (typeof started?.oid === 'string' ? started.oid : undefined);

/**
 * Drops the database this migration created (its oid must still be the one recorded), ending the
 * sessions in it first. Never the target's --to-db, never a database that verified.
 */
async function dropOwnDatabase(ctx: Context, job: DatabaseJob, oid: string): Promise<void> {
  const db = dbName(job);
  if (db === ctx.target.endpoint.database) throw new MigrateError(`refusing to drop ${db}: it is the target's --to-db`);
  if (await job.state.marker(Marker.verified))
    throw new MigrateError(`refusing to drop ${db}: it verified on the target and may be in use; name it with --redo-db to migrate it afresh`);
  if ((await targetOid(ctx, db)) !== oid)
    throw new MigrateError(`refusing to drop ${db}: the target's ${db} is no longer the database this migration created (oid ${oid})`);
  ctx.emit({ type: 'info', message: `${db}: dropping the database this migration created on the target (oid ${oid}) to restore it afresh` });
  await ctx.control.query(ctx.target, `alter database ${quoteIdent(db)} allow_connections false`).catch(() => undefined);
  await ctx.control.query(ctx.target, `alter database ${quoteIdent(db)} is_template false`).catch(() => undefined);
  await ctx.control.query(ctx.target, 'select pg_terminate_backend(pid) from pg_stat_activity where datname = $1 and pid <> pg_backend_pid()', [db]);
  await ctx.control.query(ctx.target, `drop database if exists ${quoteIdent(db)}${ctx.targetMajor >= 13 ? ' with (force)' : ''}`);
}

/**
 * Before a restore that creates the database: a target database of that name is dropped only when
 * this migration proved it created it (recorded oid); any other is refused with what to do.
 */
async function prepareTargetDatabase(ctx: Context, job: DatabaseJob): Promise<void> {
  const db = dbName(job);
  const oid = await targetOid(ctx, db);
  if (oid !== undefined) {
    const started = await job.state.marker(Marker.restoreStarted);
    const owned = ownedOid(started);
    if (owned === oid) await dropOwnDatabase(ctx, job, oid);
    else if (started && owned === undefined && (await createdSinceFloor(ctx, db, started))) {
      ctx.emit({
        type: 'info',
        message: `${db}: the database was created by this migration's interrupted restore (before its oid could be recorded); taking it as ours`,
      });
      await job.state.setMarker(Marker.restoreStarted, { ...started, oid });
      await dropOwnDatabase(ctx, job, oid);
    } else if (started && owned === undefined) {
      throw new MigrateError(
        `database ${JSON.stringify(db)} exists on the target; this migration started restoring it but could not record that it created it (it was stopped at that very moment, or the state was written by an earlier pg-migrate), so it is left alone. ` +
          `If the target's ${db} holds nothing you need, drop it there (DROP DATABASE ${quoteIdent(db)}) and run again; otherwise leave it out with --exclude-db`,
      );
    } else if (owned !== undefined) {
      throw new MigrateError(
        `database ${JSON.stringify(db)} on the target is not the one this migration created (that had oid ${owned}, this one has oid ${oid}: created or restored by hand since), so it is left alone; drop it there or leave it out with --exclude-db`,
      );
    } else {
      throw new MigrateError(
        `database ${JSON.stringify(db)} already exists on the target and was not created by this migration; drop it there or leave it out with --exclude-db`,
      );
    }
  }
  // The transaction counter before the restore: a database of this name whose catalog row was written
  // by a later transaction was created by this restore even if the run died before it recorded the oid.
  const floor = oneRow(await ctx.control.query<{ xid: string }>(ctx.target, 'select (txid_current() % 4294967296)::text as xid'));
  await job.state.setMarker(Marker.restoreStarted, { xidFloor: floor.xid });
}

/**
 * Whether the target's database of that name was created after this migration's restore began:
 * none of that name existed when the restore started (checked just before), and its pg_database row
 * was written by a transaction newer than the one recorded then (a frozen row proves nothing).
 */
async function createdSinceFloor(ctx: Context, db: string, started: MarkerInfo): Promise<boolean> {
  if (typeof started.xidFloor !== 'string' || !/^\d+$/.test(started.xidFloor)) return false;
  const r = await ctx.control.query<{ newer: boolean }>(
    ctx.target,
    `select xmin::text not in ('0', '1', '2') and age(xmin) < age($2::text::xid) as newer from pg_database where datname = $1`,
    [db, started.xidFloor],
  );
  return r.rows[0]?.newer === true;
}

/**
 * Runs a restore that creates the database (pg_restore --create) and records the new database's oid
 * as soon as it shows on the target, so that the ownership is proved even when the restore fails. A
 * restore that failed because the database already existed created nothing: no oid is kept then.
 */
async function restoreCreating<T>(ctx: Context, job: DatabaseJob, restore: () => Promise<T>): Promise<T> {
  const db = dbName(job);
  const watch = { stopped: false, recorded: undefined as string | undefined };
  const watcher = (async () => {
    while (!watch.stopped && !isAborted(ctx.signal)) {
      const oid = await targetOid(ctx, db).catch(() => undefined);
      if (oid !== undefined) {
        await job.state.setMarker(Marker.restoreStarted, { oid });
        watch.recorded = oid;
        return;
      }
      await sleep(20);
    }
  })();
  let failure: unknown;
  try {
    return await restore();
  } catch (err) {
    failure = err;
    throw err;
  } finally {
    watch.stopped = true;
    await watcher.catch(() => undefined);
    if (failure !== undefined && /database ".*" already exists/.test(errorMessage(failure))) {
      if (watch.recorded !== undefined) await job.state.setMarker(Marker.restoreStarted, {});
    } else if (watch.recorded === undefined) {
      // Created by the restore that just ended (none of that name existed before it started).
      const oid = await targetOid(ctx, db).catch(() => undefined);
      if (oid !== undefined) await job.state.setMarker(Marker.restoreStarted, { oid });
    }
  }
}

/** The restore marker, if the restore is done and the database still there on the target (and still ours). */
async function restoreDone(ctx: Context, job: DatabaseJob): Promise<MarkerInfo | undefined> {
  const db = dbName(job);
  const done = await job.state.marker(Marker.restored);
  if (!done || job.plan.inPlace === true) return done;
  const oid = await targetOid(ctx, db);
  if (oid === undefined) {
    ctx.emit({ type: 'warning', db, message: `${db} was restored by an earlier run but is gone from the target; restoring it again` });
    return undefined;
  }
  const owned = ownedOid(await job.state.marker(Marker.restoreStarted));
  if (owned !== undefined && owned !== oid) {
    throw new MigrateError(
      `database ${JSON.stringify(db)} on the target is not the one this migration restored (that had oid ${owned}, this one has oid ${oid}: created or restored by hand since), so it is left alone; drop it there or leave it out with --exclude-db`,
    );
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
    await restoreCreating(ctx, job, async () => {
      if (plan) {
        const fks = await deferredForeignKeys(ctx, job, plan);
        await dataPath.restoreDatabase(job.plan, { skipConstraints: new Set(fks.map((f) => f.oid)) });
        await withClient(ctx.target, dbName(job), (c) => addForeignKeysNotValid(c, fks));
      } else await dataPath.restoreDatabase(job.plan);
    });
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
  const inPlace = job.plan.inPlace === true;
  if (!inPlace) await prepareTargetDatabase(ctx, job);
  const plan = job.plan.deferred;
  const fks = plan ? await deferredForeignKeys(ctx, job, plan) : [];
  const creating = <T>(restore: () => Promise<T>): Promise<T> => (inPlace ? restore() : restoreCreating(ctx, job, restore));
  await readSource(
    ctx,
    job,
  )(async (snapshot) => {
    emit({ type: 'phase', db, phase: 'streaming' });
    const t0 = performance.now();
    await together(
      () =>
        creating(async () => {
          const split = await dataPath.streamDatabase(job.plan, { snapshot, excludeData: leftOut(job), skipConstraints: new Set(fks.map((f) => f.oid)) });
          if (split.length > 0) job.result.splitTables = split;
          if (fks.length > 0) await withClient(ctx.target, db, (c) => addForeignKeysNotValid(c, fks));
          job.result.restoreSeconds = secondsSince(t0);
        }),
      () => countSource(ctx, job, 'regular', snapshot),
    );
    await job.state.setMarker(Marker.dumped, { seconds: 0, deferred: deferredKeys(job), streamed: true });
    await job.state.setMarker(Marker.restored, { seconds: job.result.restoreSeconds });
  });
}
