/**
 * The migration: state, preflight, tuning, globals, then every database through the two queues (the
 * source queue dumps and counts, the target queue restores, counts and verifies), and always the
 * revert of the tuning. The pipeline never prints: progress goes to onEvent, the outcome is the
 * returned summary. A few lines over 300: the run's lifecycle (set-up, queues, clean-up on every exit)
 * reads best in one place; each step lives in its own module.
 */
import { randomBytes } from 'node:crypto';
import { mkdir } from 'node:fs/promises';
import os from 'node:os';
import PQueue from 'p-queue';
import type { MigrateOptions } from '../options.ts';
import { ControlConnections, terminateSessions, withClient, type Server } from '../pg/connect.ts';
import { ChildRegistry } from '../proc/run.ts';
import { StateStore, type PairIdentity } from '../state/store.ts';
import { AbortError, ExitCode, MigrateError, PreflightError, errorMessage, isAborted, type ExitCodeValue } from '../errors.ts';
import type { DbResult, EventSink, RunSummary } from '../events.ts';
import { createDataPath, type DataPath } from '../transfer/data-path.ts';
import { dbName, secondsSince, type Context, type DatabaseJob } from './context.ts';
import { RunGuard } from './guard.ts';
import { preflight } from './preflight.ts';
import { checkStatePair } from './facts.ts';
import { migrateGlobals } from './globals.ts';
import { grantOwnerRoles } from './ownership.ts';
import { checkDeferredSetUnchanged, chooseDataPath, dumpStep, restoreStep, streamStep } from './database.ts';
import { loadDeferred } from './deferred.ts';
import { applyRedo } from './redo.ts';
import { verifyPhase } from './verify.ts';
import { subscribe } from './online.ts';
import { dropStaleReplication, prepareOnline } from './online-resume.ts';
import { Marker } from '../state/names.ts';
import { startSampler, type Sampler } from './sampler.ts';
import { tableChecks } from './table-checks.ts';
import { redactSecrets } from './globals-script.ts';
import { serverInfo } from './facts.ts';

export interface RunHooks {
  signal?: AbortSignal;
  onEvent?: EventSink;
  env?: NodeJS.ProcessEnv;
  /** Where the run registers the client programs it starts (a second Ctrl-C kills them); its own otherwise. */
  children?: ChildRegistry;
}

