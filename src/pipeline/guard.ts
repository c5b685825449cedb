/**
 * What a run takes hold of from its start and lets go of at its end, whatever happens in between: the
 * state directory's lock, the target's advisory lock, the private passfile, and the target's tuning.
 * Opening it first ends what a killed run left behind and reverts a tuning it left applied, before
 * anything else can fail; closing it waits for every child process to exit before the tuning is put
 * back and the locks are released.
 */
import type pg from 'pg';
import type { MigrateOptions } from '../options.ts';
import { authenticate, terminateSessions, withClient, oneRow, type Server } from '../pg/connect.ts';
import { withClientRetrying } from '../pg/retry.ts';
import { prepareChildAuth, type ChildAuth } from '../pg/passfile.ts';
import type { ChildRegistry } from '../proc/run.ts';
import type { StateStore, ServerIdentity } from '../state/store.ts';
import { ExitCode, MigrateError, errorMessage, beforeAnyChange } from '../errors.ts';
import type { EventSink, RunSummary } from '../events.ts';
import { endLeftovers, startTicksOf, StateLock, TargetLock } from './lock.ts';
import { revokeOwnerRoles } from './ownership.ts';
import { applyTuning, FSYNC_NOTICE, recoverTuning, revertTuning, targetTuning } from './tune.ts';

/** What a killed run left on the target, as put back by revertLeftovers; a part that failed holds its error. */
export interface LeftoversReverted {
  tuning: Awaited<ReturnType<typeof recoverTuning>> | { error: unknown };
  revoked: string[] | { error: unknown };
}

/**
 * Puts back what a killed run left on the target: its tuning (from the target's own record) and the
 * role memberships it granted the target user. Each on its own: one failing (another server's record)
 * does not keep the other from being put back. For the start of a run and for cleanup.
 */
export async function revertLeftovers(c: pg.Client, store: StateStore, target: Server): Promise<LeftoversReverted> {
  const systemIdentifier = oneRow(await c.query<{ id: string }>('select system_identifier::text as id from pg_control_system()')).id;
  const out: LeftoversReverted = { tuning: 'none', revoked: [] };
  try {
    out.tuning = await recoverTuning(c, store, { host: target.endpoint.host, port: target.endpoint.port, systemIdentifier });
  } catch (error) {
    out.tuning = { error };
  }
  try {
    out.revoked = await revokeOwnerRoles(c, store);
  } catch (error) {
    out.revoked = { error };
  }
  return out;
}

/** How long the end of a run waits for a target that is away (restarting, recovering) to revert the tuning. */
const REVERT_RETRY_SECONDS = 120;

export class RunGuard {
  private readonly stateLock: StateLock;
  private readonly targetLock: TargetLock;
  readonly auth: ChildAuth;
  private tuned = false;
  /** Whether the run granted the target user memberships in owner roles (ownership.ts), to revoke at its end. */
  grantedRoles = false;

  private constructor(stateLock: StateLock, targetLock: TargetLock, auth: ChildAuth) {
    this.stateLock = stateLock;
    this.targetLock = targetLock;
    this.auth = auth;
  }

  /** Takes the locks, cleans up after a dead run, reverts a leftover tuning, prepares the children's credentials. */
  static async open(
    options: MigrateOptions,
    store: StateStore,
    servers: { source: Server; target: Server },
    children: ChildRegistry,
    env: NodeJS.ProcessEnv,
    emit: EventSink,
  ): Promise<RunGuard> {
    const { source, target } = servers;
    const { lock, previous } = await StateLock.take(store, target.appName);
    let targetLock: TargetLock | undefined;
    try {
      targetLock = await TargetLock.take(target).catch(beforeAnyChange);
      if (previous) {
        const line = await endLeftovers(previous, [source, target]);
        if (line) emit({ type: 'info', message: line });
      }
      const left = await revertLeftovers(targetLock.session, store, target);
      if (left.tuning === 'reverted') emit({ type: 'info', message: 'reverted the target tuning that an interrupted earlier run had left applied' });
      if (Array.isArray(left.revoked) && left.revoked.length > 0)
        emit({ type: 'info', message: `revoked the memberships an interrupted earlier run had granted the target user: ${left.revoked.join(', ')}` });
      if (typeof left.tuning === 'object') throw left.tuning.error;
      if (left.tuning === 'other-server') {
        throw new MigrateError(
          `${store.tuningPath} holds the settings to put back on another target server (an interrupted earlier run); revert them there by running pg-migrate against that target once, or remove the file if they were put back by hand`,
          ExitCode.stateMismatch,
        );
      }
      if (!Array.isArray(left.revoked)) throw left.revoked.error;
      // The source's first session (a password prompt, if any, comes now), so the children's passfile has it.
      await authenticate(source).catch(beforeAnyChange);
      const auth = await prepareChildAuth([options.from, options.to], env);
      await lock.update({ passfileDir: auth.dir });
      children.onChange = (pids) => {
        void Promise.all(pids.map(async (pid) => ({ pid, startTicks: await startTicksOf(pid) }))).then((list) =>
          lock.update({ children: list }).catch(() => undefined),
        );
      };
      return new RunGuard(lock, targetLock, auth);
    } catch (err) {
      await targetLock?.release();
      await lock.release();
      throw err;
    }
  }

