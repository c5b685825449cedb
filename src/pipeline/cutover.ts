/**
 * `cutover`: the end of an online migration. The source's schema is checked against the one the copy
 * saw; writes on the source are stopped (new sessions read-only, the others ended after a grace
 * period); once every subscription applied the source's WAL up to that point, what replication does
 * not carry is copied (sequences, the unreplicated tables, large objects); both sides, quiet, are
 * compared; then the subscriptions, slots and publications are dropped. If any step before the drop
 * fails, the source is made writable again and nothing is dropped: the operator can retry.
 */
import { randomBytes } from 'node:crypto';
import os from 'node:os';
import path from 'node:path';
import PQueue from 'p-queue';
import type { MigrateOptions } from '../options.ts';
import { ControlConnections, authenticate, oneRow, withClient, type Server } from '../pg/connect.ts';
import { schemaFingerprint } from '../pg/catalog.ts';
import { serverAway } from '../pg/connect-errors.ts';
import { prepareChildAuth, type ChildAuth } from '../pg/passfile.ts';
import { planParallelism } from '../plan.ts';
import { ChildRegistry } from '../proc/run.ts';
import { discoverTools } from '../proc/tools.ts';
import { StateStore } from '../state/store.ts';
import { encodeName } from '../state/names.ts';
import { AbortError, ExitCode, MigrateError, PreflightError, errorMessage } from '../errors.ts';
import type { EventSink } from '../events.ts';
import { compareCounts, countTables } from './counts.ts';
import { checksumOptions, compareChecksums } from './checksum.ts';
import { type Context, type DatabaseJob } from './context.ts';
import {
  copyLargeObjects,
  copySequences,
  fence,
  fenceRecord,
  rolesMissingOnTarget,
  rolesOutsideFence,
  unfence,
  waitForCatchUp,
  walPoint,
  nothingCommittedBetween,
  writesPastFence,
  type FenceRecord,
} from './cutover-steps.ts';
import { loadUnits, undoInterruptedLoad, type LoadSpec } from './deferred-load.ts';
import { StateLock, TargetLock } from './lock.ts';
import { dropReplication, type OnlineRecord } from './online.ts';
import { serverFacts, serverIdentity } from './facts.ts';

export interface CutoverOptions {
  /** Seconds between making new sessions read-only and ending the sessions still open. */
  graceSeconds: number;
  /** How long to wait for the subscriptions to catch up. */
  catchupTimeoutSeconds: number;
  /** Only the roles whose sessions are ended (all but the tool's own when undefined). */
  fenceRoles?: string[];
  dryRun: boolean;
}

export interface CutoverSummary {
  databases: { name: string; sequences: number; tablesCopied: number; largeObjects: number; rows?: number; checksummed?: number }[];
  /** Seconds during which the source took no writes (from the end of the grace period, when the sessions still open were ended, to the end). */
  writeStopSeconds?: number;
  /** What a dry run would do, or what was done (one line each). */
  lines: string[];
  exitCode: number;
  error?: string;
}

