/**
 * The deferred phase of a database (--delay-table-data), after its regular phase verified and the
 * database is open for use: the deferred tables' secondary indexes are dropped (their keys, foreign
 * keys, triggers and sequences stay, so applications can write meanwhile), their data is loaded from
 * one snapshot of the source, the indexes are rebuilt and the foreign keys validated, and the tables
 * are verified. Holds a source slot and a target slot, like the stream path.
 */
import type pg from 'pg';
import { describePgError, sqlState, withClient } from '../pg/connect.ts';
import { foreignKeysTouching, type ForeignKeyDef } from '../pg/catalog.ts';
import { qualify, quoteIdent } from '../pg/sql.ts';
import { withExportedSnapshot } from '../pg/snapshot.ts';
import { Marker } from '../state/names.ts';
import { MigrateError } from '../errors.ts';
import type { DataPath } from '../transfer/data-path.ts';
import type { DeferredPlan } from './deferred-plan.ts';
import { addForeignKey, BOOKKEEPING_SESSION, constraintExists, dropIndexes, readSourceIndexes, recreateIndexes, type SavedIndex } from './deferred-indexes.ts';
import { deferredLoad, loadedCounts, loadUnits, undoInterruptedLoad } from './deferred-load.ts';
import { clearCounts, countSource, verifyPhase } from './verify.ts';
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
  await c.query(BOOKKEEPING_SESSION);
  for (const fk of fks) {
    if (await constraintExists(c, fk)) continue;
    try {
      await c.query(addForeignKey(fk, true));
    } catch (err) {
      // Partitioned tables take no NOT VALID foreign key before PostgreSQL 18: added after the load.
      if (sqlState(err) === SQLSTATE_FEATURE_NOT_SUPPORTED) pending.push(fk);
      else throw new MigrateError(`cannot add foreign key ${fk.name} on ${qualify(fk.schema, fk.table)}: ${describePgError(err)}`);
    }
  }
  return pending;
}

/** The deferred phase, on a source and a target slot; each step skipped when its marker says it is done. */
export async function loadDeferred(ctx: Context, job: DatabaseJob, plan: DeferredPlan, dataPath: DataPath): Promise<void> {
  const { emit } = ctx;
  const db = dbName(job);
  const fks = await deferredForeignKeys(ctx, job, plan);
  const dropKeys = ctx.options.delayDropKeys;

  if (!(await job.state.marker(Marker.deferredIndexesDropped))) {
    emit({ type: 'phase', db, phase: 'dropping indexes' });
    let saved = await job.state.doc<SavedIndex[]>('delayed_indexes.json');
    if (saved === undefined) {
      saved = await readSourceIndexes(ctx, db, plan, dropKeys);
      await job.state.setDoc('delayed_indexes.json', saved);
    }
    await dropIndexes(ctx, db, saved, dropKeys ? fks : []);
    await job.state.setMarker(Marker.deferredIndexesDropped, { indexes: saved.length, keysDropped: dropKeys });
  }
  const indexes = await job.state.doc<SavedIndex[]>('delayed_indexes.json');
  if (indexes === undefined) {
    throw new MigrateError(
      `${db}: the saved definitions of the dropped indexes are missing (${job.state.docPath('delayed_indexes.json')}); the indexes cannot be rebuilt from them. Run again with --redo-db ${JSON.stringify(db)} to migrate this database afresh`,
    );
  }

  if (!(await job.state.marker(Marker.deferredLoaded))) {
    await job.state.clearFrom(Marker.deferredDumped);
    await clearCounts(job, 'src', 'deferred');
    await clearCounts(job, 'dst', 'deferred');
    emit({ type: 'phase', db, phase: 'deferred loading' });
    await undoInterruptedLoad(ctx, job, deferredLoad(plan));
    const t0 = performance.now();
    await withExportedSnapshot(ctx.source, db, async (snapshot) => {
      await together(
        async () => {
          const split = await loadUnits(ctx, job, deferredLoad(plan), snapshot, `${dataPath.location(db, 'deferred')}.ranges`);
          if (split.length > 0) job.result.splitTables = [...(job.result.splitTables ?? []), ...split];
        },
        () => countSource(ctx, job, 'deferred', snapshot),
      );
    });
    await job.state.setMarker(Marker.deferredDumped, { seconds: 0, streamed: true });
    await job.state.setMarker(Marker.deferredLoaded, { seconds: secondsSince(t0) });
    job.result.restoreSeconds = (job.result.restoreSeconds ?? 0) + secondsSince(t0);
  }

  // Rebuild the indexes in parallel, then validate the foreign keys (or add back those that could not
  // wait NOT VALID, or that --delay-drop-keys dropped) and refresh dependent materialized views.
  if (!(await job.state.marker(Marker.deferredIndexesRebuilt))) {
    emit({ type: 'phase', db, phase: 'rebuilding indexes', detail: `${String(indexes.length)} indexes` });
    await recreateIndexes(ctx, db, indexes);
    await withClient(ctx.target, db, async (c) => {
      await c.query(BOOKKEEPING_SESSION);
      for (const fk of fks) {
        if (!(await constraintExists(c, fk))) await c.query(addForeignKey(fk, false));
        else await c.query(`alter table ${qualify(fk.schema, fk.table)} validate constraint ${quoteIdent(fk.name)}`);
      }
      for (const mv of plan.dependentMatviews) await c.query(`refresh materialized view ${qualify(mv.schema, mv.name)}`);
    }).catch((err: unknown) => {
      throw err instanceof MigrateError ? err : new MigrateError(`after loading the deferred tables: ${describePgError(err)}`);
    });
    await job.state.setMarker(Marker.deferredIndexesRebuilt, { indexes: indexes.length, foreignKeys: fks.length });
  }

  await verifyPhase(ctx, job, 'deferred', () => loadedCounts(ctx, job, plan));
}
