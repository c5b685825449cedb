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
import PQueue from 'p-queue';
import type { MigrateOptions } from '../options.ts';
import { ControlConnections, authenticate, withClient, type Server } from '../pg/connect.ts';
import { serverAway } from '../pg/connect-errors.ts';
import { prepareChildAuth, type ChildAuth } from '../pg/passfile.ts';
import { planParallelism } from '../plan.ts';
import { ChildRegistry } from '../proc/run.ts';
import { discoverTools } from '../proc/tools.ts';
import { StateStore } from '../state/store.ts';
import { AbortError, ExitCode, MigrateError, errorMessage, beforeAnyChange } from '../errors.ts';
import type { EventSink } from '../events.ts';
import { countTables } from './counts.ts';
import { checksumOptions } from './checksum.ts';
import { type Context } from './context.ts';
import { fence, fenceRecord, rolesOutsideFence, unfence, writesPastFence, type FenceRecord } from './cutover-fence.ts';
import { copySequences, nothingCommittedBetween, rolesMissingOnTarget, waitForCatchUp, walPoint } from './cutover-steps.ts';
import { StateLock, TargetLock } from './lock.ts';
import { type OnlineRecord } from './online.ts';
import { dropAll, finishDatabase, schemaChanges, type CutoverDatabase } from './cutover-database.ts';
import { checkStatePair, serverFacts } from './facts.ts';

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
  databases: CutoverDatabase[];
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
    targetLock = await TargetLock.take(target).catch(beforeAnyChange);
    await authenticate(source).catch(beforeAnyChange);
    auth = await prepareChildAuth([options.from, options.to], env);
    await store.init();
    // The servers must be the pair this state records, before anything is asked of or done to them
    // (a fence on a server that is not the migration's source would be a change to an unrelated server).
    await checkStatePair(store, source, target);
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
      await dropAll(store, source, target, toFinish, summary.lines);
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
    const { ended, serverAt } = await fence(source, fenced, co.graceSeconds, co.fenceRoles, signal);
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

    // 5. Nothing may still write into a fenced database (a session the fence left open that writes or
    // ran anything since the catch-up point, a prepared transaction): it would be lost with the
    // subscriptions; named first, since such writes also make the comparison differ. Then what was
    // committed since the first catch-up is applied too, and the sequences set again (skipped when no
    // transaction ran or began on the source since: on servers before 13 a quiet source's slot confirms
    // the WAL end only at the subscriber's next status report).
    const writing = await writesPastFence(source, fenced, { serverAt, since: fencedAt.time, outsideRoles: unfenced });
    if (writing.length > 0) {
      throw new MigrateError(
        `writes into the fenced databases are still possible, and would not reach the target:\n  - ${writing.join('\n  - ')}\nend those sessions (or let their transactions finish; or name their roles in --fence-roles) and COMMIT PREPARED or ROLLBACK PREPARED those transactions, then cut over again${failures.length > 0 ? `\n(the comparison found differences too: ${failures.map(errorMessage).join('; ')})` : ''}`,
        ExitCode.failed,
      );
    }
    if (failures.length > 0) {
      const first = failures[0];
      if (failures.length === 1) throw first;
      throw new MigrateError(failures.map(errorMessage).join('\n'), first instanceof MigrateError ? first.exitCode : ExitCode.failed);
    }
    for (const f of finished) if (f.status === 'fulfilled') summary.databases.push(f.value);
    if (!nothingCommittedBetween(fencedAt, await walPoint(source, false))) {
      await waitForCatchUp(source, target, subs, co.catchupTimeoutSeconds, await walPoint(source, true), signal);
      for (const [db] of dbs) await copySequences(source, target, db);
    }

    // 6. Done: the subscriptions (and with them the slots) and the publications go; the source stays
    // read-only. Recorded first: from the first drop on, the source must not take writes again (a failed
    // or killed drop is finished by the next cutover).
    stopIfAsked();
    const dropping: FenceRecord = { ...fenced, droppingAt: new Date().toISOString() };
    await store.writeDoc(store.fencePath, dropping);
    fenced = undefined;
    await dropAll(store, source, target, dbs, summary.lines);
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