/** Runs the cutover of every database the state says is replicating. */
export async function runCutover(
  options: MigrateOptions,
  co: CutoverOptions,
  hooks: { onEvent?: EventSink; env?: NodeJS.ProcessEnv; signal?: AbortSignal; children?: ChildRegistry } = {},
): Promise<CutoverSummary> {
  const emit: EventSink = hooks.onEvent ?? (() => undefined);
  const env = hooks.env ?? process.env;
  const summary: CutoverSummary = { databases: [], lines: [], exitCode: ExitCode.ok };
  const appName = `pg-migrate/${randomBytes(4).toString('hex')}`;
  const source: Server = { side: 'source', endpoint: options.from, appName };
  const target: Server = { side: 'target', endpoint: options.to, appName };
  const store = new StateStore(options.stateDir);
  const { lock } = await StateLock.take(store, appName);
  let targetLock: TargetLock | undefined;
  const children = hooks.children ?? new ChildRegistry();
  // A signal (Ctrl-C, SIGTERM, SIGHUP) stops the cutover at the next step, before the drop: the source is opened again.
  const signal = hooks.signal ?? new AbortController().signal;
  const stopIfAsked = (): void => {
    if (signal.aborted) throw new AbortError('interrupted: the cutover stopped before dropping the replication');
  };
  const control = new ControlConnections();
  let auth: ChildAuth | undefined;
  let fenced: FenceRecord | undefined;
  try {
    // A server out of reach or a login refused: nothing was changed (exit 3), as in migrate's guard.
    const unreachable = (err: unknown): never => {
      throw err instanceof MigrateError && err.exitCode === ExitCode.stateMismatch ? err : new PreflightError([errorMessage(err)]);
    };
    targetLock = await TargetLock.take(target).catch(unreachable);
    await authenticate(source).catch(unreachable);
    auth = await prepareChildAuth([options.from, options.to], env);
    await store.init();
    // The servers must be the pair this state records, before anything is asked of or done to them
    // (a fence on a server that is not the migration's source would be a change to an unrelated server).
    const identity = (s: Server) => withClient(s, s.endpoint.database, (c) => serverIdentity(c, s)).catch(unreachable);
    await store.checkPair({ source: await identity(source), target: await identity(target) });
    const names = await store.databaseNames();
    const records = new Map<string, OnlineRecord>();
    for (const name of names) {
      const r = await store.database(name).doc<OnlineRecord>('online.json');
      if (r) records.set(name, r);
    }
    const unfinished = [...records].filter(([, r]) => r.subscribedAt === undefined).map(([n]) => n);
    if (unfinished.length > 0)
      throw new MigrateError(`the copy of ${unfinished.join(', ')} has not finished: run pg-migrate migrate --online again first`, ExitCode.preflight);
    const dbs = [...records].filter(([, r]) => r.subscribedAt !== undefined && r.cutoverAt === undefined);

    // A cutover stopped half-way (a crash) left the source fenced: open it again first, unless it had
    // begun dropping the replication (some subscription may be gone already, so writes made now would
    // be lost): then that drop is finished, the source staying read-only.
    const earlier = await store.readDoc<FenceRecord>(store.fencePath);
    if (earlier && earlier.completedAt === undefined && earlier.droppingAt !== undefined) {
      const fencedDbs = new Set(earlier.databases.map((d) => d.name));
      const toFinish = dbs.filter(([db]) => fencedDbs.has(db));
      summary.lines.push(
        `finishing the cutover interrupted while it dropped the replication (everything was compared before)${toFinish.length > 0 ? `: ${toFinish.map(([db]) => db).join(', ')}` : ''}`,
      );
      if (co.dryRun) return summary;
      await dropAll(store, source, target, toFinish, summary);
      await store.writeDoc(store.fencePath, { ...earlier, completedAt: new Date().toISOString() } satisfies FenceRecord);
      summary.lines.push(
        `cut over. The source's databases stay read-only (default_transaction_read_only = on); point the applications at the target. To reopen a source database: ALTER DATABASE <name> RESET default_transaction_read_only`,
      );
      return summary;
    }
    if (dbs.length === 0)
      throw new MigrateError(
        `no database replicates from the source in ${store.root}: run pg-migrate migrate --online first, or pass the --state-dir of the online migration`,
        ExitCode.preflight,
      );
    if (earlier && earlier.completedAt === undefined) {
      await unfence(source, earlier);
      await store.removeDoc(store.fencePath);
      summary.lines.push('made the source writable again after a cutover that was interrupted');
    }

    // Schema changes are not replicated: refuse a cutover over them, before anything changes.
    const changes: string[] = [];
    for (const [db, r] of dbs) changes.push(...(await schemaChanges(source, target, db, r)));
    if (changes.length > 0) {
      throw new MigrateError(
        `the source's schema changed since the copy, and logical replication does not carry schema changes:\n  - ${changes.join('\n  - ')}\nmake the same changes on the target (or migrate those databases afresh with pg-migrate migrate --online --redo-db), then cut over`,
        ExitCode.failed,
      );
    }
    const tools = await discoverTools(options.pgBinDir, env);
    if (!tools.tools) throw new MigrateError(tools.problems.join('; '), ExitCode.preflight);
    const [sf, tf] = await Promise.all([
      withClient(source, source.endpoint.database, (c) => serverFacts(c, source)),
      withClient(target, target.endpoint.database, (c) => serverFacts(c, target)),
    ]);
    const parallelism = planParallelism(options, os.availableParallelism(), sf, tf);
    const ctx: Context = {
      options,
      source,
      target,
      sourceMajor: sf.major,
      targetMajor: tf.major,
      targetSuperuser: tf.superuser,
      pair: { source: sf.identity, target: tf.identity },
      store,
      tools: tools.tools,
      plan: { cores: os.availableParallelism(), parallelism, compression: '1', databases: [] },
      childEnv: auth.env,
      children,
      control,
      verifyQueue: new PQueue({ concurrency: parallelism.verifyConcurrency }),
      signal,
      emit,
    };
    for (const [db, r] of dbs) {
      summary.lines.push(
        `${db}: stop writes, wait for ${r.subscription} to catch up, set the sequences, copy ${String(r.notReplicated.length)} unreplicated tables${r.notReplicated.length > 0 ? ` (${r.notReplicated.map((t) => `${t.schema}.${t.name}`).join(', ')})` : ''} and the large objects, compare, drop ${r.subscription}`,
      );
    }
    const unfenced = await rolesOutsideFence(
      source,
      dbs.map(([db]) => db),
    );
    if (unfenced.length > 0) {
      summary.lines.push(
        `warning: the settings of ${unfenced.join(', ')} turn default_transaction_read_only off, so their new sessions can still write after the fence: stop their applications before the cutover (or ALTER ROLE ... RESET default_transaction_read_only); the cutover refuses to finish while one of their sessions is writing`,
      );
    }
    // Roles are not replicated: a large object's owner missing on the target refuses the cutover
    // before the write stop; any other role the target lacks is named.
    const roles = await rolesMissingOnTarget(
      source,
      target,
      dbs.map(([db]) => db),
    );
    if (roles.largeObjects.length > 0) {
      throw new MigrateError(
        `large objects of the source are owned by roles the target does not have (roles are not replicated):\n  - ${roles.largeObjects.join('\n  - ')}\ncreate those roles on the target, then cut over`,
        ExitCode.failed,
      );
    }
    if (roles.missing.length > 0) {
      summary.lines.push(
        `warning: the roles ${roles.missing.join(', ')} exist on the source but not on the target (roles are not replicated: one created since the copy must be created on the target too)`,
      );
    }
    if (co.dryRun) return summary;

    // 1. Stop writes.
    stopIfAsked();
    emit({ type: 'stage', stage: 'cutover', status: 'start', message: `fencing ${String(dbs.length)} databases on the source` });
    fenced = await fenceRecord(
      source,
      dbs.map(([db]) => db),
    );
    await store.writeDoc(store.fencePath, fenced);
    const ended = await fence(source, fenced, co.graceSeconds, co.fenceRoles, signal);
    const stopped = performance.now();
    summary.lines.push(`stopped writes on the source (${String(ended)} sessions ended after ${String(co.graceSeconds)} s)`);

    // 2. The source is quiet now: count it while the subscriptions catch up.
    // With --verify checksum both sides' content is hashed too (no writes on either side now).
    const checksum = options.verify === 'checksum' ? checksumOptions(sf.major, tf.major) : undefined;
    const sourceCounts = new Map(dbs.map(([db]) => [db, countTables({ server: source, database: db, verifyQueue: ctx.verifyQueue, checksum })]));
    for (const p of sourceCounts.values()) p.catch(() => undefined); // awaited below; a failure surfaces there
    const subs = dbs.map(([db, r]) => ({ db, slot: r.slot, subscription: r.subscription }));
    const fencedAt = await walPoint(source, true);
    await waitForCatchUp(source, target, subs, co.catchupTimeoutSeconds, fencedAt, signal);

    // 3. What replication does not carry, and 4. the comparison with both sides quiet: the databases side by side.
    const queue = new PQueue({ concurrency: Math.max(1, parallelism.restoreParallel) });
    const finished = await Promise.allSettled(
      dbs.map(([db, r]) => queue.add(async () => finishDatabase(ctx, db, r, sourceCounts.get(db) ?? Promise.reject(new Error(`no count of ${db}`))))),
    );
    const failures = finished.filter((f): f is PromiseRejectedResult => f.status === 'rejected').map((f) => f.reason as unknown);
    if (failures.length > 0) {
      const first = failures[0];
      if (failures.length === 1) throw first;
      throw new MigrateError(failures.map(errorMessage).join('\n'), first instanceof MigrateError ? first.exitCode : ExitCode.failed);
    }
    for (const f of finished) if (f.status === 'fulfilled') summary.databases.push(f.value);

    // 5. Nothing may still write into a fenced database (a session the fence left open, a prepared
    // transaction): it would be lost with the subscriptions. Then what was committed since the first
    // catch-up is applied too (skipped when no transaction ran or began on the source since: on servers
    // before 13 a quiet source's slot confirms the WAL end only at the subscriber's next status report).
    const writing = await writesPastFence(source, fenced);
    if (writing.length > 0) {
      throw new MigrateError(
        `writes into the fenced databases are still possible, and would not reach the target:\n  - ${writing.join('\n  - ')}\nend those sessions (or let their transactions finish) and COMMIT PREPARED or ROLLBACK PREPARED those transactions, then cut over again`,
        ExitCode.failed,
      );
    }
    if (!nothingCommittedBetween(fencedAt, await walPoint(source, false))) {
      await waitForCatchUp(source, target, subs, co.catchupTimeoutSeconds, await walPoint(source, true), signal);
    }

    // 6. Done: the subscriptions (and with them the slots) and the publications go; the source stays
    // read-only. Recorded first: from the first drop on, the source must not take writes again (a failed
    // or killed drop is finished by the next cutover).
    stopIfAsked();
    const dropping: FenceRecord = { ...fenced, droppingAt: new Date().toISOString() };
    await store.writeDoc(store.fencePath, dropping);
    fenced = undefined;
    await dropAll(store, source, target, dbs, summary);
    summary.writeStopSeconds = Math.round((performance.now() - stopped) / 100) / 10;
    await store.writeDoc(store.fencePath, { ...dropping, completedAt: new Date().toISOString() } satisfies FenceRecord);
    summary.lines.push(
      `cut over: writes were stopped for ${String(summary.writeStopSeconds)} s (after a grace of ${String(co.graceSeconds)} s in which new sessions were already read-only). The source's databases stay read-only (default_transaction_read_only = on); point the applications at the target. To reopen a source database: ALTER DATABASE <name> RESET default_transaction_read_only`,
    );
    emit({ type: 'stage', stage: 'cutover', status: 'done' });
  } catch (err) {
    // A server restarted, or a session of ours ended, under the cutover: a failure to name, not a bug of ours.
    const away = (!(err instanceof MigrateError) || err.exitCode === ExitCode.internal) && (serverAway(err) || /not queryable/i.test(errorMessage(err)));
    summary.exitCode = away ? ExitCode.failed : err instanceof MigrateError ? err.exitCode : ExitCode.internal;
    if (summary.exitCode === ExitCode.ok) summary.exitCode = ExitCode.failed;
    summary.error = away
      ? `a server went away or ended a session of the cutover (${errorMessage(err)}); once both servers take connections, cut over again`
      : errorMessage(err);
    if (fenced) {
      // Nothing was dropped: the source takes writes again, the subscriptions go on.
      await unfence(source, fenced)
        .then(() => store.removeDoc(store.fencePath))
        .then(() =>
          summary.lines.push(
            `the source takes writes again; the subscriptions go on: ${summary.exitCode === ExitCode.interrupted ? 'cut over again when ready' : 'fix what is named above and cut over again'}`,
          ),
        )
        .catch((e: unknown) => {
          summary.error = `${summary.error ?? ''}\nthe source could not be made writable again (${errorMessage(e)}): run pg-migrate cleanup, or ALTER DATABASE <name> RESET default_transaction_read_only for each database`;
        });
    }
  } finally {
    await children.settled();
    await control.close();
    await auth?.dispose();
    await targetLock?.release();
    await lock.release();
  }
  return summary;
}

