import type pg from 'pg';
import { oneRow } from '../pg/connect.ts';
import { MigrateError } from '../errors.ts';
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

/** The pg-migrate settings record in the target's postgresql.auto.conf (a custom placeholder parameter). */
const RECORD = 'pg_migrate.tuning';

/** What a run's tuning changed: the value each setting had in postgresql.auto.conf before (null: not set there). */
export interface TuningBackup {
  /** The target (kept in the state directory's copy; the target's own record is on that target). */
  target?: ServerIdentity;
  previous: Record<string, string | null>;
  /** The values applied. */
  applied?: Record<string, string>;
  /** application_name of the run that applied it. */
  by?: string;
  at?: string;
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
}

/**
 * The record a run left in the target's postgresql.auto.conf, if any: read from the file
 * (pg_file_settings, which needs a superuser or pg_read_all_settings), else from the setting the
 * server loaded (visible to every user).
 */
export async function targetRecord(client: pg.Client): Promise<TuningBackup | undefined> {
  const readable = oneRow(await client.query<{ ok: boolean }>("select has_table_privilege('pg_catalog.pg_file_settings', 'select') as ok")).ok;
  const text = readable
    ? (await readAutoConf(client, [RECORD]))[RECORD]
    : oneRow(await client.query<{ v: string | null }>('select nullif(current_setting($1, true), $2) as v', [RECORD, ''])).v;
  if (text === null || text === undefined) return undefined;
  try {
    return JSON.parse(text) as TuningBackup;
  } catch {
    throw new MigrateError(
      `the target's postgresql.auto.conf holds ${RECORD} = ${text}, which is not what pg-migrate writes; remove it with ALTER SYSTEM RESET "${RECORD}"`,
    );
  }
}

/** Whether ALTER SYSTEM may be used on this target (superuser, and allow_alter_system not off on 17+). */
export async function alterSystemAllowed(client: pg.Client): Promise<{ ok: boolean; why?: string }> {
  const r = await client.query<{ su: boolean; allow: string | null }>(
    "select (select rolsuper from pg_roles where rolname = current_user) as su, current_setting('allow_alter_system', true) as allow",
  );
  const row = oneRow(r);
  if (!row.su) return { ok: false, why: 'the target user is not a superuser (ALTER SYSTEM needs one)' };
  if (row.allow === 'off') return { ok: false, why: 'ALTER SYSTEM is disabled on the target (allow_alter_system = off)' };
  return { ok: true };
}

/**
 * Puts back what a crashed or interrupted run left applied: the target's own record (whichever state
 * directory that run used), else the backup in this state directory (written by an earlier version).
 * Returns what it did.
 */
export async function recoverTuning(client: pg.Client, store: StateStore, target: ServerIdentity): Promise<'none' | 'reverted' | 'other-server'> {
  const record = await targetRecord(client);
  const saved = await store.readDoc<TuningBackup>(store.tuningPath);
  if (record !== undefined) {
    await restore(client, record);
    await store.removeDoc(store.tuningPath);
    return 'reverted';
  }
  if (saved === undefined) return 'none';
  if (saved.target !== undefined && saved.target.systemIdentifier !== target.systemIdentifier) return 'other-server';
  // The target carries no record: the backup of an earlier version, or one whose revert finished but for removing the file.
  if (saved.applied === undefined) await restore(client, saved);
  await store.removeDoc(store.tuningPath);
  return saved.applied === undefined ? 'reverted' : 'none';
}

async function restore(client: pg.Client, backup: TuningBackup): Promise<void> {
  const allowed = await alterSystemAllowed(client);
  if (!allowed.ok) {
    const values = Object.entries(backup.previous)
      .map(([k, v]) => (v === null ? `RESET ${k}` : `${k} = '${v}'`))
      .join(', ');
    throw new MigrateError(
      `the target still carries the tuning of an interrupted pg-migrate run, but it cannot be reverted: ${allowed.why ?? ''}. Put these back by hand: ${values}; then ALTER SYSTEM RESET "${RECORD}"`,
    );
  }
  // No CHECKPOINT: with fsync off PostgreSQL did not track the files it wrote, so a checkpoint would
  // not make them durable; only an OS-level sync does (FSYNC_NOTICE).
  await setAll(client, backup.previous);
  await client.query(`alter system reset ${quoteIdent(RECORD)}`);
  await client.query('select pg_reload_conf()');
}

/**
 * Saves what is there, then applies the tuning: the record goes into the target's own
 * postgresql.auto.conf first (durably, by ALTER SYSTEM), so any later run finds and reverts it, with
 * whatever state directory; a copy goes to the state directory for `status`.
 */
export async function applyTuning(client: pg.Client, store: StateStore, target: ServerIdentity, values: Record<string, string>, by: string): Promise<void> {
  const previous = await readAutoConf(client, Object.keys(values));
  const backup: TuningBackup = { target, previous, applied: values, by, at: new Date().toISOString() };
  // ALTER SYSTEM takes a custom parameter that the session knows.
  await client.query(`select set_config($1, '', false)`, [RECORD]);
  await client.query(`alter system set ${quoteIdent(RECORD)} = ${quoteLiteral(JSON.stringify(backup))}`);
  await store.writeDoc(store.tuningPath, backup);
  await setAll(client, values);
  await client.query('select pg_reload_conf()');
}

/**
 * Reverts this run's tuning (`by`: the run that applied it): 'reverted', or 'none' when there was
 * none. A record of another run is left to it ('another run'): that run took the target after this one
 * lost its lock (and had reverted this run's tuning as a leftover first).
 */
export async function revertTuning(client: pg.Client, store: StateStore, by: string): Promise<'reverted' | 'none' | 'another run'> {
  const record = await targetRecord(client);
  await store.removeDoc(store.tuningPath);
  if (record === undefined) return 'none';
  if (record.by !== undefined && record.by !== by) return 'another run';
  await restore(client, record);
  return 'reverted';
}
