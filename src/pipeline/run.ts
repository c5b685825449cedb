import { randomBytes } from 'node:crypto';
import os from 'node:os';
import PQueue from 'p-queue';
import { autoDataPath, type MigrateOptions } from '../options.ts';
import { closeControlConnections, terminateRunSessions, withClient, type Server, describePgError } from '../pg/connect.ts';
import { dbnameConninfo, prepareChildAuth } from '../pg/passfile.ts';
import { runTool } from '../proc/run.ts';
import { RUN_LOCK, StateStore, isDirectory, type MarkerInfo, type PairIdentity } from '../state/store.ts';
import { AbortError, ExitCode, MigrateError, errorMessage } from '../errors.ts';
import type { DbResult, EventSink, RunSummary } from '../events.ts';
import { together, type Context } from './context.ts';
import { preflight, type PreflightResult } from './preflight.ts';
import { applyTuning, FSYNC_NOTICE, recoverTuning, revertTuning, targetTuning } from './tune.ts';
import { applyGlobals, filterGlobals, splitStatements } from './globals.ts';
import { aggregateKeys, compareCounts, countTables, sortKeys } from './counts.ts';
import { databaseExists, dropTargetDatabase, fileDataPath, type DataPath } from './transfer.ts';
import type { SourceDatabase } from './discover.ts';
import type { DelayedPlan } from './delayed-plan.ts';
import { addForeignKeysNotValid, deferredForeignKeys, runDelayedDump, runDelayedTarget } from './delayed.ts';
import { countsVariant, type CountsVariant } from '../state/names.ts';
import { matchesAny } from '../patterns.ts';

export interface RunHooks {
  signal?: AbortSignal;
  onEvent?: EventSink;
  env?: NodeJS.ProcessEnv;
}

const seconds = (startMs: number): number => Math.round((performance.now() - startMs) / 10) / 100;

/** Exported snapshot held open on the source while a dump and its counts run. */
export async function withExportedSnapshot<T>(server: Server, db: string, fn: (snapshot: string | undefined) => Promise<T>): Promise<T> {
  return withClient(server, db, async (c) => {
    let snapshot: string | undefined;
    try {
      // The exporting transaction sits idle while others use its snapshot: a server-side idle timeout must not end it.
      await c.query(`select set_config('idle_in_transaction_session_timeout', '0', false) where current_setting('server_version_num')::int >= 90600`);
      await c.query('begin isolation level repeatable read read only');
      snapshot = (await c.query<{ s: string }>('select pg_export_snapshot() as s')).rows[0]!.s;
    } catch {
      await c.query('rollback').catch(() => undefined);
      snapshot = undefined; // e.g. a standby before 10: dump and counts take their own snapshots
    }
    try {
      return await fn(snapshot);
    } finally {
      await c.query('rollback').catch(() => undefined);
    }
  });
}

