import PQueue from 'p-queue';
import type pg from 'pg';
import type { Context } from './context.ts';
import type { DelayedPlan } from './delayed-plan.ts';
import type { DataPath } from './transfer.ts';
import type { DbResult } from '../events.ts';
import { createPool, describePgError, qualify, quoteIdent, quoteLiteral, withClient } from '../pg/connect.ts';
import { isDirectory } from '../state/store.ts';
import { compareCounts, countTables } from './counts.ts';
import { MigrateError } from '../errors.ts';
import type { CountsVariant } from '../state/names.ts';

/** A foreign key from or to a deferred table: created NOT VALID in the regular phase, validated after the load. */
export interface SavedForeignKey {
  /** pg_constraint oid on the source (to find its TOC entry). */
  oid: string;
  schema: string;
  table: string;
  name: string;
  /** pg_get_constraintdef with an empty search_path. */
  definition: string;
}

/** A secondary index of a deferred table, exactly as the source has it. */
export interface SavedIndex {
  schema: string;
  name: string;
  tableSchema: string;
  tableName: string;
  /** pg_get_indexdef with an empty search_path (schema-qualified), tablespace appended. */
  definition: string;
  replicaIdentity: boolean;
  clustered: boolean;
  comment: string | null;
}

const SQLSTATE_FEATURE_NOT_SUPPORTED = '0A000';
const SQLSTATE_DEPENDENT_OBJECTS = '2BP01';

/** The deferred tables' foreign keys, read once from the source and kept in the state directory. */
export async function deferredForeignKeys(ctx: Context, db: string, plan: DelayedPlan): Promise<SavedForeignKey[]> {
  const file = ctx.store.dbDocPath(db, 'delayed_fks.json');
  const saved = await ctx.store.readDoc<SavedForeignKey[]>(file);
  if (saved) return saved;
  const fks = await withClient(ctx.source, db, async (c) => {
    await c.query("set search_path = ''");
    const r = await c.query<SavedForeignKey>(
      `select k.oid::text as oid, n.nspname as schema, t.relname as "table", k.conname as name, pg_get_constraintdef(k.oid) as definition
         from pg_constraint k join pg_class t on t.oid = k.conrelid join pg_namespace n on n.oid = t.relnamespace
        where k.contype = 'f' ${ctx.sourceMajor >= 11 ? 'and k.conparentid = 0' : ''}
          and (k.conrelid = any($1::oid[]) or k.confrelid = any($1::oid[]))
        order by n.nspname, t.relname, k.conname`,
      [plan.tables.map((t) => t.oid)],
    );
    return r.rows;
  });
  await ctx.store.writeDoc(file, fks);
  return fks;
}

async function constraintExists(c: pg.Client | pg.PoolClient, fk: SavedForeignKey): Promise<boolean> {
  const r = await c.query('select 1 from pg_constraint where conrelid = to_regclass($1) and conname = $2', [qualify(fk.schema, fk.table), fk.name]);
  return (r.rowCount ?? 0) > 0;
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
      if ((err as { code?: string }).code === SQLSTATE_FEATURE_NOT_SUPPORTED) pending.push(fk);
      else throw new MigrateError(`cannot add foreign key ${fk.name} on ${qualify(fk.schema, fk.table)}: ${describePgError(err)}`);
    }
  }
  return pending;
}

/** Step 7, on the source queue: data of the deferred tables, and all counts in the same snapshot. */
export async function runDelayedDump(ctx: Context, db: string, plan: DelayedPlan, dataPath: DataPath, withSnapshot: <T>(fn: (snapshot: string | undefined) => Promise<T>) => Promise<T>): Promise<void> {
  const { store, emit } = ctx;
  const variant: CountsVariant = ctx.options.fastVerify ? 'delayed.fast' : 'delayed';
  let dumped = await store.marker(db, 'delayed_dumped');
  if (dumped && !(await store.marker(db, 'delayed_done')) && !(await isDirectory(dataPath.location(db, 'delayed')))) {
    emit({ type: 'warning', db, message: `the deferred-table dump of ${db} is gone; dumping it again` });
    dumped = undefined;
  }
  const count = async (snapshot: string | undefined): Promise<void> => {
    const r = await countTables({ server: ctx.source, database: db, verifyQueue: ctx.verifyQueue, snapshot, fast: ctx.options.fastVerify ? { exact: plan.keys } : undefined, signal: ctx.signal });
    await store.writeDoc(store.dbDocPath(db, `src_estimated.${variant}.json`), r.estimated);
    await store.setCounts(db, 'src', variant, r.counts);
  };
  if (!dumped) {
    await store.clearFrom(db, 'delayed_dumped');
    await store.clearCounts(db, 'src', variant);
    await store.clearCounts(db, 'dst', variant);
    await withSnapshot(async (snapshot) => {
      emit({ type: 'phase', db, phase: 'delayed dumping' });
      const t0 = performance.now();
      await dataPath.dumpTableData(db, plan.tables, { snapshot });
      await store.setMarker(db, 'delayed_dumped', { seconds: (performance.now() - t0) / 1000 });
      await count(snapshot);
    });
  } else if ((await store.counts(db, 'src', variant)) === undefined) await count(undefined);
}

