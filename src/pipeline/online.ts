/**
 * Online mode (--online): each database's copy reads the snapshot that a logical replication slot
 * exports, so that a subscription on the target attached to that slot afterwards (copy_data = false)
 * has PostgreSQL apply exactly the changes committed after the copy. No apply code of ours. Tables
 * that logical replication cannot keep in sync without breaking the source (no usable replica
 * identity, unlogged) are not published; they are copied at cutover, when writes are stopped, unless
 * --replica-identity-full lets the tool set REPLICA IDENTITY FULL on them (put back at cutover).
 */
import { createHash } from 'node:crypto';
import pg from 'pg';
import { clientConfig, describePgError, oneRow, pinnedSpec, withClient, type Server } from '../pg/connect.ts';
import { formatConninfo, parseConninfo, type ConninfoParams } from '../pg/conninfo-parse.ts';
import { foreignKeyPairs, replicationClasses, schemaFingerprint, type ReplicationClass } from '../pg/catalog.ts';
import { inSnapshot, type WithSnapshot } from '../pg/snapshot.ts';
import { qualify, quoteIdent, quoteLiteral } from '../pg/sql.ts';
import { MigrateError, errorMessage } from '../errors.ts';
import type { PairIdentity } from '../state/store.ts';
import { dbName, type Context, type DatabaseJob } from './context.ts';

/** What the state keeps of a database's replication (databases/<db>/online.json). */
export interface OnlineRecord {
  publication: string;
  slot: string;
  subscription: string;
  /** Tables not published (copied at cutover), with why and their size. */
  notReplicated: ReplicationClass[];
  /** Tables whose replica identity this migration set to FULL on the source, with the earlier setting. */
  identityFull: { schema: string; name: string; previous: string }[];
  /** The schema as the copy saw it (compared at cutover). */
  fingerprint?: Record<string, string>;
  /** The target's schema when it subscribed (a change the operator repeats there shows against it at cutover). */
  targetFingerprint?: Record<string, string>;
  /** Where the slot's consistent point was (the copy's snapshot). */
  consistentPoint?: string;
  /** Set once the subscription exists on the target. */
  subscribedAt?: string;
  /** Set once the database was cut over (its replication dropped). */
  cutoverAt?: string;
}

/** The names of one database's publication, slot and subscription: the pair's hash and the source database's oid. */
export function onlineNames(pair: PairIdentity, sourceDbOid: string): { publication: string; slot: string; subscription: string } {
  const hash = createHash('sha256').update(`${pair.source.systemIdentifier}>${pair.target.systemIdentifier}`).digest('hex').slice(0, 8);
  return { publication: `pg_migrate_${hash}`, slot: `pg_migrate_${hash}_${sourceDbOid}`, subscription: `pg_migrate_${hash}_${sourceDbOid}` };
}

/**
 * How the target server reaches the source for a database: --online-source (a keyword/value string
 * whose dbname is replaced) or the source connection the tool uses, with its password (kept in the
 * target's pg_subscription until the subscription is dropped; the statement is never logged).
 */
export function subscriptionConninfo(onlineSource: string | undefined, source: Server, db: string): string {
  if (onlineSource !== undefined) return formatConninfo({ ...parseConninfo(onlineSource), dbname: db });
  const spec = pinnedSpec(source);
  // Files named here are the tool's machine's; the target server would look for them on its own (--online-source then).
  const params: ConninfoParams = { ...spec.params, dbname: db, password: spec.password };
  const local = new Set(['passfile', 'service', 'servicefile', 'application_name', 'fallback_application_name']);
  return formatConninfo(Object.fromEntries(Object.entries(params).filter(([k]) => !local.has(k))));
}

/**
 * Before a database's copy (an earlier attempt's slot and publication dropped by the caller):
 * REPLICA IDENTITY FULL is set where the operator allowed it, and the publication is created — before
 * the slot, or changes committed in between are lost.
 */
export async function prepareReplication(
  ctx: Context,
  job: DatabaseJob,
  pair: PairIdentity,
  identityFullBefore: OnlineRecord['identityFull'],
): Promise<OnlineRecord> {
  const db = dbName(job);
  return withClient(ctx.source, db, async (c) => {
    const oid = oneRow(await c.query<{ oid: string }>('select oid::text as oid from pg_database where datname = current_database()')).oid;
    const names = onlineNames(pair, oid);
    const classes = await replicationClasses(c);
    const identityFull = [...identityFullBefore];
    if (ctx.options.replicaIdentityFull) {
      for (const t of classes.filter((x) => !x.publishable && x.why !== 'unlogged')) {
        const previous = oneRow(
          await c.query<{ r: string }>('select relreplident::text as r from pg_class where oid = $1::regclass', [qualify(t.schema, t.name)]),
        ).r;
        if (!identityFull.some((x) => x.schema === t.schema && x.name === t.name)) identityFull.push({ schema: t.schema, name: t.name, previous });
        await job.state.setDoc('online.json', { ...names, notReplicated: [], identityFull } satisfies OnlineRecord);
        await c.query(`alter table ${qualify(t.schema, t.name)} replica identity full`);
        t.publishable = true;
        delete t.why;
      }
    }
    const record: OnlineRecord = { ...names, notReplicated: classes.filter((t) => !t.publishable), identityFull };
    job.result.warnings.push(...truncateHazards(classes, await foreignKeyPairs(c)));
    await job.state.setDoc('online.json', record);
    const published = classes.filter((t) => t.publishable).map((t) => qualify(t.schema, t.name));
    await c.query(`drop publication if exists ${quoteIdent(names.publication)}`);
    await c.query(`create publication ${quoteIdent(names.publication)}${published.length > 0 ? ` for table ${published.join(', ')}` : ''}`);
    return record;
  });
}