/** The whole migration. Never prints: progress goes to onEvent, the outcome is the returned summary. */
export async function runMigration(options: MigrateOptions, hooks: RunHooks = {}): Promise<RunSummary> {
  const emit: EventSink = hooks.onEvent ?? (() => undefined);
  const env = hooks.env ?? process.env;
  const controller = new AbortController();
  const outer = hooks.signal;
  const onOuterAbort = (): void => controller.abort();
  if (outer?.aborted) controller.abort();
  outer?.addEventListener('abort', onOuterAbort, { once: true });
  const signal = controller.signal;
  const started = performance.now();
  const appName = `pg-migrate/${randomBytes(4).toString('hex')}`;
  const source: Server = { side: 'source', endpoint: options.from, appName };
  const target: Server = { side: 'target', endpoint: options.to, appName };
  const store = new StateStore(options.stateDir);
  const summary: RunSummary = {
    databases: [],
    globals: { status: 'not run', errors: [], skippedExisting: 0 },
    tuning: { applied: false, reverted: false },
    regularElapsedSeconds: 0,
    elapsedSeconds: 0,
    exitCode: ExitCode.ok,
  };
  const auth = await prepareChildAuth([options.from, options.to], env, appName);
  let tuned = false;
  let ownsLock = false;
  try {
    emit({ type: 'stage', stage: 'preflight', status: 'start' });
    // A fresh start keeps nothing of the earlier run but its tuning backup (reverted below).
    if (!options.fresh) await checkPairReadOnly(store, options);
    const pre: PreflightResult = await preflight(options, source, target, options.fresh ? undefined : store, auth.env);
    const pair: PairIdentity = { source: pre.sourceFacts.identity, target: pre.targetFacts.identity };
    for (const w of pre.warnings) emit({ type: 'warning', message: w });
    emit({ type: 'stage', stage: 'preflight', status: 'done' });

    await store.init();
    // One run per state directory: taken before anything of an earlier run (its tuning) is touched.
    await takeOverRun(store, source, target, emit);
    ownsLock = true;
    const recovered = await withClient(target, options.to.database, (c) => recoverTuning(c, store, pair.target));
    if (recovered === 'reverted') emit({ type: 'info', message: 'reverted the target tuning that an interrupted earlier run had left applied' });
    if (recovered === 'other-server') {
      throw new MigrateError(
        `${store.docPath('tuning.json')} holds the settings to put back on another target server (an interrupted earlier run); revert them there by running pg-migrate against that target once, or remove the file if they were put back by hand`,
        ExitCode.stateMismatch,
      );
    }
    if (options.fresh) await store.wipe();
    await store.claim(pair);
    for (const db of pre.selection.migrate) {
      if (matchesAny(db.name, options.redoDb)) {
        await store.forgetDatabase(db.name);
        emit({ type: 'info', message: `${db.name}: --redo-db: migrating it afresh` });
      }
    }

    summary.parallelism = pre.parallelism;
    summary.compression = pre.compression;
    emit({
      type: 'plan',
      databases: pre.selection.migrate.map((d) => ({ name: d.name, sizeBytes: d.sizeBytes, delayed: pre.delayed.get(d.name)?.tables.length ?? 0 })),
      notMigrated: pre.selection.notMigrated,
      parallelism: pre.parallelism,
      compression: pre.compression,
      toolsVersion: pre.tools.pgDump.version,
    });
    for (const nm of pre.selection.notMigrated) {
      summary.databases.push({ name: nm.name, sizeBytes: null, status: 'not migrated', reason: nm.reason, warnings: [] });
    }

    const ctx: Context = {
      options,
      source,
      target,
      sourceMajor: pre.sourceFacts.major,
      targetMajor: pre.targetFacts.major,
      store,
      tools: pre.tools,
      compression: pre.compression,
      parallelism: pre.parallelism,
      childEnv: auth.env,
      verifyQueue: new PQueue({ concurrency: pre.parallelism.verifyConcurrency }),
      sizes: new Map(pre.selection.migrate.map((d) => [d.name, d.sizeBytes])),
      cores: os.availableParallelism(),
      signal,
      emit,
    };

    if (!options.disableDstOptimizations) {
      const builds = pre.parallelism.restoreJobs * pre.parallelism.restoreParallel;
      await withClient(target, options.to.database, async (c) => {
        const tuning = await targetTuning(c, builds);
        emit({ type: 'stage', stage: 'tuning', status: 'start', message: Object.entries(tuning).map(([k, v]) => `${k}=${v}`).join(' ') });
        tuned = true; // the backup is written before the first ALTER SYSTEM: revert from here on
        await applyTuning(c, store, pair.target, tuning);
      });
      summary.tuning.applied = true;
      emit({ type: 'stage', stage: 'tuning', status: 'done' });
    } else emit({ type: 'stage', stage: 'tuning', status: 'skipped' });

    if (options.migrateGlobals) await migrateGlobals(ctx, pre, summary);
    else {
      summary.globals.status = 'skipped';
      emit({ type: 'stage', stage: 'globals', status: 'skipped' });
    }

    const results = await migrateDatabases(ctx, pre.selection.migrate, pre.delayed, started, summary);
    summary.databases.push(...results);
  } catch (err) {
    if (err instanceof AbortError || signal.aborted) summary.exitCode = ExitCode.interrupted;
    else {
      summary.exitCode = err instanceof MigrateError ? err.exitCode : ExitCode.internal;
      summary.error = errorMessage(err);
    }
  } finally {
    outer?.removeEventListener('abort', onOuterAbort);
    if (signal.aborted) {
      // Children were stopped by their signal; end whatever still runs on either server.
      await Promise.all([terminateRunSessions(source), terminateRunSessions(target)]);
    }
    if (tuned) {
      emit({ type: 'stage', stage: 'reverting', status: 'start' });
      try {
        summary.tuning.reverted = await withClient(target, options.to.database, (c) => revertTuning(c, store));
        summary.tuning.notice = FSYNC_NOTICE;
        emit({ type: 'stage', stage: 'reverting', status: 'done' });
      } catch (err) {
        const msg = `could not revert the target tuning (${errorMessage(err)}); the saved values are in ${store.docPath('tuning.json')} and the next run puts them back`;
        emit({ type: 'stage', stage: 'reverting', status: 'failed', message: msg });
        summary.error = summary.error ? `${summary.error}\n${msg}` : msg;
        if (summary.exitCode === ExitCode.ok) summary.exitCode = ExitCode.internal;
      }
    }
    await closeControlConnections();
    await auth.dispose();
    if (ownsLock) await store.removeDoc(store.docPath(RUN_LOCK)).catch(() => undefined);
  }
  summary.elapsedSeconds = seconds(started);
  if (summary.exitCode === ExitCode.ok) {
    if (signal.aborted) summary.exitCode = ExitCode.interrupted;
    else if (summary.globals.status === 'failed' || summary.databases.some((d) => d.status !== 'verified')) summary.exitCode = ExitCode.failed;
  }
  return summary;
}

