import PQueue from 'p-queue';
import type pg from 'pg';
import { together, type Context } from './context.ts';
import type { DelayedPlan } from './delayed-plan.ts';
import type { DataPath } from './transfer.ts';
import type { DbResult } from '../events.ts';
import { createPool, describePgError, qualify, quoteIdent, quoteLiteral, withClient } from '../pg/connect.ts';
import { isDirectory } from '../state/store.ts';
import { aggregateKeys, compareCounts, countTables } from './counts.ts';
import { MigrateError } from '../errors.ts';
import { countsVariant } from '../state/names.ts';

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

/**
 * The PRIMARY KEY or UNIQUE constraint an index stands behind. Its index is rebuilt like any other and
 * attached with `ADD CONSTRAINT … USING INDEX`, which takes no time of its own; that form exists for
 * immediate PRIMARY KEY/UNIQUE constraints of ordinary tables only, so other constraints (EXCLUDE,
 * deferrable ones, those of partitioned tables and partitions) stay during the load.
 */
export interface SavedConstraint {
  name: string;
  type: 'p' | 'u';
  comment: string | null;
}

/** An index of a deferred table dropped for the load, exactly as the source has it. */
export interface SavedIndex {
  schema: string;
  name: string;
  tableSchema: string;
  tableName: string;
  /** pg_get_indexdef with an empty search_path (schema-qualified), tablespace appended; ON ONLY for a partitioned index. */
  definition: string;
  /** An index of a partitioned table (built by attaching its partitions' indexes). */
  partitioned: boolean;
  /** The partitioned index this one is attached to, if any. */
  parent: { schema: string; name: string } | null;
  replicaIdentity: boolean;
  clustered: boolean;
  comment: string | null;
  /** The constraint it stands behind (absent in state written before constraints were dropped too). */
  constraint?: SavedConstraint | null;
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

async function constraintExists(c: pg.Client | pg.PoolClient, k: { schema: string; table: string; name: string }): Promise<boolean> {
  const r = await c.query('select 1 from pg_constraint where conrelid = to_regclass($1) and conname = $2', [qualify(k.schema, k.table), k.name]);
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

/**
 * What the delayed verify counts: the deferred tables (always exactly) and the materialized views
 * refreshed after their load. The other tables were verified when the database became usable, and
 * from then on the target database is the applications' to change.
 */
const delayedSelection = (plan: DelayedPlan) => (key: string): boolean => plan.keys.has(key) || plan.matviewKeys.has(key);

/** The source's counts for the delayed verify. */
async function countDelayedSource(ctx: Context, db: string, plan: DelayedPlan, snapshot: string | undefined): Promise<void> {
  const variant = countsVariant(ctx.options.fastVerify, 'delayed');
  const r = await countTables({
    server: ctx.source,
    database: db,
    verifyQueue: ctx.verifyQueue,
    snapshot,
    select: delayedSelection(plan),
    fast: ctx.options.fastVerify ? { exact: plan.keys } : undefined,
    signal: ctx.signal,
  });
  await ctx.store.writeDoc(ctx.store.dbDocPath(db, `src_estimated.${variant}.json`), r.estimated);
  await ctx.store.setCounts(db, 'src', variant, r.counts);
}

/** Step 7, on the source queue (files path): data of the deferred tables, and all counts in the same snapshot. */
export async function runDelayedDump(ctx: Context, db: string, plan: DelayedPlan, dataPath: DataPath, withSnapshot: <T>(fn: (snapshot: string | undefined) => Promise<T>) => Promise<T>): Promise<void> {
  const { store, emit } = ctx;
  const variant = countsVariant(ctx.options.fastVerify, 'delayed');
  let dumped = await store.marker(db, 'delayed_dumped');
  if (dumped && !(await store.marker(db, 'delayed_done')) && !(await isDirectory(dataPath.location(db, 'delayed')))) {
    emit({ type: 'warning', db, message: `the deferred-table dump of ${db} is gone; dumping it again` });
    dumped = undefined;
  }
  const count = (snapshot: string | undefined): Promise<void> => countDelayedSource(ctx, db, plan, snapshot);
  if (!dumped) {
    await store.clearFrom(db, 'delayed_dumped');
    await store.clearCounts(db, 'src', variant);
    await store.clearCounts(db, 'dst', variant);
    await withSnapshot(async (snapshot) => {
      emit({ type: 'phase', db, phase: 'delayed dumping' });
      const t0 = performance.now();
      await together(() => dataPath.dumpTableData(db, plan.tables, { snapshot }), () => count(snapshot));
      await store.setMarker(db, 'delayed_dumped', { seconds: (performance.now() - t0) / 1000 });
    });
  } else if ((await store.counts(db, 'src', variant)) === undefined) await count(undefined);
}

async function readSourceIndexes(ctx: Context, db: string, plan: DelayedPlan): Promise<SavedIndex[]> {
  return withClient(ctx.source, db, async (c) => {
    await c.query("set search_path = ''");
    const r = await c.query<
      Omit<SavedIndex, 'parent' | 'constraint'> & {
        tablespace: string | null;
        parentSchema: string | null;
        parentName: string | null;
        constraintName: string | null;
        constraintType: 'p' | 'u' | null;
        constraintComment: string | null;
      }
    >(
      `select n.nspname as schema, ic.relname as name, tn.nspname as "tableSchema", t.relname as "tableName",
              pg_get_indexdef(i.indexrelid) as definition, ts.spcname as tablespace,
              ic.relkind = 'I' as partitioned,
              pn.nspname as "parentSchema", pc.relname as "parentName",
              i.indisreplident as "replicaIdentity", i.indisclustered as clustered,
              obj_description(i.indexrelid, 'pg_class') as comment,
              k.conname as "constraintName", k.contype::text as "constraintType", obj_description(k.oid, 'pg_constraint') as "constraintComment"
         from pg_index i
         join pg_class ic on ic.oid = i.indexrelid join pg_namespace n on n.oid = ic.relnamespace
         join pg_class t on t.oid = i.indrelid join pg_namespace tn on tn.oid = t.relnamespace
         left join pg_tablespace ts on ts.oid = ic.reltablespace
         left join pg_inherits h on h.inhrelid = i.indexrelid
         left join pg_class pc on pc.oid = h.inhparent left join pg_namespace pn on pn.oid = pc.relnamespace
         left join pg_constraint k on k.conindid = i.indexrelid and k.conrelid = i.indrelid and k.contype in ('p', 'u', 'x')
        where i.indrelid = any($1::oid[])
          and (k.oid is null or (k.contype in ('p', 'u') and not k.condeferrable and t.relkind = 'r' and not t.relispartition))
        order by n.nspname, ic.relname`,
      [plan.tables.map((t) => t.oid)],
    );
    return r.rows.map(({ tablespace, parentSchema, parentName, constraintName, constraintType, constraintComment, ...ix }) => ({
      ...ix,
      definition: tablespace ? `${ix.definition} TABLESPACE ${quoteIdent(tablespace)}` : ix.definition,
      parent: parentSchema !== null && parentName !== null ? { schema: parentSchema, name: parentName } : null,
      constraint: constraintName !== null && constraintType !== null ? { name: constraintName, type: constraintType, comment: constraintComment } : null,
    }));
  });
}

/**
 * Steps 8–11, on the target queue. With `stream` (the stream path, holding a source slot too), steps 7
 * and 9 are one: pg_dump of the deferred data piped into pg_restore after the indexes were dropped,
 * the source counted in the snapshot the dump used.
 */
export async function runDelayedTarget(
  ctx: Context,
  db: string,
  plan: DelayedPlan,
  dataPath: DataPath,
  result: DbResult,
  stream?: <T>(fn: (snapshot: string | undefined) => Promise<T>) => Promise<T>,
): Promise<void> {
  const { store, emit } = ctx;
  const indexFile = store.dbDocPath(db, 'delayed_indexes.json');
  const fks = await deferredForeignKeys(ctx, db, plan);

  // 8. Drop the indexes (and the PRIMARY KEY/UNIQUE constraints they stand behind), their exact
  // definitions saved first: rows load faster into a table without indexes, which are then built
  // sorted in one pass. The foreign keys from and to the tables go first (those to them depend on
  // their unique indexes); all are added back, validated, after the load.
  if (!(await store.marker(db, 'delayed_indexes_dropped'))) {
    emit({ type: 'phase', db, phase: 'dropping indexes' });
    let saved = await store.readDoc<SavedIndex[]>(indexFile);
    if (saved === undefined) {
      saved = await readSourceIndexes(ctx, db, plan);
      await store.writeDoc(indexFile, saved);
    }
    const savedNames = new Set(saved.map((ix) => qualify(ix.schema, ix.name)));
    await withClient(ctx.target, db, async (c) => {
      await dropForeignKeys(c, fks);
      for (const ix of saved) {
        // An index attached to a saved partitioned index goes with it.
        if (ix.parent && savedNames.has(qualify(ix.parent.schema, ix.parent.name))) continue;
        try {
          if (ix.constraint) await c.query(`alter table ${qualify(ix.tableSchema, ix.tableName)} drop constraint if exists ${quoteIdent(ix.constraint.name)}`);
          else await c.query(`drop index if exists ${qualify(ix.schema, ix.name)}`);
        } catch (err) {
          // Something else depends on it (a view grouping by the primary key, say): it stays during the load.
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
    await store.clearCounts(db, 'dst', countsVariant(ctx.options.fastVerify, 'delayed'));
    emit({ type: 'phase', db, phase: 'delayed restoring' });
    await emptyDeferredTables(ctx, db, plan, fks);
    const t0 = performance.now();
    if (stream) {
      const variant = countsVariant(ctx.options.fastVerify, 'delayed');
      await store.clearCounts(db, 'src', variant);
      await stream(async (snapshot) => {
        await together(
          async () => {
            const split = await dataPath.streamTableData(db, plan.tables, { snapshot });
            if (split.length > 0) result.splitTables = [...(result.splitTables ?? []), ...split];
          },
          () => countDelayedSource(ctx, db, plan, snapshot),
        );
        await store.setMarker(db, 'delayed_dumped', { seconds: 0, streamed: true });
        await store.setMarker(db, 'delayed_done', { seconds: (performance.now() - t0) / 1000 });
      });
    } else {
      await dataPath.restoreTableData(db);
      await store.setMarker(db, 'delayed_done', { seconds: (performance.now() - t0) / 1000 });
    }
    result.restoreSeconds = (result.restoreSeconds ?? 0) + Math.round((performance.now() - t0) / 10) / 100;
  }

  // 10. Rebuild the indexes in parallel (and put their PRIMARY KEY/UNIQUE constraints back on them), then
  // add the foreign keys back (or validate those that stayed) and refresh dependent materialized views.
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
    const variant = countsVariant(ctx.options.fastVerify, 'delayed');
    const t0 = performance.now();
    // Missing only when a run stopped between the load and its counts: counted now.
    if ((await store.counts(db, 'src', variant)) === undefined) await countDelayedSource(ctx, db, plan, undefined);
    const src = (await store.counts(db, 'src', variant))!;
    let dst = await store.counts(db, 'dst', variant);
    let estimated: string[] = [];
    let aggregates: Set<string> | undefined;
    if (dst === undefined) {
      const r = await countTables({
        server: ctx.target,
        database: db,
        verifyQueue: ctx.verifyQueue,
        select: delayedSelection(plan),
        fast: ctx.options.fastVerify ? { exact: plan.keys } : undefined,
        signal: ctx.signal,
      });
      dst = r.counts;
      estimated = r.estimated;
      aggregates = r.aggregates;
      await store.setCounts(db, 'dst', variant, dst);
    }
    const srcEstimated = (await store.readDoc<string[]>(store.dbDocPath(db, `src_estimated.${variant}.json`))) ?? [];
    const cmp = compareCounts(src, dst, new Set([...srcEstimated, ...estimated].filter((k) => !plan.keys.has(k))), aggregates ?? (await aggregateKeys(ctx.target, db)));
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

async function dropForeignKeys(c: pg.Client, fks: SavedForeignKey[]): Promise<void> {
  for (const fk of fks) await c.query(`alter table ${qualify(fk.schema, fk.table)} drop constraint if exists ${quoteIdent(fk.name)}`);
}

/**
 * A load that did not finish is never appended to: deferred tables holding rows are emptied first.
 * TRUNCATE refuses tables that foreign keys point at; those keys (ours, saved) were dropped with the
 * indexes already (a state from before that still has them: dropped here too), and come back after
 * the load. No user trigger fires (session_replication_role = replica).
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
    await dropForeignKeys(c, fks);
    await c.query(`truncate ${plan.tables.map((t) => qualify(t.schema, t.name)).join(', ')}`);
    await c.query('commit');
  });
}

/** Depth of an index in its chain of saved parents (0: not attached to a saved index). */
function depthOf(ix: SavedIndex, byName: Map<string, SavedIndex>): number {
  let depth = 0;
  for (let p = ix.parent; p && byName.has(qualify(p.schema, p.name)) && depth < 100; p = byName.get(qualify(p.schema, p.name))!.parent) depth++;
  return depth;
}

/**
 * Recreates the saved indexes as pg_dump would: partitioned indexes ON ONLY first (no data to read),
 * then every other index, `--restore-jobs` at a time, then each partition's index attached to its
 * parent, deepest first, so every index keeps its own name; then each PRIMARY KEY/UNIQUE constraint
 * is put back on its rebuilt index (`USING INDEX`: no second build, the lock held only for the catalog
 * change). An index that exists and is valid is kept (resume); one left invalid is rebuilt.
 */
async function recreateIndexes(ctx: Context, db: string, indexes: SavedIndex[]): Promise<void> {
  const jobs = Math.max(1, ctx.parallelism.restoreJobs);
  const byName = new Map(indexes.map((ix) => [qualify(ix.schema, ix.name), ix]));
  const pool = createPool(ctx.target, db, jobs);
  const queue = new PQueue({ concurrency: jobs });
  const valid = async (c: pg.PoolClient, name: string): Promise<boolean | undefined> =>
    (await c.query<{ valid: boolean }>('select indisvalid as valid from pg_index where indexrelid = to_regclass($1)', [name])).rows[0]?.valid;
  const withConn = async <T>(ix: SavedIndex, fn: (c: pg.PoolClient, name: string) => Promise<T>): Promise<T> => {
    const c = await pool.connect();
    try {
      return await fn(c, qualify(ix.schema, ix.name));
    } catch (err) {
      throw err instanceof MigrateError ? err : new MigrateError(`rebuilding index ${qualify(ix.schema, ix.name)}: ${describePgError(err)}`);
    } finally {
      c.release();
    }
  };
  const create = async (c: pg.PoolClient, ix: SavedIndex): Promise<void> => {
    await c.query("set search_path = ''");
    try {
      await c.query(ix.definition);
    } finally {
      await c.query('reset search_path');
    }
  };
  try {
    const partitioned = indexes.filter((ix) => ix.partitioned).sort((a, b) => depthOf(a, byName) - depthOf(b, byName));
    for (const ix of partitioned) {
      await withConn(ix, async (c, name) => {
        if ((await valid(c, name)) === undefined) await create(c, ix);
      });
    }
    await Promise.all(
      indexes
        .filter((ix) => !ix.partitioned)
        .map((ix) =>
          queue.add(
            () =>
              withConn(ix, async (c, name) => {
                const state = await valid(c, name);
                if (state === false) await c.query(`drop index ${name}`);
                if (state !== true) await create(c, ix);
              }),
            { signal: ctx.signal },
          ),
        ),
    );
    const attached = indexes.filter((ix) => ix.parent !== null).sort((a, b) => depthOf(b, byName) - depthOf(a, byName));
    for (const ix of attached) {
      await withConn(ix, async (c, name) => {
        const parent = qualify(ix.parent!.schema, ix.parent!.name);
        const r = await c.query('select 1 from pg_inherits where inhrelid = to_regclass($1) and inhparent = to_regclass($2)', [name, parent]);
        if ((r.rowCount ?? 0) === 0) await c.query(`alter index ${parent} attach partition ${name}`);
      });
    }
    for (const ix of indexes) {
      await withConn(ix, async (c, name) => {
        if ((await valid(c, name)) !== true) throw new MigrateError(`index ${name} is not valid after it was rebuilt`);
        const table = qualify(ix.tableSchema, ix.tableName);
        const k = ix.constraint;
        if (k) {
          if (!(await constraintExists(c, { schema: ix.tableSchema, table: ix.tableName, name: k.name }))) {
            await c.query(`alter table ${table} add constraint ${quoteIdent(k.name)} ${k.type === 'p' ? 'primary key' : 'unique'} using index ${quoteIdent(ix.name)}`);
          }
          if (k.comment !== null) await c.query(`comment on constraint ${quoteIdent(k.name)} on ${table} is ${quoteLiteral(k.comment)}`);
        }
        if (ix.replicaIdentity) await c.query(`alter table ${table} replica identity using index ${quoteIdent(ix.name)}`);
        if (ix.clustered) await c.query(`alter table ${table} cluster on ${quoteIdent(ix.name)}`);
        if (ix.comment !== null) await c.query(`comment on index ${name} is ${quoteLiteral(ix.comment)}`);
      });
    }
  } finally {
    await pool.end().catch(() => undefined);
  }
}
