/**
 * The deferred phase of a database (--delay-table-data): its deferred tables' data is dumped, their
 * indexes are dropped, the data is loaded, the indexes and foreign keys are rebuilt, and the tables
 * are verified.
 */
import type pg from 'pg';
import { describePgError, sqlState, withClient } from '../pg/connect.ts';
import { foreignKeysTouching, type ForeignKeyDef } from '../pg/catalog.ts';
import { qualify, quoteIdent } from '../pg/sql.ts';
import type { WithSnapshot } from '../pg/snapshot.ts';
import { isDirectory } from '../state/store.ts';
import { Marker } from '../state/names.ts';
import { MigrateError } from '../errors.ts';
import type { DataPath } from '../transfer/data-path.ts';
import type { DeferredPlan } from './deferred-plan.ts';
import { constraintExists, dropIndexes, readSourceIndexes, recreateIndexes, type SavedIndex } from './deferred-indexes.ts';
import { clearCounts, countSource, ensureSourceCounts, verifyPhase } from './verify.ts';
import { dbName, secondsSince, together, type Context, type DatabaseJob } from './context.ts';

/** A foreign key from or to a deferred table: created NOT VALID in the regular phase, validated after the load. */
export type SavedForeignKey = ForeignKeyDef;

const SQLSTATE_FEATURE_NOT_SUPPORTED = '0A000';

/** The deferred tables' foreign keys, read once from the source and kept in the state directory. */
export async function deferredForeignKeys(ctx: Context, job: DatabaseJob, plan: DeferredPlan): Promise<SavedForeignKey[]> {
  const saved = await job.state.doc<SavedForeignKey[]>('delayed_fks.json');
  if (saved) return saved;
  const fks = await withClient(ctx.source, dbName(job), (c) =>
    foreignKeysTouching(
      c,
      ctx.sourceMajor,
      plan.tables.map((t) => t.oid),
    ),
  );
  await job.state.setDoc('delayed_fks.json', fks);
  return fks;
}

/** Adds the foreign keys NOT VALID (enforced for new rows, existing rows checked later). Returns those PostgreSQL refused NOT VALID for. */
export async function addForeignKeysNotValid(c: pg.Client, fks: SavedForeignKey[]): Promise<SavedForeignKey[]> {
  const pending: SavedForeignKey[] = [];
  for (const fk of fks) {
    if (await constraintExists(c, fk)) continue;
    try {
      await c.query(`alter table ${qualify(fk.schema, fk.table)} add constraint ${quoteIdent(fk.name)} ${fk.definition} not valid`);
    } catch (err) {
      // Partitioned tables take no NOT VALID foreign key before PostgreSQL 18: added after the load.
      if (sqlState(err) === SQLSTATE_FEATURE_NOT_SUPPORTED) pending.push(fk);
      else throw new MigrateError(`cannot add foreign key ${fk.name} on ${qualify(fk.schema, fk.table)}: ${describePgError(err)}`);
    }
  }
  return pending;
}

async function dropForeignKeys(c: pg.Client, fks: SavedForeignKey[]): Promise<void> {
  for (const fk of fks) await c.query(`alter table ${qualify(fk.schema, fk.table)} drop constraint if exists ${quoteIdent(fk.name)}`);
}

/** On the source queue (files path): data of the deferred tables, and their counts in the same snapshot. */
export async function dumpDeferred(ctx: Context, job: DatabaseJob, plan: DeferredPlan, dataPath: DataPath, withSnapshot: WithSnapshot): Promise<void> {
  const { emit } = ctx;
  const db = dbName(job);
  let dumped = await job.state.marker(Marker.deferredDumped);
  if (dumped && !(await job.state.marker(Marker.deferredLoaded)) && !(await isDirectory(dataPath.location(db, 'deferred')))) {
    emit({ type: 'warning', db, message: `the deferred-table dump of ${db} is gone; dumping it again` });
    dumped = undefined;
  }
  if (dumped) {
    await ensureSourceCounts(ctx, job, 'deferred');
    return;
  }
  await job.state.clearFrom(Marker.deferredDumped);
  await clearCounts(job, 'src', 'deferred');
  await clearCounts(job, 'dst', 'deferred');
  await withSnapshot(async (snapshot) => {
    emit({ type: 'phase', db, phase: 'deferred dumping' });
    const t0 = performance.now();
    await together(
      () => dataPath.dumpTableData(job.plan, plan.tables, { snapshot }),
      () => countSource(ctx, job, 'deferred', snapshot),
    );
    await job.state.setMarker(Marker.deferredDumped, { seconds: secondsSince(t0) });
  });
}

/**
 * On the target queue: drop the indexes, load, rebuild, verify. With `stream` (the stream path,
 * holding a source slot too), dumping and loading are one step: pg_dump of the deferred data piped
 * into pg_restore after the indexes were dropped, the source counted in the snapshot the dump used.
 */
