import type pg from 'pg';
import { oneRow } from '../pg/connect.ts';
import { quoteIdent, quoteLiteral } from '../pg/sql.ts';
import type { StateStore, ServerIdentity } from '../state/store.ts';

/** What the target runs with during the migration (`mwm`: see maintenanceWorkMem). */
function tuningWith(mwm: string): Record<string, string> {
  return {
    fsync: 'off',
    synchronous_commit: 'off',
    full_page_writes: 'off',
    maintenance_work_mem: mwm,
    checkpoint_completion_target: '0.9',
    autovacuum: 'off',
  };
}

const MB = 1024 ** 2;

/**
 * maintenance_work_mem for the load. Every index build (and foreign-key check) may use that much, and
 * up to `builds` run at once on the target (restore jobs × databases in flight), so together they get
 * at most the target's shared_buffers (which PostgreSQL's docs put at about a quarter of its RAM):
 * shared_buffers ÷ builds, never below the server default of 64 MB nor above 2 GB.
 */
export function maintenanceWorkMem(sharedBuffersBytes: number, builds: number): string {
  const each = Math.floor(sharedBuffersBytes / Math.max(1, builds) / MB);
  return `${Math.max(64, Math.min(2048, each))}MB`;
}

/** The tuning for this target and this run's parallelism. */
export async function targetTuning(client: pg.Client, builds: number): Promise<Record<string, string>> {
  const r = await client.query<{ b: string }>("select pg_size_bytes(current_setting('shared_buffers'))::text as b");
  return tuningWith(maintenanceWorkMem(Number(oneRow(r).b), builds));
}

export const FSYNC_NOTICE =
  'The target ran with fsync=off. As the PostgreSQL documentation requires after turning fsync back on, ' +
  'force everything written meanwhile to durable storage before relying on it: on the target host run `sync` ' +
  '(or `initdb --sync-only -D <data directory>`, or stop the server cleanly, or reboot). Until then an OS crash can corrupt the migrated data.';

interface TuningBackup {
  target: ServerIdentity;
  /** The value each setting had in postgresql.auto.conf, or null when it was not set there. */
  previous: Record<string, string | null>;
}

/** Values of the given settings as written in postgresql.auto.conf (the last line for a name wins). */
export async function readAutoConf(client: pg.Client, names: string[]): Promise<Record<string, string | null>> {
  const r = await client.query<{ name: string; setting: string }>(
    `select name, setting from pg_file_settings
      where sourcefile like '%postgresql.auto.conf' and name = any($1::text[])
      order by seqno`,
    [names],
  );
  const out: Record<string, string | null> = Object.fromEntries(names.map((n) => [n, null]));
  for (const row of r.rows) out[row.name] = row.setting;
  return out;
}

async function setAll(client: pg.Client, values: Record<string, string | null>): Promise<void> {
  for (const [name, value] of Object.entries(values)) {
    await client.query(value === null ? `alter system reset ${quoteIdent(name)}` : `alter system set ${quoteIdent(name)} = ${quoteLiteral(value)}`);
  }
  await client.query('select pg_reload_conf()');
}

/** Puts back what a crashed or interrupted run left applied. Returns true when it reverted something. */
export async function recoverTuning(client: pg.Client, store: StateStore, target: ServerIdentity): Promise<'none' | 'reverted' | 'other-server'> {
  const backup = await store.readDoc<TuningBackup>(store.tuningPath);
  if (backup === undefined) return 'none';
  if (backup.target.systemIdentifier !== target.systemIdentifier) return 'other-server';
  await setAll(client, backup.previous);
  await store.removeDoc(store.tuningPath);
  return 'reverted';
}

/** Saves what is there (durably, first), then applies the tuning. */
export async function applyTuning(client: pg.Client, store: StateStore, target: ServerIdentity, values: Record<string, string>): Promise<void> {
  const previous = await readAutoConf(client, Object.keys(values));
  await store.writeDoc(store.tuningPath, { target, previous } satisfies TuningBackup);
  await setAll(client, values);
}

export async function revertTuning(client: pg.Client, store: StateStore): Promise<boolean> {
  const backup = await store.readDoc<TuningBackup>(store.tuningPath);
  if (backup === undefined) return false;
  // No CHECKPOINT: with fsync off PostgreSQL did not track the files it wrote, so a checkpoint would
  // not make them durable; only an OS-level sync does (FSYNC_NOTICE).
  await setAll(client, backup.previous);
  await store.removeDoc(store.tuningPath);
  return true;
}