async function readSourceIndexes(ctx: Context, db: string, plan: DelayedPlan): Promise<SavedIndex[]> {
  return withClient(ctx.source, db, async (c) => {
    await c.query("set search_path = ''");
    const r = await c.query<SavedIndex & { tablespace: string | null }>(
      `select n.nspname as schema, ic.relname as name, tn.nspname as "tableSchema", t.relname as "tableName",
              -- a partitioned table's index is printed ON ONLY (not recursing): rebuild it for all partitions
              case when ic.relkind = 'I'
                   then replace(pg_get_indexdef(i.indexrelid),
                                ' ON ONLY ' || quote_ident(tn.nspname) || '.' || quote_ident(t.relname) || ' ',
                                ' ON ' || quote_ident(tn.nspname) || '.' || quote_ident(t.relname) || ' ')
                   else pg_get_indexdef(i.indexrelid) end as definition,
              ts.spcname as tablespace,
              i.indisreplident as "replicaIdentity", i.indisclustered as clustered,
              obj_description(i.indexrelid, 'pg_class') as comment
         from pg_index i
         join pg_class ic on ic.oid = i.indexrelid join pg_namespace n on n.oid = ic.relnamespace
         join pg_class t on t.oid = i.indrelid join pg_namespace tn on tn.oid = t.relnamespace
         left join pg_tablespace ts on ts.oid = ic.reltablespace
        where i.indrelid = any($1::oid[])
          and not exists (select 1 from pg_constraint k where k.conindid = i.indexrelid)
          and not exists (select 1 from pg_inherits h where h.inhrelid = i.indexrelid)
        order by n.nspname, ic.relname`,
      [plan.tables.map((t) => t.oid)],
    );
    return r.rows.map(({ tablespace, ...ix }) => ({ ...ix, definition: tablespace ? `${ix.definition} TABLESPACE ${quoteIdent(tablespace)}` : ix.definition }));
  });
}

/** Steps 8–11, on the target queue. */
export async function runDelayedTarget(ctx: Context, db: string, plan: DelayedPlan, dataPath: DataPath, result: DbResult): Promise<void> {
  const { store, emit } = ctx;
  const indexFile = store.dbDocPath(db, 'delayed_indexes.json');
  const fks = await deferredForeignKeys(ctx, db, plan);

  // 8. Drop the secondary indexes, their exact definitions saved first.
  if (!(await store.marker(db, 'delayed_indexes_dropped'))) {
    emit({ type: 'phase', db, phase: 'dropping indexes' });
    let saved = await store.readDoc<SavedIndex[]>(indexFile);
    if (saved === undefined) {
      saved = await readSourceIndexes(ctx, db, plan);
      await store.writeDoc(indexFile, saved);
    }
    await withClient(ctx.target, db, async (c) => {
      for (const ix of saved) {
        try {
          await c.query(`drop index if exists ${qualify(ix.schema, ix.name)}`);
        } catch (err) {
          // On the target a foreign key may have chosen this unique index where the source's chose another.
          if ((err as { code?: string }).code !== SQLSTATE_DEPENDENT_OBJECTS) throw err;
          emit({ type: 'info', message: `${db}: kept index ${qualify(ix.schema, ix.name)} during the load: ${describePgError(err)}` });
        }
      }
    });
    await store.setMarker(db, 'delayed_indexes_dropped', { indexes: saved.length });
  }
  const indexes = await store.readDoc<SavedIndex[]>(indexFile);
  if (indexes === undefined) {
    throw new MigrateError(
      `${db}: the saved definitions of the dropped indexes are missing (${indexFile}); the indexes cannot be rebuilt from them. Run again with --redo-db ${JSON.stringify(db)} to migrate this database afresh`,
    );
  }

  // 9. Load the data, always into empty tables.
  if (!(await store.marker(db, 'delayed_done'))) {
    await store.clearFrom(db, 'delayed_done');
    await store.clearCounts(db, 'dst', ctx.options.fastVerify ? 'delayed.fast' : 'delayed');
    emit({ type: 'phase', db, phase: 'delayed restoring' });
    await emptyDeferredTables(ctx, db, plan, fks);
    const t0 = performance.now();
    await dataPath.restoreTableData(db);
    result.restoreSeconds = (result.restoreSeconds ?? 0) + Math.round((performance.now() - t0) / 10) / 100;
    await store.setMarker(db, 'delayed_done', { seconds: (performance.now() - t0) / 1000 });
  }

  // 10. Rebuild the indexes in parallel, then validate the foreign keys and refresh dependent materialized views.
  if (!(await store.marker(db, 'delayed_indexes_recreated'))) {
    emit({ type: 'phase', db, phase: 'recreating indexes', detail: `${indexes.length} indexes` });
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
    await store.setMarker(db, 'delayed_indexes_recreated', { indexes: indexes.length, foreignKeys: fks.length });
  }

  // 11. Count everything again (deferred tables exactly) and compare.
  const verified = await store.marker(db, 'delayed_verify');
  if (verified) result.rows = (verified.rows as number | undefined) ?? result.rows;
  else {
    emit({ type: 'phase', db, phase: 'delayed verifying' });
    const variant: CountsVariant = ctx.options.fastVerify ? 'delayed.fast' : 'delayed';
    const t0 = performance.now();
    const src = await store.counts(db, 'src', variant);
    if (src === undefined) throw new MigrateError(`${db}: the deferred phase's source counts are missing; run again to recount`);
    let dst = await store.counts(db, 'dst', variant);
    let estimated: string[] = [];
    if (dst === undefined) {
      const r = await countTables({ server: ctx.target, database: db, verifyQueue: ctx.verifyQueue, fast: ctx.options.fastVerify ? { exact: plan.keys } : undefined, signal: ctx.signal });
      dst = r.counts;
      estimated = r.estimated;
      await store.setCounts(db, 'dst', variant, dst);
    }
    const srcEstimated = (await store.readDoc<string[]>(store.dbDocPath(db, `src_estimated.${variant}.json`))) ?? [];
    const cmp = compareCounts(src, dst, new Set([...srcEstimated, ...estimated].filter((k) => !plan.keys.has(k))));
    result.verifySeconds = (result.verifySeconds ?? 0) + Math.round((performance.now() - t0) / 10) / 100;
    result.rows = cmp.rows;
    for (const w of cmp.warnings) {
      result.warnings.push(w);
      emit({ type: 'warning', db, message: w });
    }
    if (!cmp.ok) {
      await store.clearCounts(db, 'dst', variant);
      throw new MigrateError(`verification of the deferred phase failed: ${cmp.errors.slice(0, 20).join('; ')}`);
    }
    await store.setMarker(db, 'delayed_verify', { rows: cmp.rows });
  }
}

