/**
 * The migration: state, preflight, tuning, globals, then every database through the two queues (the
 * source queue dumps and counts, the target queue restores, counts and verifies), and always the
 * revert of the tuning. The pipeline never prints: progress goes to onEvent, the outcome is the
 * returned summary.
 */
import { randomBytes } from 'node:crypto';
import os from 'node:os';
import PQueue from 'p-queue';
import type { MigrateOptions } from '../options.ts';
import { ControlConnections, terminateSessions, withClient, type Server } from '../pg/connect.ts';
import { prepareChildAuth } from '../pg/passfile.ts';
import { ChildRegistry } from '../proc/run.ts';
import { StateStore, type PairIdentity } from '../state/store.ts';
import { AbortError, ExitCode, MigrateError, errorMessage, isAborted } from '../errors.ts';
import type { DbResult, EventSink, RunSummary } from '../events.ts';
import { createDataPath, type DataPath } from '../transfer/data-path.ts';
import { dbName, secondsSince, type Context, type DatabaseJob } from './context.ts';
import { takeOverRun } from './lock.ts';
import { preflight } from './preflight.ts';
import { applyTuning, FSYNC_NOTICE, recoverTuning, revertTuning, targetTuning } from './tune.ts';
import { migrateGlobals } from './globals.ts';
import { checkDeferredSetUnchanged, chooseDataPath, dumpStep, restoreStep, streamStep } from './database.ts';
import { loadDeferred } from './deferred.ts';
import { applyRedo } from './redo.ts';
import { verifyPhase } from './verify.ts';

export interface RunHooks {
  signal?: AbortSignal;
  onEvent?: EventSink;
  env?: NodeJS.ProcessEnv;
  /** Where the run registers the client programs it starts (a second Ctrl-C kills them); its own otherwise. */
  children?: ChildRegistry;
}