/** The whole migration. */
export async function runMigration(options: MigrateOptions, hooks: RunHooks = {}): Promise<RunSummary> {
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
  const servers = {
    source: { side: 'source', endpoint: options.from, appName } as Server,
    target: { side: 'target', endpoint: options.to, appName } as Server,
  };
  const { source, target } = servers;
  // On an interruption the queries of the run are cancelled at once on both servers (its children get
  // their signal from runTool); the steps then end, and the run cleans up after them.
  signal.addEventListener(
    'abort',
    () => {
      void Promise.all([terminateSessions(servers.source), terminateSessions(servers.target)]);
    },
    { once: true },
  );
  const store = new StateStore(options.stateDir);
  const children = hooks.children ?? new ChildRegistry();
  const control = new ControlConnections();
  const phases = new Map<string, string>();
  const emit: EventSink = (e) => {
    if (e.type === 'phase') phases.set(e.db, e.phase);
    hooks.onEvent?.(e);
  };
  const summary: RunSummary = {
    databases: [],
    globals: { status: 'not run', errors: [], skippedExisting: 0 },
    tuning: { applied: false, reverted: false },
    regularElapsedSeconds: 0,
    elapsedSeconds: 0,
    exitCode: ExitCode.ok,
    startedAt: new Date().toISOString(),
  };
  let guard: RunGuard | undefined;
  let sampler: Sampler | undefined;
  /** Why the run stopped when the target lock's session ended under it. */
  let lockLost: string | undefined;
  let lockLostCode: ExitCodeValue = ExitCode.internal;
  try {
    emit({ type: 'stage', stage: 'preflight', status: 'start' });
    // First the locks, the leftovers of a killed run and its tuning: before anything else can fail.
    guard = await RunGuard.open(options, store, servers, children, env, emit);
    guard.keepTargetLock(
      (why) => {
        emit({ type: 'warning', message: `the session holding the run's lock on the target ended (${why}); taking the lock again` });
      },
      (err) => {
        if (lockLost !== undefined || isAborted(signal)) return;
        lockLost = `the session holding the run's lock on the target ended and the lock could not be taken again (${errorMessage(err)}); the run stops, since two runs must never tune or write one target at once`;
        lockLostCode = err instanceof MigrateError ? err.exitCode : ExitCode.internal;
        emit({ type: 'warning', message: lockLost });
        controller.abort();
      },
    );
    // A fresh start keeps nothing of the earlier run (its tuning was reverted above).
    if (!options.fresh) {
      await store.init();
      // The state must be this pair's (by system identifiers) before preflight reads it.
      await checkStatePair(store, source, target);
    }
    const pre = await preflight(options, source, target, options.fresh ? undefined : store, guard.auth.env, os.availableParallelism());
    const pair: PairIdentity = { source: pre.sourceFacts.identity, target: pre.targetFacts.identity };
    for (const w of pre.warnings) emit({ type: 'warning', message: w });
    summary.servers = { source: serverInfo(pre.sourceFacts), target: serverInfo(pre.targetFacts) };
    emit({ type: 'stage', stage: 'preflight', status: 'done' });

    // Preflight checked it without creating anything (before --fresh discards the state; as root, a file system may still refuse).
    await mkdir(options.dumpRoot, { recursive: true }).catch((err: unknown) => {
      throw new PreflightError([`the dump root ${options.dumpRoot} cannot be created (${errorMessage(err)}); pass a writable --dump-root`]);
    });
    if (options.fresh) {
      await store.wipe();
      await store.init();
    }
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
    summary.skipped = pre.skipped;

    const ctx: Context = {
      options,
      source,
      target,
      sourceMajor: pre.sourceFacts.major,
      targetMajor: pre.targetFacts.major,
      targetSuperuser: pre.targetFacts.superuser,
      pair,
      store,
      tools: pre.tools,
      plan,
      childEnv: guard.auth.env,
      children,
      control,
      verifyQueue: new PQueue({ concurrency: plan.parallelism.verifyConcurrency }),
      signal,
      emit,
    };
    sampler = startSampler(ctx, phases);

    if (options.disableDstOptimizations) emit({ type: 'stage', stage: 'tuning', status: 'skipped' });
    else if (!(await loadLeft(store, plan.databases)))
      emit({
        type: 'stage',
        stage: 'tuning',
        status: 'skipped',
        message: plan.databases.length === 0 ? 'no database to migrate' : 'every database already verified',
      });
    else if (!pre.targetFacts.alterSystem.ok) {
      summary.tuning.notice = `tuning skipped: ${pre.targetFacts.alterSystem.why ?? ''}`;
      emit({ type: 'stage', stage: 'tuning', status: 'skipped', message: pre.targetFacts.alterSystem.why });
    } else await guard.tune(store, target, pair.target, plan.parallelism.restoreJobs * plan.parallelism.restoreParallel, summary, emit);

    if (options.migrateGlobals) await migrateGlobals(ctx, { source: pre.sourceFacts.superuser, target: pre.targetFacts.superuser }, summary);
    else {
      summary.globals.status = 'skipped';
      emit({ type: 'stage', stage: 'globals', status: 'skipped' });
    }

    if (pre.ownerGrants.length > 0) {
      guard.grantedRoles = true; // before the first grant: each is recorded before it is made
      const granted = await withClient(target, target.endpoint.database, (c) => grantOwnerRoles(c, store, pre.targetFacts.major, pre.ownerGrants));
      if (granted.length > 0)
        emit({ type: 'info', message: `granted the target user membership in ${granted.join(', ')} for the run (to give objects their owners)` });
    }

    const results = await migrateDatabases(ctx, started, summary, phases);
    summary.databases.push(...results);
  } catch (err) {
    if (err instanceof AbortError || isAborted(signal)) summary.exitCode = ExitCode.interrupted;
    else {
      summary.exitCode = err instanceof MigrateError ? err.exitCode : ExitCode.internal;
      summary.error = redactSecrets(errorMessage(err));
    }
  } finally {
    outer?.removeEventListener('abort', onOuterAbort);
    await sampler?.stop();
    await control.close();
    if (guard) await guard.close(store, servers, children, isAborted(signal), summary, emit);
    else await children.settled();
  }
  summary.elapsedSeconds = secondsSince(started);
  summary.endedAt = new Date().toISOString();
  if (lockLost !== undefined && (summary.exitCode === ExitCode.ok || summary.exitCode === ExitCode.interrupted)) {
    // Not the operator's interruption: another run has the target (exit 4), or it stayed away (exit 5).
    summary.exitCode = lockLostCode;
    summary.error = summary.error === undefined ? lockLost : `${lockLost}\n${summary.error}`;
  }
  if (summary.exitCode === ExitCode.ok) {
    if (isAborted(signal)) summary.exitCode = ExitCode.interrupted;
    else if (summary.globals.status === 'failed' || summary.databases.some((d) => d.status !== 'verified')) summary.exitCode = ExitCode.failed;
  }
  return summary;
}

