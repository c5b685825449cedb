/**
 * `cleanup`: what killed runs left behind, removed without a migration: the target's tuning (put
 * back from the target's own record), the dead run's lock, client programs, sessions and passfile,
 * stale passfiles of other dead runs, and on request the dumps and the state.
 */
import { existsSync } from 'node:fs';
import { readdir, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { Server } from '../pg/connect.ts';
import { encodeName } from '../state/names.ts';
import { StateStore } from '../state/store.ts';
import { errorMessage } from '../errors.ts';
import { endLeftovers, holderAlive, StateLock, TargetLock } from './lock.ts';
import type { TuningBackup } from './tune.ts';
import { revertLeftovers } from './guard.ts';
import { dropReplication, type OnlineRecord } from './online.ts';
import { unfence, type FenceRecord } from './cutover-fence.ts';

export interface CleanupOptions {
  stateDir: string;
  dumpRoot: string;
  source?: Server;
  /** The target, to revert a tuning a killed run left there (without it only local leftovers are removed). */
  target?: Server;
  removeDumps: boolean;
  removeState: boolean;
}

export interface CleanupReport {
  /** What was done, one sentence each. */
  done: string[];
  /** What could not be done, with what to do. */
  problems: string[];
}

/** Passfile directories (`pg-migrate-<pid>-*` in the temporary directory) whose process is gone. */
async function removeStalePassfiles(done: string[]): Promise<void> {
  const tmp = os.tmpdir();
  for (const name of await readdir(tmp).catch(() => [])) {
    const m = /^pg-migrate-(\d+)-/.exec(name);
    if (!m || Number(m[1]) === process.pid || (await holderAlive({ pid: Number(m[1]), startTicks: null }))) continue;
    await rm(path.join(tmp, name), { recursive: true, force: true });
    done.push(`removed the passfile of a run that is gone (${path.join(tmp, name)})`);
  }
}

/**
 * Online mode's leftovers: a cutover interrupted half-way left the source fenced (made writable
 * again, unless it had begun dropping the replication: that is the next cutover's to finish); the
 * subscriptions, slots and publications this migration created (recorded in the state, and only
 * those) are dropped — an abandoned slot keeps WAL on the source until its disk is full.
 */
async function cleanReplication(o: CleanupOptions, store: StateStore, names: string[], report: CleanupReport): Promise<void> {
  const fenced = await store.readDoc<FenceRecord>(store.fencePath);
  const records: [string, OnlineRecord][] = [];
  for (const name of names) {
    const r = await store.database(name).doc<OnlineRecord>('online.json');
    if (r && r.cutoverAt === undefined) records.push([name, r]);
  }
  if ((fenced === undefined || fenced.completedAt !== undefined) && records.length === 0) return;
  if (!o.source || !o.target) {
    report.problems.push(
      "the state records replication objects (or a fence) of an online migration: run pg-migrate cleanup with both servers' connection options to remove them",
    );
    return;
  }
  const { source, target } = o;
  if (fenced && fenced.completedAt === undefined && fenced.droppingAt !== undefined) {
    // Everything was compared and some subscription may be gone: opening the source would take writes
    // that reach no target. Only the cutover may finish this.
    report.problems.push(
      'a cutover was interrupted while it dropped the replication (after the comparison): the source stays read-only; run pg-migrate cutover again to finish it',
    );
    return;
  }
  if (fenced && fenced.completedAt === undefined) {
    await unfence(source, fenced);
    await store.removeDoc(store.fencePath);
    report.done.push('made the source writable again after a cutover that was interrupted');
  }
  for (const [db, r] of records) {
    try {
      report.done.push(...(await dropReplication({ source, target }, db, r)));
      await store.database(db).removeDoc('online.json');
    } catch (err) {
      report.problems.push(`the replication of ${db} could not be removed: ${errorMessage(err)}`);
    }
  }
}

/**
 * The target's part of a killed run: its tuning (from the target's own record) and the memberships
 * it granted, each reported. Under the target's lock: never while a run is going on it. Returns
 * whether a tuning was reverted.
 */
async function cleanTarget(target: Server, store: StateStore, report: CleanupReport): Promise<boolean> {
  try {
    const targetLock = await TargetLock.take(target);
    try {
      const left = await revertLeftovers(targetLock.session, store, target);
      if (left.tuning === 'reverted') report.done.push('reverted the tuning an interrupted run had left on the target to the values it had before');
      else if (left.tuning === 'other-server')
        report.problems.push(`${store.tuningPath} holds the tuning backup of another target server; run cleanup against that server`);
      else if (left.tuning === 'none') report.done.push('the target carries no tuning of pg-migrate');
      else report.problems.push(`the target's tuning could not be reverted: ${errorMessage(left.tuning.error)}`);
      if (!Array.isArray(left.revoked)) report.problems.push(errorMessage(left.revoked.error));
      else if (left.revoked.length > 0) report.done.push(`revoked the memberships an interrupted run had granted the target user: ${left.revoked.join(', ')}`);
      return left.tuning === 'reverted';
    } finally {
      await targetLock.release();
    }
  } catch (err) {
    report.problems.push(`the target could not be cleaned: ${errorMessage(err)}`);
    return false;
  }
}

export async function cleanup(o: CleanupOptions): Promise<CleanupReport> {
  const report: CleanupReport = { done: [], problems: [] };
  const store = new StateStore(o.stateDir);
  const appName = `pg-migrate/cleanup-${String(process.pid)}`;
  if (!existsSync(store.root)) {
    await removeStalePassfiles(report.done);
    if (o.target) {
      // The tuning's record is on the target itself: put back with any state directory, or none.
      const reverted = await cleanTarget(o.target, store, report);
      report[reverted ? 'done' : 'problems'].push(
        `there is no state in ${store.root}${reverted ? ' (the record of the tuning on the target itself was enough)' : ''}; pass the --state-dir of the migration to clean up the rest after it`,
      );
    }
    return report;
  }
  const { lock, previous } = await StateLock.take(store, appName); // refuses while a run is going
  try {
    if (previous) {
      report.done.push(`took over the lock of a run that is gone (pid ${String(previous.pid)}, started ${previous.startedAt})`);
      const line = await endLeftovers(
        previous,
        [o.source, o.target].filter((s) => s !== undefined),
      );
      if (line) report.done.push(line);
    }
    await removeStalePassfiles(report.done);
    const saved = await store.readDoc<TuningBackup>(store.tuningPath);
    if (o.target) {
      await cleanTarget(o.target, store, report);
    } else {
      if (saved !== undefined) {
        report.problems.push(
          `the state says the target ${saved.target ? `${saved.target.host}:${String(saved.target.port)} ` : ''}may still be tuned by an interrupted run: run pg-migrate cleanup with the target's connection options (--to-host ...) to put its settings back`,
        );
      }
      if (existsSync(store.membershipsPath)) {
        report.problems.push(
          `the state records role memberships an interrupted run granted the target user (${store.membershipsPath}): run pg-migrate cleanup with the target's connection options (--to-host ...) to revoke them`,
        );
      }
    }
    const names = await store.databaseNames();
    await cleanReplication(o, store, names, report);
    if (o.removeDumps) {
      let removed = 0;
      for (const name of await readdir(o.dumpRoot).catch(() => [])) {
        const base = name.split('.')[0] ?? '';
        if (!names.some((db) => encodeName(db) === base)) continue;
        await rm(path.join(o.dumpRoot, name), { recursive: true, force: true });
        removed++;
      }
      report.done.push(`removed ${String(removed)} dump files and directories of this migration from ${o.dumpRoot}`);
    }
    if (o.removeState) {
      if (report.problems.length > 0) report.problems.push(`the state in ${store.root} was kept, since not everything could be cleaned`);
      else {
        await lock.release();
        await rm(store.root, { recursive: true, force: true });
        report.done.push(
          `removed the state in ${store.root}; databases this migration created on the target are no longer known to be its own (a later run refuses them until you drop them by hand)`,
        );
      }
    }
  } finally {
    await lock.release();
  }
  return report;
}