/** The whole migration. */
export async function runMigration(options: MigrateOptions, hooks: RunHooks = {}): Promise<RunSummary> {
  const emit: EventSink = hooks.onEvent ?? (() => undefined);
  const env = hooks.env ?? process.env;
  const controller = new AbortController();
  const outer = hooks.signal;
  const onOuterAbort = (): void => {
    controller.abort();
  };
  if (outer?.aborted) controller.abort();
  outer?.addEventListener('abort', onOuterAbort, { once: true });
  const signal = controller.signal;
  const started = performance.now();
  const appName = `pg-migrate/${randomBytes(4).toString('hex')}`;
  const source: Server = { side: 'source', endpoint: options.from, appName };
  const target: Server = { side: 'target', endpoint: options.to, appName };
  const store = new StateStore(options.stateDir);
  const children = hooks.children ?? new ChildRegistry();
  const control = new ControlConnections();
  const summary: RunSummary = {
    databases: [],
    globals: { status: 'not run', errors: [], skippedExisting: 0 },
    tuning: { applied: false, reverted: false },
    regularElapsedSeconds: 0,
    elapsedSeconds: 0,
    exitCode: ExitCode.ok,
  };
  const auth = await prepareChildAuth([options.from, options.to], env, appName);
  const tuning = { applied: false };
  let releaseLock: (() => Promise<void>) | undefined;
  try {
    emit({ type: 'stage', stage: 'preflight', status: 'start' });
    // A fresh start keeps nothing of the earlier run but its tuning backup (reverted below).
    if (!options.fresh) await store.checkPair(pairOf(options), false);
    const pre = await preflight(options, source, target, options.fresh ? undefined : store, auth.env, os.availableParallelism());
    const pair: PairIdentity = { source: pre.sourceFacts.identity, target: pre.targetFacts.identity };
    for (const w of pre.warnings) emit({ type: 'warning', message: w });
    emit({ type: 'stage', stage: 'preflight', status: 'done' });

    await store.init();
    // One run per state directory: taken before anything of an earlier run (its tuning) is touched.
    releaseLock = await takeOverRun(store, source, target, emit);
    const recovered = await withClient(target, options.to.database, (c) => recoverTuning(c, store, pair.target));
    if (recovered === 'reverted') emit({ type: 'info', message: 'reverted the target tuning that an interrupted earlier run had left applied' });
    if (recovered === 'other-server') {
      throw new MigrateError(
        `${store.tuningPath} holds the settings to put back on another target server (an interrupted earlier run); revert them there by running pg-migrate against that target once, or remove the file if they were put back by hand`,
        ExitCode.stateMismatch,
      );
    }
    if (options.fresh) await store.wipe();
    await store.claim(pair);
    const { plan } = pre;
    await applyRedo(store, plan.databases, options.redoDb, emit);

    summary.parallelism = plan.parallelism;
    summary.compression = plan.compression;
    emit({
      type: 'plan',
      databases: plan.databases.map((d) => ({ name: d.name, sizeBytes: d.sizeBytes, deferred: d.deferred?.tables.length ?? 0 })),
      notMigrated: pre.notMigrated,
      parallelism: plan.parallelism,
      compression: plan.compression,
      toolsVersion: pre.tools.pgDump.version,
    });
    for (const nm of pre.notMigrated) summary.databases.push({ name: nm.name, sizeBytes: null, status: 'not migrated', reason: nm.reason, warnings: [] });

    const ctx: Context = {
      options,
      source,
      target,
      sourceMajor: pre.sourceFacts.major,
      targetMajor: pre.targetFacts.major,
      store,
      tools: pre.tools,
      plan,
      childEnv: auth.env,
      children,
      control,
      verifyQueue: new PQueue({ concurrency: plan.parallelism.verifyConcurrency }),
      signal,
      emit,
    };

    if (!options.disableDstOptimizations) {
      const builds = plan.parallelism.restoreJobs * plan.parallelism.restoreParallel;
      await withClient(target, options.to.database, async (c) => {
        const values = await targetTuning(c, builds);
        emit({
          type: 'stage',
          stage: 'tuning',
          status: 'start',
          message: Object.entries(values)
            .map(([k, v]) => `${k}=${v}`)
            .join(' '),
        });
        tuning.applied = true; // the backup is written before the first ALTER SYSTEM: revert from here on
        await applyTuning(c, store, pair.target, values);
      });
      summary.tuning.applied = true;
      emit({ type: 'stage', stage: 'tuning', status: 'done' });
    } else emit({ type: 'stage', stage: 'tuning', status: 'skipped' });

    if (options.migrateGlobals) await migrateGlobals(ctx, pre.sourceFacts.superuser, summary);
    else {
      summary.globals.status = 'skipped';
      emit({ type: 'stage', stage: 'globals', status: 'skipped' });
    }

    const results = await migrateDatabases(ctx, started, summary);
    summary.databases.push(...results);
  } catch (err) {
    if (err instanceof AbortError || signal.aborted) summary.exitCode = ExitCode.interrupted;
    else {
      summary.exitCode = err instanceof MigrateError ? err.exitCode : ExitCode.internal;
      summary.error = errorMessage(err);
    }
  } finally {
    outer?.removeEventListener('abort', onOuterAbort);
    if (isAborted(signal)) {
      // Children were stopped by their signal; end whatever still runs on either server.
      await Promise.all([terminateSessions(source), terminateSessions(target)]);
    }
    if (tuning.applied) {
      emit({ type: 'stage', stage: 'reverting', status: 'start' });
      try {
        summary.tuning.reverted = await withClient(target, options.to.database, (c) => revertTuning(c, store));
        summary.tuning.notice = FSYNC_NOTICE;
        emit({ type: 'stage', stage: 'reverting', status: 'done' });
      } catch (err) {
        const msg = `could not revert the target tuning (${errorMessage(err)}); the saved values are in ${store.tuningPath} and the next run puts them back`;
        emit({ type: 'stage', stage: 'reverting', status: 'failed', message: msg });
        summary.error = summary.error ? `${summary.error}\n${msg}` : msg;
        if (summary.exitCode === ExitCode.ok) summary.exitCode = ExitCode.internal;
      }
    }
    await control.close();
    await auth.dispose();
    await releaseLock?.();
  }
  summary.elapsedSeconds = secondsSince(started);
  if (summary.exitCode === ExitCode.ok) {
    if (signal.aborted) summary.exitCode = ExitCode.interrupted;
    else if (summary.globals.status === 'failed' || summary.databases.some((d) => d.status !== 'verified')) summary.exitCode = ExitCode.failed;
  }
  return summary;
}