/** Whether some database still has data to load (not verified, or its deferred tables not): only then is the target tuned. */
async function loadLeft(store: StateStore, databases: readonly { name: string; deferred?: unknown }[]): Promise<boolean> {
  for (const db of databases) {
    const s = store.database(db.name);
    if ((await s.marker(Marker.verified)) === undefined) return true;
    if (db.deferred !== undefined && (await s.marker(Marker.deferredVerified)) === undefined) return true;
  }
  return false;
}

/**
 * The largest database first, then the others smallest first: the largest is the run's critical path
 * and starts at once, while the other slots finish the small databases early, one after another.
 */
export function processingOrder<T extends { sizeBytes: number | null }>(dbs: T[]): T[] {
  const ascending = [...dbs].sort((a, b) => (a.sizeBytes ?? 0) - (b.sizeBytes ?? 0));
  const largest = ascending.pop();
  return largest === undefined ? [] : [largest, ...ascending];
}

/** Every database through the two queues; `phases` holds the step each database was at (a failure names it). */
async function migrateDatabases(ctx: Context, runStart: number, summary: RunSummary, phases: Map<string, string>): Promise<DbResult[]> {
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
        const step = phases.get(dbName(job)) ?? 'queued';
        if (isAborted(signal)) {
          job.result.status = 'interrupted';
          job.result.reason = `interrupted while ${step}`;
        } else {
          // A failure is named with its step and the server's or the program's own words.
          job.result.status = 'failed';
          // A server's or a program's words may quote a statement: never a password or its hash in a report.
          job.result.reason = redactSecrets(`${step}: ${errorMessage(err)}`);
          await job.state.setDoc('last_error.json', { at: new Date().toISOString(), step, message: errorMessage(err) }).catch(() => undefined);
          ctx.emit({ type: 'phase', db: dbName(job), phase: 'failed', detail: job.result.reason });
        }
      }
      const phasesDone = job.plan.deferred ? (['regular', 'deferred'] as const) : (['regular'] as const);
      job.result.tables = await tableChecks(job.state, ctx.options.fastVerify, [...phasesDone]).catch(() => undefined);
    }),
  );
  summary.regularElapsedSeconds = regularEnd;
  // Reported in discovery order (smallest first), whatever order they ran in.
  return jobs.map((job) => job.result);
}

/**
 * A step on a queue. No AbortSignal is given to p-queue: it would reject the add() of a running step
 * at once while the step (and its children) still runs; a step that has not started yet sees the
 * abort and does not start, and one that runs ends on its own (its children are stopped, its
 * queries cancelled), so awaiting add() means the step is over.
 */
function step<T>(ctx: Context, queue: PQueue, fn: () => Promise<T>): Promise<T> {
  return queue.add(async () => {
    if (isAborted(ctx.signal)) throw new AbortError();
    return fn();
  });
}

/** One database: its regular phase, then its deferred phase, each step on the queue of its side (or both). */
async function migrateDatabase(ctx: Context, job: DatabaseJob, dataPath: DataPath, sourceQueue: PQueue, targetQueue: PQueue, runStart: number): Promise<void> {
  const db = dbName(job);
  const onBoth = <T>(fn: () => Promise<T>): Promise<T> => step(ctx, sourceQueue, () => step(ctx, targetQueue, fn));
  await checkDeferredSetUnchanged(job);
  const online = ctx.options.online ? await prepareOnline(ctx, job) : 'copy';
  if (!ctx.options.online) await dropStaleReplication(ctx, job);
  if (online !== 'copy') {
    job.result.totalSeconds = secondsSince(runStart);
    job.result.status = 'verified';
    job.result.replicating = online === 'replicating';
    ctx.emit({ type: 'phase', db, phase: 'verified', detail: online });
    return;
  }
  if ((await chooseDataPath(job)) === 'stream') {
    await onBoth(() => streamStep(ctx, job, dataPath));
    await step(ctx, targetQueue, () => verifyPhase(ctx, job, 'regular'));
  } else {
    await step(ctx, sourceQueue, () => dumpStep(ctx, job, dataPath));
    ctx.emit({ type: 'phase', db, phase: 'waiting for target' });
    await step(ctx, targetQueue, () => restoreStep(ctx, job, dataPath));
  }
  if (ctx.options.online) {
    ctx.emit({ type: 'phase', db, phase: 'subscribing' });
    await step(ctx, targetQueue, () => subscribe(ctx, job));
    job.result.replicating = true;
  }
  job.result.regularSeconds = secondsSince(runStart);
  const deferred = job.plan.deferred;
  if (deferred) await onBoth(() => loadDeferred(ctx, job, deferred, dataPath));
  job.result.totalSeconds = secondsSince(runStart);
  job.result.status = 'verified';
  await job.state.removeDoc('last_error.json');
  ctx.emit({ type: 'phase', db, phase: 'verified' });
  if (ctx.options.removeDumps) {
    await dataPath.remove(db, 'regular');
    await dataPath.remove(db, 'deferred');
  }
}