/**
 * The last step of a cutover: each database's subscription, slot and publication dropped, and the
 * database recorded as cut over once all of it went. A drop that failed fails the cutover (the source
 * stays read-only) so that the next cutover finishes it.
 */
async function dropAll(store: StateStore, source: Server, target: Server, dbs: [string, OnlineRecord][], summary: CutoverSummary): Promise<void> {
  const dropped = await Promise.allSettled(dbs.map(([db, r]) => dropReplication({ source, target }, db, r)));
  const failed: string[] = [];
  for (const [i, d] of dropped.entries()) {
    const entry = dbs[i];
    if (!entry) continue;
    const [db, r] = entry;
    if (d.status === 'rejected') {
      failed.push(`${db}: ${errorMessage(d.reason)}`);
      continue;
    }
    summary.lines.push(...d.value);
    const problems = d.value.filter((l) => l.startsWith('could not '));
    if (problems.length > 0) failed.push(...problems);
    else await store.database(db).setDoc('online.json', { ...r, cutoverAt: new Date().toISOString() });
  }
  if (failed.length > 0) {
    throw new MigrateError(
      `everything was compared, but the replication could not be dropped:\n  - ${failed.join('\n  - ')}\nthe source stays read-only (writes now would reach no subscription): fix that and run pg-migrate cutover again to finish`,
      ExitCode.failed,
    );
  }
}