interface RunLock {
  pid: number;
  appName: string;
  startedAt: string;
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * One run at a time per state directory. A run killed outright (kill -9) leaves its pg_dump and
 * pg_restore children behind, still connected: their sessions (found by the dead run's
 * application_name) are terminated on both servers, which ends them, before anything is redone.
 */
async function takeOverRun(store: StateStore, source: Server, target: Server, emit: EventSink): Promise<void> {
  const file = store.docPath(RUN_LOCK);
  const previous = await store.readDoc<RunLock>(file);
  if (previous && previous.pid !== process.pid && processAlive(previous.pid)) {
    throw new MigrateError(
      `another pg-migrate (pid ${previous.pid}, started ${previous.startedAt}) is using the state in ${store.markersDir}; wait for it or stop it first (if that process is not pg-migrate, remove ${file})`,
      ExitCode.stateMismatch,
    );
  }
  await store.writeDoc(file, { pid: process.pid, appName: source.appName, startedAt: new Date().toISOString() } satisfies RunLock);
  if (previous) {
    const ended = (await Promise.all([source, target].map((s) => terminateRunSessions({ ...s, appName: previous.appName })))).reduce((a, b) => a + b, 0);
    if (ended > 0) {
      emit({ type: 'info', message: `ended ${ended} sessions left behind by an earlier run that was killed (pid ${previous.pid})` });
      await new Promise((r) => setTimeout(r, 1000)); // let its orphaned client programs notice and exit
    }
  }
}

/** Refuses, before connecting anywhere, state that names another pair (cheap check on host/port; identifiers are checked after preflight). */
async function checkPairReadOnly(store: StateStore, options: MigrateOptions): Promise<void> {
  const existing = await store.readDoc<PairIdentity>(store.docPath('pair.json'));
  if (!existing) return;
  const mismatch =
    existing.source.host !== options.from.host ||
    existing.source.port !== options.from.port ||
    existing.target.host !== options.to.host ||
    existing.target.port !== options.to.port;
  if (mismatch) {
    throw new MigrateError(
      `the state in ${store.markersDir} belongs to another migration: source ${existing.source.host}:${existing.source.port} → target ${existing.target.host}:${existing.target.port}; ` +
        `run again with --fresh to discard it, or point --state-dir elsewhere`,
      ExitCode.stateMismatch,
    );
  }
}

async function migrateGlobals(ctx: Context, pre: PreflightResult, summary: RunSummary): Promise<void> {
  const { emit, store } = ctx;
  if ((await store.readDoc(store.docPath('globals.done'))) !== undefined) {
    summary.globals.status = 'done';
    emit({ type: 'stage', stage: 'globals', status: 'done', message: 'already migrated (globals.done)' });
    return;
  }
  emit({ type: 'stage', stage: 'globals', status: 'start' });
  const e = ctx.source.endpoint;
  const args = ['--globals-only', '-h', e.host, '-p', String(e.port), '-U', e.user, '-w', `--dbname=${dbnameConninfo(e.database)}`];
  if (!pre.sourceFacts.superuser) args.push('--no-role-passwords');
  const out = await runTool(ctx.tools.pgDumpall.path, args, { env: ctx.childEnv, signal: ctx.signal, captureStdout: true });
  const { kept } = filterGlobals(splitStatements(out.stdout), ctx.target.endpoint.user);
  const outcome = await withClient(ctx.target, ctx.target.endpoint.database, (c) => applyGlobals(c, kept)).catch((err) => {
    throw new MigrateError(`globals: ${describePgError(err)}`);
  });
  summary.globals.skippedExisting = outcome.alreadyExisted;
  summary.globals.errors = outcome.errors;
  if (outcome.errors.length > 0) {
    summary.globals.status = 'failed';
    emit({ type: 'stage', stage: 'globals', status: 'failed', message: outcome.errors.join('\n') });
    return;
  }
  await store.writeDoc(store.docPath('globals.done'), { at: new Date().toISOString(), applied: outcome.applied, alreadyExisted: outcome.alreadyExisted });
  summary.globals.status = 'done';
  emit({ type: 'stage', stage: 'globals', status: 'done', message: `${outcome.applied} statements, ${outcome.alreadyExisted} already existed` });
}

const ALL_VARIANTS: CountsVariant[] = ['', 'fast', 'delayed', 'delayed.fast'];

async function clearCounts(store: StateStore, db: string, kind: 'src' | 'dst'): Promise<void> {
  for (const v of ALL_VARIANTS) await store.clearCounts(db, kind, v);
}

/**
 * The largest database first, then the others smallest first: the largest is the run's critical path
 * and starts at once, while the other slots finish the small databases early, one after another.
 */
export function processingOrder<T extends { sizeBytes: number | null }>(dbs: T[]): T[] {
  if (dbs.length < 2) return [...dbs];
  const ascending = [...dbs].sort((a, b) => (a.sizeBytes ?? 0) - (b.sizeBytes ?? 0));
  return [ascending[ascending.length - 1]!, ...ascending.slice(0, -1)];
}

/** The two queues: the source queue dumps and counts, the target queue restores, counts and verifies. */
async function migrateDatabases(
  ctx: Context,
  dbs: SourceDatabase[],
  delayed: Map<string, DelayedPlan>,
  runStart: number,
  summary: RunSummary,
): Promise<DbResult[]> {
  const { parallelism, signal } = ctx;
  const sourceQueue = new PQueue({ concurrency: parallelism.dumpParallel });
  const targetQueue = new PQueue({ concurrency: parallelism.restoreParallel });
  const dataPath = fileDataPath(ctx);
  let regularEnd = 0;
  const results = await Promise.all(
    processingOrder(dbs).map(async (db): Promise<DbResult> => {
      const result: DbResult = { name: db.name, sizeBytes: db.sizeBytes, status: 'failed', warnings: [] };
      const plan = delayed.get(db.name);
      if (plan) result.delayedTables = plan.tables.length;
      try {
        if ((await chooseDataPath(ctx, db, 'regular')) === 'stream') {
          await sourceQueue.add(() => targetQueue.add(() => streamSteps(ctx, db.name, plan, dataPath, result), { signal }), { signal });
          await targetQueue.add(() => verifyStep(ctx, db.name, plan, result), { signal });
        } else {
          await sourceQueue.add(() => sourceSteps(ctx, db.name, plan, dataPath, result), { signal });
          ctx.emit({ type: 'phase', db: db.name, phase: 'waiting for target' });
          await targetQueue.add(() => targetSteps(ctx, db.name, plan, dataPath, result), { signal });
        }
        result.regularSeconds = seconds(runStart);
        regularEnd = Math.max(regularEnd, result.regularSeconds);
        if (plan) {
          const snapshot = <T,>(fn: (s: string | undefined) => Promise<T>): Promise<T> => withExportedSnapshot(ctx.source, db.name, fn);
          if ((await chooseDataPath(ctx, db, 'delayed')) === 'stream') {
            await sourceQueue.add(() => targetQueue.add(() => runDelayedTarget(ctx, db.name, plan, dataPath, result, snapshot), { signal }), { signal });
          } else {
            await sourceQueue.add(() => runDelayedDump(ctx, db.name, plan, dataPath, snapshot), { signal });
            await targetQueue.add(() => runDelayedTarget(ctx, db.name, plan, dataPath, result), { signal });
          }
        }
        result.totalSeconds = seconds(runStart);
        result.status = 'verified';
        ctx.emit({ type: 'phase', db: db.name, phase: 'verified' });
        if (ctx.options.removeDumps) {
          await dataPath.remove(db.name, 'regular');
          await dataPath.remove(db.name, 'delayed');
        }
      } catch (err) {
        if (signal.aborted || err instanceof AbortError || (err as Error)?.name === 'AbortError') {
          result.status = 'interrupted';
          result.reason = 'interrupted';
        } else {
          result.status = 'failed';
          result.reason = errorMessage(err);
          ctx.emit({ type: 'phase', db: db.name, phase: 'failed', detail: result.reason });
        }
      }
      return result;
    }),
  );
  summary.regularElapsedSeconds = regularEnd;
  // Reported in discovery order (smallest first), whatever order they ran in.
  return dbs.map((db) => results.find((r) => r.name === db.name)!);
}

/**
 * Files or stream for one phase of a database (regular, or the deferred data). Dump files an earlier
 * run finished and nothing restored yet are kept: that phase stays on files.
 */
async function chooseDataPath(ctx: Context, db: SourceDatabase, phase: 'regular' | 'delayed'): Promise<'files' | 'stream'> {
  const [dumpedMarker, doneMarker] = phase === 'regular' ? (['dumped', 'done'] as const) : (['delayed_dumped', 'delayed_done'] as const);
  const dumped = await ctx.store.marker(db.name, dumpedMarker);
  if (dumped && dumped.streamed !== true && !(await ctx.store.marker(db.name, doneMarker))) return 'files';
  const chosen = ctx.options.dataPath;
  return chosen === 'auto' ? autoDataPath(ctx.cores, db.sizeBytes) : chosen;
}

/** The deferred tables' keys, sorted: what the `dumped` marker records of the regular phase. */
const deferredKeys = (plan: DelayedPlan | undefined): string[] => [...(plan?.keys ?? [])].sort();

/**
 * The `dumped` marker, unless the regular phase it records left other tables empty than this run
 * would fill (other --delay-table-data tables): then nothing of that phase can be kept.
 */
async function regularPhaseMarker(ctx: Context, db: string, plan: DelayedPlan | undefined): Promise<MarkerInfo | undefined> {
  const dumped = await ctx.store.marker(db, 'dumped');
  if (dumped && JSON.stringify(dumped.deferred ?? []) !== JSON.stringify(deferredKeys(plan))) {
    ctx.emit({ type: 'warning', db, message: `the --delay-table-data tables of ${db} differ from those of the earlier run; migrating ${db} afresh` });
    await ctx.store.forgetDatabase(db);
    return undefined;
  }
  return dumped;
}

async function sourceSteps(ctx: Context, db: string, plan: DelayedPlan | undefined, dataPath: DataPath, result: DbResult): Promise<void> {
  const { store, emit } = ctx;
  let dumped = await regularPhaseMarker(ctx, db, plan);
  const deferred = deferredKeys(plan);
  if (dumped && !(await store.marker(db, 'done')) && !(await isDirectory(dataPath.location(db, 'regular')))) {
    emit({ type: 'warning', db, message: `the dump of ${db} is gone from ${dataPath.location(db, 'regular')}; dumping it again` });
    dumped = undefined;
  }
  const variant = countsVariant(ctx.options.fastVerify, 'regular');
  if (!dumped) {
    await store.clearFrom(db, 'dumped');
    await clearCounts(store, db, 'src');
    await clearCounts(store, db, 'dst');
    await withExportedSnapshot(ctx.source, db, async (snapshot) => {
      emit({ type: 'phase', db, phase: 'dumping' });
      const t0 = performance.now();
      // The counts read the same snapshot while the dump runs (concurrent scans of a table share reads).
      await together(
        async () => {
          await dataPath.dumpDatabase(db, { snapshot, excludeData: plan?.tables ?? [] });
          result.dumpSeconds = seconds(t0);
        },
        () => sourceCounts(ctx, db, variant, plan, snapshot, result, false),
      );
      await store.setMarker(db, 'dumped', { seconds: result.dumpSeconds, deferred });
    });
  } else {
    result.dumpSeconds = dumped.seconds;
    if ((await store.counts(db, 'src', variant)) === undefined) await sourceCounts(ctx, db, variant, plan, undefined, result);
  }
}

async function sourceCounts(
  ctx: Context,
  db: string,
  variant: CountsVariant,
  plan: DelayedPlan | undefined,
  snapshot: string | undefined,
  result: DbResult,
  showPhase = true,
): Promise<void> {
  if (showPhase) ctx.emit({ type: 'phase', db, phase: 'counting source' });
  const t0 = performance.now();
  const { counts, estimated } = await countTables({
    server: ctx.source,
    database: db,
    verifyQueue: ctx.verifyQueue,
    snapshot,
    // Deferred tables are empty after the regular phase (their counts belong to the delayed verify), and
    // materialized views reading them are refreshed only after the load: neither is counted now.
    select: plan ? (k) => !plan.keys.has(k) && !plan.matviewKeys.has(k) : undefined,
    fast: variant === 'fast' ? { exact: plan?.keys ?? new Set() } : undefined,
    signal: ctx.signal,
  });
  const expected = sortKeys({ ...counts, ...Object.fromEntries([...(plan?.keys ?? [])].map((k) => [k, 0])) });
  await ctx.store.setCounts(db, 'src', variant, expected);
  if (estimated.length) await ctx.store.writeDoc(ctx.store.dbDocPath(db, `src_estimated${variant ? `.${variant}` : ''}.json`), estimated);
  result.verifySeconds = (result.verifySeconds ?? 0) + seconds(t0);
}

async function targetSteps(ctx: Context, db: string, plan: DelayedPlan | undefined, dataPath: DataPath, result: DbResult): Promise<void> {
  await restoreStep(ctx, db, plan, dataPath, result);
  await verifyStep(ctx, db, plan, result);
}

/** A target database this run may (re)create: absent, or created by this migration (then dropped). */
async function prepareTargetDatabase(ctx: Context, db: string): Promise<void> {
  if (await databaseExists(ctx.target, db)) {
    if (!(await ctx.store.marker(db, 'restore_started'))) {
      throw new MigrateError(`database ${JSON.stringify(db)} already exists on the target and was not created by this migration; drop it there or leave it out with --exclude-db`);
    }
    ctx.emit({ type: 'info', message: `${db}: dropping the partly restored database on the target to restore it afresh` });
    await dropTargetDatabase(ctx, db);
  }
  await ctx.store.setMarker(db, 'restore_started');
}

/** Whether the database's restore is done (and still there on the target). */
async function restoreDone(ctx: Context, db: string): Promise<MarkerInfo | undefined> {
  const done = await ctx.store.marker(db, 'done');
  if (done && !(await databaseExists(ctx.target, db))) {
    ctx.emit({ type: 'warning', db, message: `${db} was restored by an earlier run but is gone from the target; restoring it again` });
    return undefined;
  }
  return done;
}

/**
 * The regular phase on the stream path: dump and restore run at once through a FIFO, holding a
 * source slot and a target slot; the source counts are taken in the snapshot the dump used. Deferred
 * tables get no data, and their foreign keys are left out of the restore and added NOT VALID after it.
 */
async function streamSteps(ctx: Context, db: string, plan: DelayedPlan | undefined, dataPath: DataPath, result: DbResult): Promise<void> {
  const { store, emit } = ctx;
  const variant = countsVariant(ctx.options.fastVerify, 'regular');
  const done = (await regularPhaseMarker(ctx, db, plan)) ? await restoreDone(ctx, db) : undefined;
  if (done) {
    result.restoreSeconds = done.seconds;
    if ((await store.counts(db, 'src', variant)) === undefined) await sourceCounts(ctx, db, variant, plan, undefined, result);
    return;
  }
  await store.clearFrom(db, 'dumped');
  await clearCounts(store, db, 'src');
  await clearCounts(store, db, 'dst');
  await prepareTargetDatabase(ctx, db);
  const fks = plan ? await deferredForeignKeys(ctx, db, plan) : [];
  await withExportedSnapshot(ctx.source, db, async (snapshot) => {
    emit({ type: 'phase', db, phase: 'streaming' });
    const t0 = performance.now();
    await together(
      async () => {
        const split = await dataPath.streamDatabase(db, { snapshot, excludeData: plan?.tables ?? [], skipConstraints: new Set(fks.map((f) => f.oid)) });
        if (split.length > 0) result.splitTables = split;
        if (fks.length > 0) await withClient(ctx.target, db, (c) => addForeignKeysNotValid(c, fks));
        result.restoreSeconds = seconds(t0);
      },
      () => sourceCounts(ctx, db, variant, plan, snapshot, result, false),
    );
    await store.setMarker(db, 'dumped', { seconds: 0, deferred: deferredKeys(plan), streamed: true });
    await store.setMarker(db, 'done', { seconds: result.restoreSeconds });
  });
}

async function restoreStep(ctx: Context, db: string, plan: DelayedPlan | undefined, dataPath: DataPath, result: DbResult): Promise<void> {
  const { store, emit } = ctx;
  const done = await restoreDone(ctx, db);
  if (!done) {
    await store.clearFrom(db, 'done');
    await clearCounts(store, db, 'dst');
    await prepareTargetDatabase(ctx, db);
    emit({ type: 'phase', db, phase: 'restoring' });
    const t0 = performance.now();
    if (plan) {
      // Foreign keys from or to deferred tables cannot be validated yet: created NOT VALID, validated after the load.
      const fks = await deferredForeignKeys(ctx, db, plan);
      await dataPath.restoreDatabase(db, { skipConstraints: new Set(fks.map((f) => f.oid)) });
      await withClient(ctx.target, db, (c) => addForeignKeysNotValid(c, fks));
    } else await dataPath.restoreDatabase(db);
    result.restoreSeconds = seconds(t0);
    await store.setMarker(db, 'done', { seconds: result.restoreSeconds });
  } else result.restoreSeconds = done.seconds;
}

async function verifyStep(ctx: Context, db: string, plan: DelayedPlan | undefined, result: DbResult): Promise<void> {
  const { store, emit } = ctx;
  const variant = countsVariant(ctx.options.fastVerify, 'regular');
  const verified = await store.marker(db, 'verify');
  const src = await store.counts(db, 'src', variant);
  if (src === undefined) throw new MigrateError(`${db}: the source counts are missing from ${ctx.store.countsDir}; run again to recount`);
  if (verified) {
    result.rows = (verified.rows as number | undefined) ?? result.rows;
    result.verifySeconds = (verified.seconds as number | undefined) ?? result.verifySeconds;
    return;
  }
  emit({ type: 'phase', db, phase: 'counting target' });
  const t0 = performance.now();
  let dst = await store.counts(db, 'dst', variant);
  let estimatedDst: string[] = [];
  let aggregates: Set<string> | undefined;
  if (dst === undefined) {
    const r = await countTables({
      server: ctx.target,
      database: db,
      verifyQueue: ctx.verifyQueue,
      fast: variant === 'fast' ? { exact: plan?.keys ?? new Set() } : undefined,
      signal: ctx.signal,
    });
    dst = Object.fromEntries(Object.entries(r.counts).filter(([k]) => !plan?.matviewKeys.has(k)));
    estimatedDst = r.estimated;
    aggregates = r.aggregates;
    await store.setCounts(db, 'dst', variant, dst);
  }
  emit({ type: 'phase', db, phase: 'verifying' });
  const estimatedSrc = (await store.readDoc<string[]>(store.dbDocPath(db, `src_estimated${variant ? `.${variant}` : ''}.json`))) ?? [];
  const cmp = compareCounts(src, dst, new Set([...estimatedSrc, ...estimatedDst]), aggregates ?? (await aggregateKeys(ctx.target, db)));
  result.verifySeconds = (result.verifySeconds ?? 0) + seconds(t0);
  result.rows = cmp.rows;
  for (const w of cmp.warnings) {
    result.warnings.push(w);
    emit({ type: 'warning', db, message: w });
  }
  if (!cmp.ok) {
    await store.clearCounts(db, 'dst', variant); // recount on the next run
    throw new MigrateError(`verification failed: ${cmp.errors.slice(0, 20).join('; ')}${cmp.errors.length > 20 ? `; and ${cmp.errors.length - 20} more` : ''}`);
  }
  await store.setMarker(db, 'verify', { seconds: result.verifySeconds, rows: cmp.rows });
}