/**
 * A table left out of the publication that references a published one: a TRUNCATE of the published
 * table on the source (with CASCADE) reaches the target without the referencing table, which the
 * target's apply worker then cannot truncate past: the replication of the database stops until the
 * referencing table is dealt with. Said before it happens.
 */
export function truncateHazards(classes: ReplicationClass[], fks: Awaited<ReturnType<typeof foreignKeyPairs>>): string[] {
  const key = (t: { schema: string; name: string }): string => `${t.schema}.${t.name}`;
  const published = new Set(classes.filter((t) => t.publishable).map(key));
  const left = new Map(classes.filter((t) => !t.publishable).map((t) => [key(t), t]));
  return fks
    .filter((f) => left.has(key(f.from)) && published.has(key(f.to)))
    .map((f) => {
      const why = left.get(key(f.from))?.why;
      const remedy =
        why === 'unlogged' ? `make ${key(f.from)} logged (ALTER TABLE ... SET LOGGED)` : `give ${key(f.from)} a primary key (or use --replica-identity-full)`;
      return `${key(f.from)} is not replicated (${why ?? 'left out'}; copied at cutover) but references ${key(f.to)}, which is: a TRUNCATE of ${key(f.to)} on the source would stop the replication (the target cannot truncate it while ${key(f.from)} references it); do not TRUNCATE it before the cutover, or ${remedy}`;
    });
}

/**
 * The snapshot of a replication slot created now for the database: held on its replication connection
 * (kept silent: any command would end the snapshot) while `fn` reads it; the schema's fingerprint is
 * taken in it for the cutover's check.
 */
export function slotSnapshot(ctx: Context, job: DatabaseJob, record: OnlineRecord): WithSnapshot {
  return async (fn) => {
    const db = dbName(job);
    const repl = new pg.Client({ ...clientConfig(ctx.source, db), replication: 'database' } as pg.ClientConfig);
    repl.on('error', () => undefined);
    await repl.connect();
    try {
      // The exporting walsender sits idle in a transaction while the copy reads its snapshot.
      await repl.query('set idle_in_transaction_session_timeout = 0');
      const slot = oneRow(
        await repl.query<{ snapshot_name: string; consistent_point: string }>(
          `CREATE_REPLICATION_SLOT ${quoteIdent(record.slot)} LOGICAL pgoutput EXPORT_SNAPSHOT`,
        ),
      );
      const fingerprint = await withClient(ctx.source, db, (c) => inSnapshot(c, slot.snapshot_name, () => schemaFingerprint(c)));
      await job.state.setDoc('online.json', { ...record, fingerprint, consistentPoint: slot.consistent_point } satisfies OnlineRecord);
      return await fn(slot.snapshot_name);
    } catch (err) {
      if (err instanceof MigrateError) throw err;
      if ((err as { code?: string }).code === '42710') {
        // Not recorded in this state, so not provably this migration's: the operator decides.
        throw new MigrateError(
          `${db}: the source already has a replication slot ${record.slot}, which this state does not record (an earlier online migration of this pair whose state was removed, with --fresh for instance); if nothing uses it (pg_replication_slots.active is false), drop it on the source with SELECT pg_drop_replication_slot('${record.slot}'), or run pg-migrate cleanup with that migration's --state-dir, then run again`,
        );
      }
      throw new MigrateError(`creating the replication slot ${record.slot} of ${db} on the source: ${describePgError(err)}`);
    } finally {
      await repl.end().catch(() => undefined);
    }
  };
}