/**
 * A load that did not finish is never appended to: deferred tables holding rows are emptied first.
 * TRUNCATE refuses tables that foreign keys point at, so those keys (ours, saved) are dropped for the
 * moment and put back NOT VALID. No user trigger fires (session_replication_role = replica).
 */
async function emptyDeferredTables(ctx: Context, db: string, plan: DelayedPlan, fks: SavedForeignKey[]): Promise<void> {
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
    for (const fk of fks) await c.query(`alter table ${qualify(fk.schema, fk.table)} drop constraint if exists ${quoteIdent(fk.name)}`);
    await c.query(`truncate ${plan.tables.map((t) => qualify(t.schema, t.name)).join(', ')}`);
    await c.query('commit');
    await addForeignKeysNotValid(c, fks);
  });
}

/** Recreates the saved indexes, `--restore-jobs` at a time; one that exists and is valid is kept (resume). */
async function recreateIndexes(ctx: Context, db: string, indexes: SavedIndex[]): Promise<void> {
  const jobs = Math.max(1, ctx.parallelism.restoreJobs);
  const pool = createPool(ctx.target, db, jobs);
  const queue = new PQueue({ concurrency: jobs });
  try {
    await Promise.all(
      indexes.map((ix) =>
        queue.add(
          async () => {
            const c = await pool.connect();
            try {
              const name = qualify(ix.schema, ix.name);
              const state = await c.query<{ valid: boolean }>('select indisvalid as valid from pg_index where indexrelid = to_regclass($1)', [name]);
              if (state.rows[0]?.valid === false) await c.query(`drop index ${name}`);
              if (state.rows[0]?.valid !== true) {
                await c.query("set search_path = ''");
                await c.query(ix.definition);
                await c.query('reset search_path');
              }
              const check = await c.query<{ valid: boolean }>('select indisvalid as valid from pg_index where indexrelid = to_regclass($1)', [name]);
              if (check.rows[0]?.valid !== true) throw new MigrateError(`index ${name} is not valid after it was rebuilt`);
              const table = qualify(ix.tableSchema, ix.tableName);
              if (ix.replicaIdentity) await c.query(`alter table ${table} replica identity using index ${quoteIdent(ix.name)}`);
              if (ix.clustered) await c.query(`alter table ${table} cluster on ${quoteIdent(ix.name)}`);
              if (ix.comment !== null) await c.query(`comment on index ${name} is ${quoteLiteral(ix.comment)}`);
            } catch (err) {
              throw err instanceof MigrateError ? err : new MigrateError(`rebuilding index ${qualify(ix.schema, ix.name)}: ${describePgError(err)}`);
            } finally {
              c.release();
            }
          },
          { signal: ctx.signal },
        ),
      ),
    );
  } finally {
    await pool.end().catch(() => undefined);
  }
}
