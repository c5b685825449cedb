/**
 * Where a migration stands, read from its state directory alone (no server needed; safe while a run
 * is going): the pair, the run holding the lock, a tuning still to revert, and per database its step,
 * times, rows and result.
 */
import { MARKERS, Marker, type MarkerName } from '../state/names.ts';
import { StateStore, type MarkerInfo, type PairIdentity } from '../state/store.ts';
import { holderAlive, type RunLock } from './lock.ts';
import type { TuningBackup } from './tune.ts';
import type { OnlineRecord } from './online.ts';
import { withClient, type Server } from '../pg/connect.ts';

export interface DatabaseStatus {
  name: string;
  /** The last step that completed (a marker), or none. */
  step: string;
  /** `in progress` while a run is going; `interrupted`: begun, and no run is going (the last one was stopped or killed). */
  result: 'verified' | 'in progress' | 'interrupted' | 'failed' | 'not started';
  /** When its last marker was written. */
  at?: string;
  dumpSeconds?: number;
  restoreSeconds?: number;
  verifySeconds?: number;
  rows?: number;
  /** Tables deferred when it was dumped. */
  deferredTables?: number;
  error?: { at: string; step: string; message: string };
  /** The target database's oid, once this migration recorded that it created it. */
  targetOid?: string;
  /** Online mode: its replication, from the state (and live lag when the servers were asked). */
  replication?: {
    slot: string;
    subscription: string;
    state: 'copying' | 'replicating' | 'cut over';
    lagBytes?: number | null;
    lagSeconds?: number | null;
    applying?: boolean;
  };
}

export interface MigrationStatus {
  stateDir: string;
  exists: boolean;
  pair?: PairIdentity;
  run?: RunLock & { alive: boolean };
  /** The copy of a tuning applied to the target and not yet reverted (the target holds its own record). */
  tuning?: TuningBackup;
  globals?: MarkerInfo;
  databases: DatabaseStatus[];
}

/** What each marker says a database has done, in words. */
const STEP_WORDS: Record<MarkerName, string> = {
  restore_started: 'restoring',
  dumped: 'dumped',
  done: 'restored',
  verify: 'verified (regular phase)',
  delayed_indexes_dropped: 'deferred: indexes dropped',
  delayed_dumped: 'deferred: data read',
  delayed_done: 'deferred: loaded',
  delayed_indexes_recreated: 'deferred: indexes rebuilt',
  delayed_verify: 'verified',
};

export async function readStatus(stateDir: string): Promise<MigrationStatus> {
  const store = new StateStore(stateDir);
  const status: MigrationStatus = { stateDir: store.root, exists: false, databases: [] };
  const names = await store.databaseNames();
  const pair = await store.pair();
  const lock = await store.readDoc<RunLock>(store.lockPath).catch(() => undefined);
  status.exists = pair !== undefined || names.length > 0 || lock !== undefined;
  if (pair) status.pair = pair;
  if (lock) status.run = { ...lock, alive: await holderAlive(lock) };
  const tuning = await store.readDoc<TuningBackup>(store.tuningPath).catch(() => undefined);
  if (tuning) status.tuning = tuning;
  const globals = await store.globalsDone().catch(() => undefined);
  if (globals) status.globals = globals;
  for (const name of names.sort()) {
    const state = store.database(name);
    const markers = new Map<MarkerName, MarkerInfo>();
    for (const m of MARKERS) {
      const info = await state.marker(m).catch(() => undefined);
      if (info) markers.set(m, info);
    }
    const last = [...MARKERS].reverse().find((m) => markers.has(m));
    const dumped = markers.get(Marker.dumped);
    const deferred = ((dumped?.deferred as string[] | undefined) ?? []).length;
    const verified = markers.has(deferred > 0 ? Marker.deferredVerified : Marker.verified);
    const error = await state.doc<{ at: string; step: string; message: string }>('last_error.json').catch(() => undefined);
    const started = markers.get(Marker.restoreStarted);
    const online = await state.doc<OnlineRecord>('online.json').catch(() => undefined);
    const num = (m: MarkerName, key: string): number | undefined => markers.get(m)?.[key] as number | undefined;
    status.databases.push({
      name,
      step: last === undefined ? 'none' : last === Marker.verified && deferred === 0 ? 'verified' : STEP_WORDS[last],
      result: verified ? 'verified' : error ? 'failed' : last === undefined ? 'not started' : status.run?.alive === true ? 'in progress' : 'interrupted',
      ...(last === undefined ? {} : { at: markers.get(last)?.at }),
      ...(num(Marker.dumped, 'seconds') === undefined ? {} : { dumpSeconds: num(Marker.dumped, 'seconds') }),
      ...(num(Marker.restored, 'seconds') === undefined ? {} : { restoreSeconds: num(Marker.restored, 'seconds') }),
      ...(num(Marker.verified, 'seconds') === undefined ? {} : { verifySeconds: num(Marker.verified, 'seconds') }),
      ...(num(deferred > 0 ? Marker.deferredVerified : Marker.verified, 'rows') === undefined
        ? {}
        : { rows: num(deferred > 0 ? Marker.deferredVerified : Marker.verified, 'rows') }),
      ...(deferred > 0 ? { deferredTables: deferred } : {}),
      ...(error && !verified ? { error } : {}),
      ...(typeof started?.oid === 'string' ? { targetOid: started.oid } : {}),
      ...(online
        ? {
            replication: {
              slot: online.slot,
              subscription: online.subscription,
              state:
                online.cutoverAt !== undefined ? ('cut over' as const) : online.subscribedAt !== undefined ? ('replicating' as const) : ('copying' as const),
            },
          }
        : {}),
    });
  }
  return status;
}

/** Adds, for databases that replicate, the lag as the servers report it: WAL bytes the slot has not confirmed, seconds since the subscription last applied. */
export async function addReplicationLag(status: MigrationStatus, source: Server, target: Server): Promise<void> {
  const replicating = status.databases.filter((d) => d.replication?.state === 'replicating');
  if (replicating.length === 0) return;
  await withClient(source, source.endpoint.database, (src) =>
    withClient(target, target.endpoint.database, async (dst) => {
      for (const d of replicating) {
        const r = d.replication;
        if (!r) continue;
        const slot = await src.query<{ lag: string | null }>(
          'select pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::text as lag from pg_replication_slots where slot_name = $1',
          [r.slot],
        );
        const sub = await dst.query<{ applying: boolean; secs: number | null }>(
          'select pid is not null as applying, extract(epoch from now() - latest_end_time)::float8 as secs from pg_stat_subscription where subname = $1',
          [r.subscription],
        );
        const lag = slot.rows[0]?.lag;
        r.lagBytes = lag === undefined || lag === null ? null : Math.max(0, Number(lag));
        r.applying = sub.rows[0]?.applying ?? false;
        r.lagSeconds = r.lagBytes === 0 ? 0 : (sub.rows[0]?.secs ?? null);
      }
    }),
  );
}