/** The pair as the options name it (hosts and ports only: before connecting anywhere). */
const pairOf = (options: MigrateOptions): PairIdentity => ({
  source: { host: options.from.host, port: options.from.port, systemIdentifier: '' },
  target: { host: options.to.host, port: options.to.port, systemIdentifier: '' },
});

/**
 * The largest database first, then the others smallest first: the largest is the run's critical path
 * and starts at once, while the other slots finish the small databases early, one after another.
 */
export function processingOrder<T extends { sizeBytes: number | null }>(dbs: T[]): T[] {
  const ascending = [...dbs].sort((a, b) => (a.sizeBytes ?? 0) - (b.sizeBytes ?? 0));
  const largest = ascending.pop();
  return largest === undefined ? [] : [largest, ...ascending];
}

/** Every database through the two queues. */
async function migrateDatabases(ctx: Context, runStart: number, summary: RunSummary): Promise<DbResult[]> {
  const { plan, signal } = ctx;
  const sourceQueue = new PQueue({ concurrency: plan.parallelism.dumpParallel });
  const targetQueue = new PQueue({ concurrency: plan.parallelism.restoreParallel });
  const dataPath = createDataPath(ctx);
  const jobs: DatabaseJob[] = plan.databases.map((db) => ({
    plan: db,
    state: ctx.store.database(db.name),
    result: { name: db.name, sizeBytes: db.sizeBytes, status: 'failed', warnings: [], ...(db.deferred ? { deferredTables: db.deferred.tables.length } : {}) },
  }));
  let regularEnd = 0;
  await Promise.all(
    processingOrder(jobs.map((job) => ({ job, sizeBytes: job.plan.sizeBytes }))).map(async ({ job }) => {
      try {
        await migrateDatabase(ctx, job, dataPath, sourceQueue, targetQueue, runStart);
        regularEnd = Math.max(regularEnd, job.result.regularSeconds ?? 0);
      } catch (err) {
        regularEnd = Math.max(regularEnd, job.result.regularSeconds ?? 0);
        if (signal.aborted || err instanceof AbortError || (err as Error | undefined)?.name === 'AbortError') {
          job.result.status = 'interrupted';
          job.result.reason = 'interrupted';
        } else {
          job.result.status = 'failed';
          job.result.reason = errorMessage(err);
          ctx.emit({ type: 'phase', db: dbName(job), phase: 'failed', detail: job.result.reason });
        }
      }
    }),
  );
  summary.regularElapsedSeconds = regularEnd;
  // Reported in discovery order (smallest first), whatever order they ran in.
  return jobs.map((job) => job.result);
}

/** One database: its regular phase, then its deferred phase, each step on the queue of its side. */
async function migrateDatabase(ctx: Context, job: DatabaseJob, dataPath: DataPath, sourceQueue: PQueue, targetQueue: PQueue, runStart: number): Promise<void> {
  const { signal } = ctx;
  const db = dbName(job);
  await checkDeferredSetUnchanged(job);
  if ((await chooseDataPath(job)) === 'stream') {
    await sourceQueue.add(() => targetQueue.add(() => streamStep(ctx, job, dataPath), { signal }), { signal });
    await targetQueue.add(() => verifyPhase(ctx, job, 'regular'), { signal });
  } else {
    await sourceQueue.add(() => dumpStep(ctx, job, dataPath), { signal });
    ctx.emit({ type: 'phase', db, phase: 'waiting for target' });
    await targetQueue.add(() => restoreStep(ctx, job, dataPath), { signal });
  }
  job.result.regularSeconds = secondsSince(runStart);
  const deferred = job.plan.deferred;
  if (deferred) await sourceQueue.add(() => targetQueue.add(() => loadDeferred(ctx, job, deferred, dataPath), { signal }), { signal });
  job.result.totalSeconds = secondsSince(runStart);
  job.result.status = 'verified';
  ctx.emit({ type: 'phase', db, phase: 'verified' });
  if (ctx.options.removeDumps) {
    await dataPath.remove(db, 'regular');
    await dataPath.remove(db, 'deferred');
  }
}
