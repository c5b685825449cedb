/** What online mode needs of both servers, checked before anything changes. */
import type pg from 'pg';
import { describePgError, oneRow } from '../pg/connect.ts';
import { quoteIdent, quoteLiteral } from '../pg/sql.ts';
import type { ServerFacts } from './facts.ts';

/** Settings of a server that logical replication depends on. */
async function settings(c: pg.Client, names: string[]): Promise<Record<string, string>> {
  const r = await c.query<{ name: string; setting: string }>('select name, setting from pg_settings where name = any($1::text[])', [names]);
  return Object.fromEntries(r.rows.map((row) => [row.name, row.setting]));
}

/**
 * The problems that keep online mode from working: the source's version and wal_level, enough
 * replication slots and WAL senders on the source and apply workers on the target for every
 * database at once, a source user that may replicate, and — tried from the target itself — a
 * connection from the target server to the source that pg_hba.conf accepts (a subscription that
 * creates no slot, dropped again).
 */
export async function onlineProblems(
  src: pg.Client,
  dst: pg.Client,
  facts: { source: ServerFacts; target: ServerFacts },
  databases: string[],
  conninfoFor: (db: string) => string,
): Promise<string[]> {
  const problems: string[] = [];
  if (facts.source.major < 10) return [`online mode needs a source of PostgreSQL 10 or newer (logical replication); the source runs ${facts.source.version}`];
  if (facts.target.major < 10) return [`online mode needs a target of PostgreSQL 10 or newer; the target runs ${facts.target.version}`];
  const s = await settings(src, ['wal_level', 'max_replication_slots', 'max_wal_senders']);
  const n = databases.length;
  if (s.wal_level !== 'logical') {
    problems.push(
      `the source runs with wal_level = ${s.wal_level ?? '?'}; online mode needs wal_level = logical, which takes a restart of the source: ALTER SYSTEM SET wal_level = logical; then restart the source server (pg_ctl restart, or your service manager)`,
    );
  }
  const used = oneRow(
    await src.query<{ slots: string; senders: string }>(
      'select (select count(*) from pg_replication_slots)::text as slots, (select count(*) from pg_stat_replication)::text as senders',
    ),
  );
  const freeSlots = Number(s.max_replication_slots ?? 0) - Number(used.slots);
  if (freeSlots < n) {
    problems.push(
      `the source has ${String(freeSlots)} free replication slots (max_replication_slots ${s.max_replication_slots ?? '?'}) but online mode keeps one per database, ${String(n)} here: raise max_replication_slots on the source (restart), or migrate at most ${String(Math.max(0, freeSlots))} databases at once with --include-db`,
    );
  }
  // One WAL sender per subscription, and one more while a database's slot exports its snapshot.
  const freeSenders = Number(s.max_wal_senders ?? 0) - Number(used.senders);
  if (freeSenders < n + 1) {
    problems.push(
      `the source has ${String(freeSenders)} free WAL senders (max_wal_senders ${s.max_wal_senders ?? '?'}) but online mode needs one per database plus one, ${String(n + 1)} here: raise max_wal_senders on the source (restart), or migrate fewer databases at once with --include-db`,
    );
  }
  const t = await settings(dst, ['max_logical_replication_workers', 'max_worker_processes']);
  if (Number(t.max_logical_replication_workers ?? 0) < n) {
    problems.push(
      `the target allows ${t.max_logical_replication_workers ?? '?'} logical replication workers (max_logical_replication_workers) but each of the ${String(n)} databases needs one: raise it on the target (restart), or migrate fewer databases at once`,
    );
  }
  if (Number(t.max_worker_processes ?? 0) < n + 1) {
    problems.push(
      `the target allows ${t.max_worker_processes ?? '?'} worker processes (max_worker_processes) but online mode needs ${String(n + 1)}: raise it on the target (restart)`,
    );
  }
  const role = oneRow(await src.query<{ ok: boolean }>('select rolsuper or rolreplication as ok from pg_roles where rolname = current_user'));
  if (!role.ok)
    problems.push(
      'the source user may not replicate: it needs the REPLICATION attribute (ALTER ROLE ... REPLICATION) and to own the tables, or to be a superuser',
    );
  if (problems.length > 0) return problems;
  // The target connects to the source itself: try it, as the subscriptions will.
  const probe = `pg_migrate_probe_${String(process.pid)}`;
  for (const db of databases) {
    try {
      await dst.query("set log_statement = 'none'");
      await dst.query("set log_min_error_statement = 'panic'");
      await dst.query('set client_min_messages = error');
      await dst.query(
        `create subscription ${quoteIdent(probe)} connection ${quoteLiteral(conninfoFor(db))} publication pg_migrate_probe ` +
          'with (connect = true, enabled = false, create_slot = false, slot_name = none, copy_data = false)',
      );
      await dst.query(`drop subscription ${quoteIdent(probe)}`);
    } catch (err) {
      await dst.query(`drop subscription if exists ${quoteIdent(probe)}`).catch(() => undefined);
      problems.push(
        `the target server cannot connect to the source's database ${db} for replication (${describePgError(err).replace(/password=\S+/g, 'password=***')}): allow it in the source's pg_hba.conf (a line for the database, not for "replication"), or pass --online-source with the address the target can reach`,
      );
    } finally {
      await dst.query('reset client_min_messages').catch(() => undefined);
    }
  }
  return problems;
}
