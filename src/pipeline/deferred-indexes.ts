/**
 * The indexes of deferred tables: saved exactly as the source has them, dropped on the target for the
 * load (rows load faster into a table without indexes, which are then built sorted in one pass), and
 * rebuilt afterwards with everything that hangs on them.
 */
import PQueue from 'p-queue';
import type pg from 'pg';
import { createPool, describePgError, sqlState, withClient } from '../pg/connect.ts';
import { indexesOf } from '../pg/catalog.ts';
import { qualify, quoteIdent, quoteLiteral } from '../pg/sql.ts';
import { MigrateError } from '../errors.ts';
import type { DeferredPlan } from './deferred-plan.ts';
import type { Context } from './context.ts';

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

const SQLSTATE_DEPENDENT_OBJECTS = '2BP01';

/** The indexes of the deferred tables as the source defines them. */
export async function readSourceIndexes(ctx: Context, db: string, plan: DeferredPlan): Promise<SavedIndex[]> {
  const rows = await withClient(ctx.source, db, (c) =>
    indexesOf(
      c,
      ctx.sourceMajor,
      plan.tables.map((t) => t.oid),
      true,
    ),
  );
  return rows.map(({ tablespace, parentSchema, parentName, constraintName, constraintType, constraintComment, ...ix }) => ({
    ...ix,
    definition: tablespace ? `${ix.definition} TABLESPACE ${quoteIdent(tablespace)}` : ix.definition,
    parent: parentSchema !== null && parentName !== null ? { schema: parentSchema, name: parentName } : null,
    constraint: constraintName !== null && constraintType !== null ? { name: constraintName, type: constraintType, comment: constraintComment } : null,
  }));
}

/**
 * Drops the saved indexes (and the PRIMARY KEY/UNIQUE constraints they stand behind) on the target.
 * An index attached to a saved partitioned index goes with it; one that something else depends on (a
 * view grouping by the primary key, say) stays during the load and is reported.
 */
export async function dropIndexes(ctx: Context, c: pg.Client, db: string, saved: SavedIndex[]): Promise<void> {
  const savedNames = new Set(saved.map((ix) => qualify(ix.schema, ix.name)));
  for (const ix of saved) {
    if (ix.parent && savedNames.has(qualify(ix.parent.schema, ix.parent.name))) continue;
    try {
      if (ix.constraint) await c.query(`alter table ${qualify(ix.tableSchema, ix.tableName)} drop constraint if exists ${quoteIdent(ix.constraint.name)}`);
      else await c.query(`drop index if exists ${qualify(ix.schema, ix.name)}`);
    } catch (err) {
      if (sqlState(err) !== SQLSTATE_DEPENDENT_OBJECTS) throw err;
      ctx.emit({ type: 'info', message: `${db}: kept index ${qualify(ix.schema, ix.name)} during the load: ${describePgError(err)}` });
    }
  }
}

/** Whether a table has a constraint of that name. */
export async function constraintExists(c: pg.ClientBase, k: { schema: string; table: string; name: string }): Promise<boolean> {
  const r = await c.query('select 1 from pg_constraint where conrelid = to_regclass($1) and conname = $2', [qualify(k.schema, k.table), k.name]);
  return (r.rowCount ?? 0) > 0;
}

/** Depth of an index in its chain of saved parents (0: not attached to a saved index). */
function depthOf(ix: SavedIndex, byName: Map<string, SavedIndex>): number {
  let depth = 0;
  for (let p = ix.parent; p && depth < 100; depth++) {
    const parent = byName.get(qualify(p.schema, p.name));
    if (!parent) break;
    p = parent.parent;
  }
  return depth;
}

/**
 * Recreates the saved indexes as pg_dump would: partitioned indexes ON ONLY first (no data to read),
 * then every other index, `--restore-jobs` at a time, then each partition's index attached to its
 * parent, deepest first, so every index keeps its own name; then each PRIMARY KEY/UNIQUE constraint
 * is put back on its rebuilt index (`USING INDEX`: no second build, the lock held only for the catalog
 * change). An index that exists and is valid is kept (resume); one left invalid is rebuilt.
 */
export async function recreateIndexes(ctx: Context, db: string, indexes: SavedIndex[]): Promise<void> {
  const jobs = Math.max(1, ctx.plan.parallelism.restoreJobs);
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
      const p = ix.parent;
      if (!p) continue;
      await withConn(ix, async (c, name) => {
        const parent = qualify(p.schema, p.name);
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
            await c.query(
              `alter table ${table} add constraint ${quoteIdent(k.name)} ${k.type === 'p' ? 'primary key' : 'unique'} using index ${quoteIdent(ix.name)}`,
            );
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