/**
 * One database inside the write stop: its sequences set, its unreplicated tables copied (refused when
 * the target's copy took rows since), its large objects made the source's, then every table's rows
 * compared with the source's (counted while the subscriptions caught up).
 */
async function finishDatabase(
  ctx: Context,
  db: string,
  r: OnlineRecord,
  sourceCounts: ReturnType<typeof countTables>,
): Promise<CutoverSummary['databases'][number]> {
  const { source, target, store, options } = ctx;
  const job: DatabaseJob = {
    plan: { name: db, sizeBytes: null, dumpJobs: 1, restoreJobs: 1, dataPath: 'stream' },
    state: store.database(db),
    result: { name: db, sizeBytes: null, status: 'failed', warnings: [] },
  };
  const seqs = await copySequences(source, target, db);
  const load = await unreplicatedLoad(source, db, r);
  await undoInterruptedLoad(ctx, job, load);
  for (const t of r.notReplicated) {
    const rows = await withClient(target, db, async (c) => (await c.query(`select 1 from only ${quoteQualified(t.schema, t.name)} limit 1`)).rowCount ?? 0);
    if (rows > 0)
      throw new MigrateError(
        `${db}: ${t.schema}.${t.name} on the target holds rows written since the copy; it cannot be copied over them: empty it there, then cut over again`,
        ExitCode.failed,
      );
  }
  if (load.tables.length > 0) await loadUnits(ctx, job, load, undefined, path.join(options.dumpRoot, `${encodeName(db)}.cutover.ranges`));
  const los = await copyLargeObjects(source, target, db);
  const checksum = options.verify === 'checksum' ? checksumOptions(ctx.sourceMajor, ctx.targetMajor) : undefined;
  const [a, b] = await Promise.all([sourceCounts, countTables({ server: target, database: db, verifyQueue: ctx.verifyQueue, checksum })]);
  const cmp = compareCounts(a.counts, b.counts, new Set(), a.aggregates);
  const errors = [...cmp.errors, ...(checksum ? compareChecksums(a.checksums, b.checksums, b.counts) : [])];
  if (errors.length > 0) throw new MigrateError(`${db}: after the cutover's catch-up the two sides differ: ${errors.slice(0, 10).join('; ')}`, ExitCode.failed);
  return {
    name: db,
    sequences: seqs,
    tablesCopied: load.tables.length,
    largeObjects: los,
    rows: cmp.rows,
    ...(checksum ? { checksummed: Object.keys(b.checksums).length } : {}),
  };
}

