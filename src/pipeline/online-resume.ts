/**
 * Where a database stands with online mode when a run reaches it: already replicating or cut over
 * (nothing to copy), copied but not yet subscribed (subscribe now), copied without replication
 * (refused: the gap cannot be caught up), or to be copied from a new slot's snapshot (an earlier
 * attempt's replication dropped first). Without --online, a copy made again drops such leftovers too.
 */
import { ExitCode, MigrateError } from '../errors.ts';
import { Marker } from '../state/names.ts';
import { dbName, type Context, type DatabaseJob } from './context.ts';
import { dropReplication, prepareReplication, slotSnapshot, subscribe, type OnlineRecord } from './online.ts';

/**
 * Online mode, before a database's copy: 'replicating' when it already replicates, or was copied and
 * verified before a crash (then it is subscribed now); 'cut over' when its cutover is done (nothing to
 * do either); 'copy' otherwise: a copy that did not finish starts over with a new slot (an earlier
 * one is dropped first: an abandoned slot keeps WAL on the source), and the copy reads that slot's
 * snapshot. A database verified without replication is refused (see below).
 */
export async function prepareOnline(ctx: Context, job: DatabaseJob): Promise<'replicating' | 'cut over' | 'copy'> {
  const record = await job.state.doc<OnlineRecord>('online.json');
  const verified = (await job.state.marker(Marker.verified)) !== undefined;
  if (record && verified) {
    if (record.cutoverAt !== undefined) return 'cut over';
    if (record.subscribedAt === undefined) await subscribe(ctx, job);
    return 'replicating';
  }
  if (!record && verified) {
    // Copied by an offline run, or its replication removed by cleanup: what the source committed since
    // is not on the target, and a slot created now would only carry what comes next.
    throw new MigrateError(
      `${dbName(job)} was copied without replication (an offline run, or pg-migrate cleanup removed its replication), so the writes on the source since then are not on the target: name it with --redo-db to copy it afresh online (its target copy is dropped and made again), or leave it out with --exclude-db`,
      ExitCode.failed,
    );
  }
  if (record) {
    await dropReplication(ctx, dbName(job), record, { keepIdentity: true });
    await job.state.forget();
  }
  const fresh = await prepareReplication(ctx, job, ctx.pair, record?.identityFull ?? []);
  job.snapshot = slotSnapshot(ctx, job, fresh);
  job.notCopied = fresh.notReplicated;
  return 'copy';
}

/**
 * Without --online, a database being copied again (--redo-db, or a copy that never finished) whose
 * earlier online attempt left replication: its subscription would keep the target database from being
 * dropped and its slot would hold WAL on the source, so they go first (only those recorded).
 */
export async function dropStaleReplication(ctx: Context, job: DatabaseJob): Promise<void> {
  const record = await job.state.doc<OnlineRecord>('online.json');
  if (!record || record.cutoverAt !== undefined || (await job.state.marker(Marker.verified)) !== undefined) return;
  for (const line of await dropReplication(ctx, dbName(job), record)) ctx.emit({ type: 'info', message: `${dbName(job)}: ${line}` });
  await job.state.removeDoc('online.json');
}