/** Attaches the target database to its slot: PostgreSQL applies every change committed after the copy's snapshot. */
export async function subscribe(ctx: Context, job: DatabaseJob): Promise<void> {
  const db = dbName(job);
  const record = await job.state.doc<OnlineRecord>('online.json');
  if (!record) throw new MigrateError(`${db}: the record of its replication is missing from the state; migrate it afresh with --redo-db ${JSON.stringify(db)}`);
  const slotThere = await withClient(
    ctx.source,
    ctx.source.endpoint.database,
    async (c) => (await c.query('select 1 from pg_replication_slots where slot_name = $1', [record.slot])).rowCount === 1,
  );
  if (!slotThere) {
    throw new MigrateError(
      `${db}: its replication slot ${record.slot} is gone from the source, so the changes since its copy cannot be replayed; migrate it afresh with --redo-db ${JSON.stringify(db)}`,
    );
  }
  await withClient(ctx.target, db, async (c) => {
    // The copy (pg_dump) carried the source's publication of this migration along: it is not the target's.
    await c.query(`drop publication if exists ${quoteIdent(record.publication)}`);
    // The connection string holds a password: neither the statement nor a failure of it is logged.
    await c.query("set log_statement = 'none'");
    await c.query("set log_min_error_statement = 'panic'");
    await c.query('set log_min_duration_statement = -1');
    const exists =
      (
        await c.query('select 1 from pg_subscription where subname = $1 and subdbid = (select oid from pg_database where datname = current_database())', [
          record.subscription,
        ])
      ).rowCount === 1;
    if (!exists) {
      try {
        await c.query(
          `create subscription ${quoteIdent(record.subscription)} connection ${quoteLiteral(subscriptionConninfo(ctx.options.onlineSource, ctx.source, db))} publication ${quoteIdent(record.publication)} ` +
            `with (create_slot = false, slot_name = ${quoteLiteral(record.slot)}, copy_data = false, connect = true, enabled = true, synchronous_commit = 'on')`,
        );
      } catch (err) {
        throw new MigrateError(
          `${db}: the target could not subscribe to the source (${describePgError(err).replace(/password=\S+/g, 'password=***')}); check --online-source and the source's pg_hba.conf`,
        );
      }
    }
  });
  const targetFingerprint = await withClient(ctx.target, db, schemaFingerprint);
  await job.state.setDoc('online.json', { ...record, targetFingerprint, subscribedAt: new Date().toISOString() } satisfies OnlineRecord);
}

/**
 * Drops what replication of a database this migration created, and only that: its subscription on
 * the target (which drops the slot on the source), then the slot if still there, the publication,
 * and (unless `keepIdentity`) puts back the replica identity it changed. Safe to repeat.
 */
export async function dropReplication(
  ctx: Pick<Context, 'source' | 'target'>,
  db: string,
  record: OnlineRecord,
  opts: { keepIdentity?: boolean } = {},
): Promise<string[]> {
  const done: string[] = [];
  await withClient(ctx.target, ctx.target.endpoint.database, async (c) => {
    const sub = await c.query<{ enabled: boolean }>('select subenabled as enabled from pg_subscription where subname = $1', [record.subscription]);
    if (sub.rowCount === 0) return;
    await withClient(ctx.target, db, async (t) => {
      try {
        await t.query(`drop subscription ${quoteIdent(record.subscription)}`);
      } catch {
        // The source cannot be reached to drop the slot: detach the subscription from it first.
        await t.query(`alter subscription ${quoteIdent(record.subscription)} disable`);
        await t.query(`alter subscription ${quoteIdent(record.subscription)} set (slot_name = none)`);
        await t.query(`drop subscription ${quoteIdent(record.subscription)}`);
      }
    });
    done.push(`dropped the subscription ${record.subscription} of ${db} on the target`);
  }).catch((err: unknown) => {
    done.push(`could not drop the subscription ${record.subscription} of ${db} on the target: ${errorMessage(err)}`);
  });
  await withClient(ctx.source, ctx.source.endpoint.database, async (c) => {
    await c.query('select pg_terminate_backend(active_pid) from pg_replication_slots where slot_name = $1 and active_pid is not null', [record.slot]);
    const r = await c.query('select pg_drop_replication_slot(slot_name) from pg_replication_slots where slot_name = $1', [record.slot]);
    if ((r.rowCount ?? 0) > 0) done.push(`dropped the replication slot ${record.slot} on the source`);
  });
  await withClient(ctx.source, db, async (c) => {
    // After a cutover the database is read-only for new sessions: this one is the tool's.
    await c.query('set default_transaction_read_only = off');
    const p = await c.query('select 1 from pg_publication where pubname = $1', [record.publication]);
    if ((p.rowCount ?? 0) > 0) {
      await c.query(`drop publication ${quoteIdent(record.publication)}`);
      done.push(`dropped the publication ${record.publication} of ${db} on the source`);
    }
    if (opts.keepIdentity !== true) {
      for (const t of record.identityFull) {
        const how = t.previous === 'd' ? 'default' : t.previous === 'n' ? 'nothing' : t.previous === 'f' ? 'full' : 'default';
        await c.query(`alter table ${qualify(t.schema, t.name)} replica identity ${how}`).catch(() => undefined);
        done.push(`put back the replica identity of ${qualify(t.schema, t.name)} in ${db}`);
      }
    }
  }).catch((err: unknown) => {
    done.push(`could not clean ${db} on the source: ${errorMessage(err)}`);
  });
  return done;
}