/**
 * The source's schema changes since the copy that the target has not followed. A change counts as
 * followed when the target's object now reads the same as the source's, or (servers of different
 * versions print definitions differently) when the target's object changed since it subscribed too.
 */
async function schemaChanges(source: Server, target: Server, db: string, r: OnlineRecord): Promise<string[]> {
  const [now, there] = await Promise.all([withClient(source, db, schemaFingerprint), withClient(target, db, schemaFingerprint)]);
  const then = r.fingerprint ?? {};
  const targetThen = r.targetFingerprint;
  const out: string[] = [];
  for (const k of new Set([...Object.keys(now), ...Object.keys(then)])) {
    if (now[k] === then[k]) continue;
    if (there[k] === now[k] || (targetThen !== undefined && there[k] !== targetThen[k])) continue;
    out.push(
      `${db}: ${k.slice(2)} ${then[k] === undefined ? 'was created' : now[k] === undefined ? 'was dropped' : 'was changed'} on the source since the copy, and not on the target`,
    );
  }
  return out;
}

const quoteQualified = (schema: string, name: string): string => `"${schema.replaceAll('"', '""')}"."${name.replaceAll('"', '""')}"`;

/** The unreplicated tables of a database as a load (their source oids read now). */
async function unreplicatedLoad(source: Server, db: string, r: OnlineRecord): Promise<LoadSpec> {
  const tables = await withClient(source, db, async (c) => {
    const out: LoadSpec['tables'] = [];
    for (const t of r.notReplicated) {
      const oid = oneRow(await c.query<{ oid: string | null }>('select to_regclass($1)::oid::text as oid', [quoteQualified(t.schema, t.name)])).oid;
      if (oid !== null) out.push({ oid, schema: t.schema, name: t.name, kind: 'r' });
    }
    return out;
  });
  return { doc: 'cutover_loads.json', dir: 'cutover-loads', tables };
}