  /**
   * When the session holding the target's advisory lock ends under the run (a restart, pg_terminate_backend),
   * takes the lock again at once (waiting for a target that restarts), so that no other run can start on
   * the target meanwhile; `lost` is told why, `failed` gets the error when the lock cannot be had again
   * (another run took it: exit 4).
   */
  keepTargetLock(lost: (why: string) => void, failed: (err: unknown) => void): void {
    this.targetLock.onLost((why) => {
      lost(why);
      this.targetLock.retake(REVERT_RETRY_SECONDS).catch(failed);
    });
  }

  /**
   * Tunes the target for the load (unless told not to or not allowed): the earlier values are saved on
   * the target itself before the first change, so the revert is owed from here on.
   */
  async tune(store: StateStore, target: Server, identity: ServerIdentity, builds: number, summary: RunSummary, emit: EventSink): Promise<void> {
    await withClient(target, target.endpoint.database, async (c) => {
      const values = await targetTuning(c, builds);
      emit({
        type: 'stage',
        stage: 'tuning',
        status: 'start',
        message: Object.entries(values)
          .map(([k, v]) => `${k}=${v}`)
          .join(' '),
      });
      this.tuned = true;
      await applyTuning(c, store, identity, values, target.appName);
    });
    summary.tuning.applied = true;
    emit({ type: 'stage', stage: 'tuning', status: 'done' });
  }

  /**
   * Ends the run: waits for every child to exit, ends the run's sessions when it was interrupted,
   * reverts the tuning, removes the passfile, releases the locks.
   */
  async close(
    store: StateStore,
    servers: { source: Server; target: Server },
    children: ChildRegistry,
    interrupted: boolean,
    summary: RunSummary,
    emit: EventSink,
  ): Promise<void> {
    await children.settled();
    if (interrupted) await Promise.all([terminateSessions(servers.source), terminateSessions(servers.target)]);
    children.onChange = undefined;
    if (this.tuned) {
      emit({ type: 'stage', stage: 'reverting', status: 'start' });
      try {
        // A target restarting (or recovering) meanwhile is waited for: the tuning must not outlive the run.
        const reverted = await withClientRetrying(servers.target, servers.target.endpoint.database, (c) => revertTuning(c, store, servers.target.appName), {
          seconds: REVERT_RETRY_SECONDS,
          onWait: (why) => {
            emit({
              type: 'info',
              message: `the target cannot be reached to revert the tuning (${why}); trying again for up to ${String(REVERT_RETRY_SECONDS)} s`,
            });
          },
        });
        summary.tuning.reverted = reverted === 'reverted';
        if (reverted === 'another run') {
          emit({
            type: 'warning',
            message:
              "the target carries the tuning of another pg-migrate run (it took the target after this run lost its lock), left to that run: it puts it back when it ends, or the next run or pg-migrate cleanup does (pg_migrate.tuning in the target's postgresql.auto.conf)",
          });
        }
        summary.tuning.notice = FSYNC_NOTICE;
        emit({ type: 'stage', stage: 'reverting', status: 'done' });
      } catch (err) {
        const msg = `could not revert the target tuning (${errorMessage(err)}); the target keeps its own record of the earlier values (pg_migrate.tuning in postgresql.auto.conf) and the next run of pg-migrate (or pg-migrate cleanup) puts them back`;
        emit({ type: 'stage', stage: 'reverting', status: 'failed', message: msg });
        summary.error = summary.error ? `${summary.error}\n${msg}` : msg;
        if (summary.exitCode === ExitCode.ok) summary.exitCode = ExitCode.internal;
      }
    }
    if (this.grantedRoles) {
      try {
        const revoked = await withClientRetrying(servers.target, servers.target.endpoint.database, (c) => revokeOwnerRoles(c, store), {
          seconds: REVERT_RETRY_SECONDS,
        });
        if (revoked.length > 0) emit({ type: 'info', message: `revoked the target user's memberships granted for the run: ${revoked.join(', ')}` });
      } catch (err) {
        const msg = `could not revoke the memberships the target user granted itself for the run (${errorMessage(err)}); they are recorded in ${store.membershipsPath} and the next run (or pg-migrate cleanup) revokes them`;
        summary.error = summary.error ? `${summary.error}\n${msg}` : msg;
        if (summary.exitCode === ExitCode.ok) summary.exitCode = ExitCode.internal;
      }
    }
    await this.auth.dispose();
    await this.targetLock.release();
    await this.stateLock.release();
  }
}