export async function loadDeferred(ctx: Context, job: DatabaseJob, plan: DeferredPlan, dataPath: DataPath, stream?: WithSnapshot): Promise<void> {
  const { emit } = ctx;
  const db = dbName(job);
  const fks = await deferredForeignKeys(ctx, job, plan);

  // Drop the indexes (and the PRIMARY KEY/UNIQUE constraints they stand behind), their exact
  // definitions saved first. The foreign keys from and to the tables go first (those to them depend
  // on their unique indexes); all are added back, validated, after the load.
  if (!(await job.state.marker(Marker.deferredIndexesDropped))) {
    emit({ type: 'phase', db, phase: 'dropping indexes' });
    let saved = await job.state.doc<SavedIndex[]>('delayed_indexes.json');
    if (saved === undefined) {
      saved = await readSourceIndexes(ctx, db, plan);
      await job.state.setDoc('delayed_indexes.json', saved);
    }
    const toDrop = saved;
    await withClient(ctx.target, db, async (c) => {
      await dropForeignKeys(c, fks);
      await dropIndexes(ctx, c, db, toDrop);
    });
    await job.state.setMarker(Marker.deferredIndexesDropped, { indexes: saved.length });
  }
  const indexes = await job.state.doc<SavedIndex[]>('delayed_indexes.json');
  if (indexes === undefined) {
    throw new MigrateError(
      `${db}: the saved definitions of the dropped indexes are missing (${job.state.docPath('delayed_indexes.json')}); the indexes cannot be rebuilt from them. Run again with --redo-db ${JSON.stringify(db)} to migrate this database afresh`,
    );
  }

  // Load the data, always into empty tables.
  if (!(await job.state.marker(Marker.deferredLoaded))) {
    await job.state.clearFrom(Marker.deferredLoaded);
    await clearCounts(job, 'dst', 'deferred');
    emit({ type: 'phase', db, phase: 'deferred loading' });
    await emptyDeferredTables(ctx, db, plan, fks);
    const t0 = performance.now();
    if (stream) {
      await clearCounts(job, 'src', 'deferred');
      await stream(async (snapshot) => {
        await together(
          async () => {
            const split = await dataPath.streamTableData(job.plan, plan.tables, { snapshot });
            if (split.length > 0) job.result.splitTables = [...(job.result.splitTables ?? []), ...split];
          },
          () => countSource(ctx, job, 'deferred', snapshot),
        );
        await job.state.setMarker(Marker.deferredDumped, { seconds: 0, streamed: true });
        await job.state.setMarker(Marker.deferredLoaded, { seconds: secondsSince(t0) });
      });
    } else {
      await dataPath.restoreTableData(job.plan);
      await job.state.setMarker(Marker.deferredLoaded, { seconds: secondsSince(t0) });
    }
    job.result.restoreSeconds = (job.result.restoreSeconds ?? 0) + secondsSince(t0);
  }

  // Rebuild the indexes in parallel (and put their PRIMARY KEY/UNIQUE constraints back on them), then
  // add the foreign keys back (or validate those that stayed) and refresh dependent materialized views.
  if (!(await job.state.marker(Marker.deferredIndexesRebuilt))) {
    emit({ type: 'phase', db, phase: 'rebuilding indexes', detail: `${String(indexes.length)} indexes` });
    await recreateIndexes(ctx, db, indexes);
    await withClient(ctx.target, db, async (c) => {
      for (const fk of fks) {
        const target = qualify(fk.schema, fk.table);
        if (!(await constraintExists(c, fk))) await c.query(`alter table ${target} add constraint ${quoteIdent(fk.name)} ${fk.definition}`);
        else await c.query(`alter table ${target} validate constraint ${quoteIdent(fk.name)}`);
      }
      for (const mv of plan.dependentMatviews) await c.query(`refresh materialized view ${qualify(mv.schema, mv.name)}`);
    }).catch((err: unknown) => {
      throw err instanceof MigrateError ? err : new MigrateError(`after loading the deferred tables: ${describePgError(err)}`);
    });
    await job.state.setMarker(Marker.deferredIndexesRebuilt, { indexes: indexes.length, foreignKeys: fks.length });
  }

  await verifyPhase(ctx, job, 'deferred');
}

/**
 * A load that did not finish is never appended to: deferred tables holding rows are emptied first.
 * TRUNCATE refuses tables that foreign keys point at; those keys (ours, saved) were dropped with the
 * indexes already (a state from before that still has them: dropped here too), and come back after
 * the load. No user trigger fires (session_replication_role = replica).
 */
async function emptyDeferredTables(ctx: Context, db: string, plan: DeferredPlan, fks: SavedForeignKey[]): Promise<void> {
  await withClient(ctx.target, db, async (c) => {
    let dirty = false;
    for (const t of plan.tables) {
      if (t.kind !== 'r') continue;
      const r = await c.query(`select 1 from only ${qualify(t.schema, t.name)} limit 1`);
      if ((r.rowCount ?? 0) > 0) {
        dirty = true;
        break;
      }
    }
    if (!dirty) return;
    ctx.emit({ type: 'info', message: `${db}: emptying the deferred tables left partly loaded by an interrupted run` });
    await c.query('begin');
    await c.query('set local session_replication_role = replica');
    await dropForeignKeys(c, fks);
    await c.query(`truncate ${plan.tables.map((t) => qualify(t.schema, t.name)).join(', ')}`);
    await c.query('commit');
  });
}
