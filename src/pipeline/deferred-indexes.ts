/**
 * The indexes of deferred tables: saved exactly as the source has them, dropped on the target for the
 * load (rows load faster into a table without them, and each is then built sorted in one pass), and
 * rebuilt afterwards with everything that hangs on them. By default only secondary indexes are
 * dropped: the PRIMARY KEY/UNIQUE/EXCLUDE constraints stay, so applications writing meanwhile get
 * their duplicates refused. With --delay-drop-keys the immediate PRIMARY KEY/UNIQUE constraints of
 * ordinary tables go too (put back with `ADD CONSTRAINT … USING INDEX`, no second build).
 */
import PQueue from 'p-queue';
import type pg from 'pg';
import { createPool, describePgError, sqlState, withClient } from '../pg/connect.ts';
import { indexesOf } from '../pg/catalog.ts';
import { qualify, quoteIdent, quoteLiteral } from '../pg/sql.ts';
import { MigrateError } from '../errors.ts';
import type { DeferredPlan } from './deferred-plan.ts';
import type { Context } from './context.ts';

/** The PRIMARY KEY or UNIQUE constraint an index stands behind (--delay-drop-keys only). */
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
  /** pg_get_indexdef with an empty search_path (schema-qualified); ON ONLY for a partitioned index. */
  definition: string;
  /** Its tablespace (set as default_tablespace while it is built, as pg_dump does); null: the default. */
  tablespace?: string | null;
  /** An index of a partitioned table (built by attaching its partitions' indexes). */
  partitioned: boolean;
  /** The partitioned index this one is attached to, if any. */
  parent: { schema: string; name: string } | null;
  replicaIdentity: boolean;
  clustered: boolean;
  comment: string | null;
  /** The constraint it stands behind, when the keys were dropped too. */
  constraint?: SavedConstraint | null;
}

const SQLSTATE_DEPENDENT_OBJECTS = '2BP01';

/**
 * Sessions that change the target's schema for the tool's own bookkeeping fire no user trigger, event
 * triggers included (as pg_restore's data sessions with --disable-triggers).
 */
export const BOOKKEEPING_SESSION = "set session_replication_role = 'replica'";

/** The indexes of the deferred tables as the source defines them (`withKeys`: with the key constraints' indexes). */
export async function readSourceIndexes(ctx: Context, db: string, plan: DeferredPlan, withKeys: boolean): Promise<SavedIndex[]> {
  const rows = await withClient(ctx.source, db, (c) =>
    indexesOf(
      c,
      ctx.sourceMajor,
      plan.tables.map((t) => t.oid),
      withKeys,
    ),
  );
  return rows.map(({ parentSchema, parentName, constraintName, constraintType, constraintComment, ...ix }) => ({
    ...ix,
    parent: parentSchema !== null && parentName !== null ? { schema: parentSchema, name: parentName } : null,
    constraint: constraintName !== null && constraintType !== null ? { name: constraintName, type: constraintType, comment: constraintComment } : null,
  }));
}

/** State written before tablespaces were kept apart had ` TABLESPACE x` appended to the definition: taken apart here. */
function normalized(ix: SavedIndex): SavedIndex & { tablespace: string | null } {
  if (ix.tablespace !== undefined) return { ...ix, tablespace: ix.tablespace };
  const m = / TABLESPACE ("(?:[^"]|"")+"|[^\s"]+)$/.exec(ix.definition);
  if (!m?.[1]) return { ...ix, tablespace: null };
  const raw = m[1];
  const tablespace = raw.startsWith('"') ? raw.slice(1, -1).replaceAll('""', '"') : raw;
  return { ...ix, definition: ix.definition.slice(0, m.index), tablespace };
}

/** The statements that build an index as pg_dump restores it: its tablespace as default_tablespace, then its definition. */
function buildStatements(ix: SavedIndex): string[] {
  const n = normalized(ix);
  return [`set default_tablespace = ${n.tablespace === null ? "''" : quoteIdent(n.tablespace)}`, n.definition, 'reset default_tablespace'];
}

const dropStatement = (ix: SavedIndex): string =>
  ix.constraint
    ? `alter table ${qualify(ix.tableSchema, ix.tableName)} drop constraint if exists ${quoteIdent(ix.constraint.name)}`
    : `drop index if exists ${qualify(ix.schema, ix.name)}`;

const attachStatement = (ix: SavedIndex): string | undefined =>
  ix.parent ? `alter index ${qualify(ix.parent.schema, ix.parent.name)} attach partition ${qualify(ix.schema, ix.name)}` : undefined;

/** What hangs on a rebuilt index: its constraint, replica identity, CLUSTER and comments. */
function finishStatements(ix: SavedIndex): string[] {
  const table = qualify(ix.tableSchema, ix.tableName);
  const out: string[] = [];
  const k = ix.constraint;
  if (k) {
    out.push(`alter table ${table} add constraint ${quoteIdent(k.name)} ${k.type === 'p' ? 'primary key' : 'unique'} using index ${quoteIdent(ix.name)}`);
    if (k.comment !== null) out.push(`comment on constraint ${quoteIdent(k.name)} on ${table} is ${quoteLiteral(k.comment)}`);
  }
  if (ix.replicaIdentity) out.push(`alter table ${table} replica identity using index ${quoteIdent(ix.name)}`);
  if (ix.clustered) out.push(`alter table ${table} cluster on ${quoteIdent(ix.name)}`);
  if (ix.comment !== null) out.push(`comment on index ${qualify(ix.schema, ix.name)} is ${quoteLiteral(ix.comment)}`);
  return out;
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

/** The indexes to drop themselves: not those attached to a saved partitioned index (they go with it). */
function topLevel(saved: SavedIndex[]): SavedIndex[] {
  const names = new Set(saved.map((ix) => qualify(ix.schema, ix.name)));
  return saved.filter((ix) => !(ix.parent && names.has(qualify(ix.parent.schema, ix.parent.name))));
}

/** A foreign key to drop for the load and add back afterwards (--delay-drop-keys). */
export interface DroppedForeignKey {
  schema: string;
  table: string;
  name: string;
  definition: string;
}

const dropForeignKey = (fk: DroppedForeignKey): string => `alter table ${qualify(fk.schema, fk.table)} drop constraint if exists ${quoteIdent(fk.name)}`;
export const addForeignKey = (fk: DroppedForeignKey, notValid: boolean): string =>
  `alter table ${qualify(fk.schema, fk.table)} add constraint ${quoteIdent(fk.name)} ${fk.definition}${notValid ? ' not valid' : ''}`;

/**
 * Drops the saved indexes on the target (and, with --delay-drop-keys, the foreign keys from and to the
 * tables first: those to them depend on their keys), after proving in a transaction that is rolled back
 * that every one can be built again from its saved definition (on the still empty tables that costs
 * nothing): nothing is dropped that could not be rebuilt. An index that something else depends on (a
 * view grouping by a primary key, say) stays during the load and is reported. Returns the names kept.
 */
export async function dropIndexes(ctx: Context, db: string, saved: SavedIndex[], fks: DroppedForeignKey[]): Promise<string[]> {
  const byName = new Map(saved.map((ix) => [qualify(ix.schema, ix.name), ix]));
  const kept: string[] = [];
  await withClient(ctx.target, db, async (c) => {
    await c.query(BOOKKEEPING_SESSION);
    // The rehearsal: drop, rebuild everything as recreateIndexes will, roll back.
    await c.query('begin');
    try {
      for (const fk of fks) await c.query(dropForeignKey(fk));
      const dropped = await dropEach(c, topLevel(saved), kept, true);
      await replay(
        c,
        saved.filter((ix) => dropped.has(qualify(ix.schema, ix.name)) || (ix.parent && dropped.has(qualify(ix.parent.schema, ix.parent.name)))),
        byName,
      );
      for (const fk of fks) await c.query(addForeignKey(fk, true));
    } catch (err) {
      throw new MigrateError(
        `${db}: the saved definitions of the deferred tables' indexes cannot be built on the target, so nothing was dropped: ${describePgError(err)}`,
      );
    } finally {
      await c.query('rollback');
      await c.query('reset search_path');
    }
    kept.length = 0;
    for (const fk of fks) await c.query(dropForeignKey(fk));
    await dropEach(c, topLevel(saved), kept, false);
  });
  for (const name of kept) ctx.emit({ type: 'info', message: `${db}: kept index ${name} during the load: other objects depend on it` });
  return kept;
}

/**
 * Drops each index (or its constraint), each in a subtransaction of the open transaction or in a
 * transaction of its own; those something depends on are left and named in `kept`.
 */
async function dropEach(c: pg.Client, indexes: SavedIndex[], kept: string[], inTransaction: boolean): Promise<Set<string>> {
  const [start, done, undo] = inTransaction
    ? ['savepoint drop_index', 'release savepoint drop_index', 'rollback to savepoint drop_index']
    : ['begin', 'commit', 'rollback'];
  const dropped = new Set<string>();
  for (const ix of indexes) {
    const name = qualify(ix.schema, ix.name);
    try {
      await c.query(start);
      await c.query(dropStatement(ix));
      await c.query(done);
      dropped.add(name);
    } catch (err) {
      await c.query(undo);
      if (sqlState(err) !== SQLSTATE_DEPENDENT_OBJECTS) throw err;
      kept.push(name);
    }
  }
  return dropped;
}

/** Builds the given indexes one after the other on one session, as recreateIndexes does in parallel. */
async function replay(c: pg.Client, indexes: SavedIndex[], byName: Map<string, SavedIndex>): Promise<void> {
  await c.query("set search_path = ''");
  const ordered = [
    ...indexes.filter((ix) => ix.partitioned).sort((a, b) => depthOf(a, byName) - depthOf(b, byName)),
    ...indexes.filter((ix) => !ix.partitioned),
  ];
  for (const ix of ordered) for (const sql of buildStatements(ix)) await c.query(sql);
  for (const ix of indexes.filter((i) => i.parent !== null).sort((a, b) => depthOf(b, byName) - depthOf(a, byName))) {
    const sql = attachStatement(ix);
    if (sql) await c.query(sql);
  }
  for (const ix of indexes) for (const sql of finishStatements(ix)) await c.query(sql);
}

/** Whether a table has a constraint of that name. */
export async function constraintExists(c: pg.ClientBase, k: { schema: string; table: string; name: string }): Promise<boolean> {
  const r = await c.query('select 1 from pg_constraint where conrelid = to_regclass($1) and conname = $2', [qualify(k.schema, k.table), k.name]);
  return (r.rowCount ?? 0) > 0;
}

/**
 * Recreates the saved indexes as pg_dump would: partitioned indexes ON ONLY first (no data to read),
 * then every other index, `--restore-jobs` at a time, then each partition's index attached to its
 * parent, deepest first, so every index keeps its own name; then what hangs on each index (its
 * constraint with --delay-drop-keys, replica identity, CLUSTER, comments). An index that exists and is
 * valid is kept (resume); one left invalid is rebuilt.
 */
export async function recreateIndexes(ctx: Context, db: string, indexes: SavedIndex[]): Promise<void> {
  const jobs = Math.max(1, ctx.plan.parallelism.restoreJobs);
  const byName = new Map(indexes.map((ix) => [qualify(ix.schema, ix.name), ix]));
  const pool = createPool(ctx.target, db, jobs);
  pool.on('connect', (c) => {
    c.query(BOOKKEEPING_SESSION).catch(() => undefined);
  });
  const queue = new PQueue({ concurrency: jobs });
  const valid = async (c: pg.PoolClient, name: string): Promise<boolean | undefined> =>
    (await c.query<{ valid: boolean }>('select indisvalid as valid from pg_index where indexrelid = to_regclass($1)', [name])).rows[0]?.valid;
  const withConn = async <T>(ix: SavedIndex, fn: (c: pg.PoolClient, name: string) => Promise<T>): Promise<T> => {
    const c = await pool.connect();
    try {
      await c.query("set search_path = ''");
      return await fn(c, qualify(ix.schema, ix.name));
    } catch (err) {
      throw err instanceof MigrateError ? err : new MigrateError(`rebuilding index ${qualify(ix.schema, ix.name)}: ${describePgError(err)}`);
    } finally {
      c.release();
    }
  };
  const create = async (c: pg.PoolClient, ix: SavedIndex): Promise<void> => {
    for (const sql of buildStatements(ix)) await c.query(sql);
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
      const sql = attachStatement(ix);
      if (!p || !sql) continue;
      await withConn(ix, async (c, name) => {
        const r = await c.query('select 1 from pg_inherits where inhrelid = to_regclass($1) and inhparent = to_regclass($2)', [
          name,
          qualify(p.schema, p.name),
        ]);
        if ((r.rowCount ?? 0) === 0) await c.query(sql);
      });
    }
    for (const ix of indexes) {
      await withConn(ix, async (c, name) => {
        if ((await valid(c, name)) !== true) throw new MigrateError(`index ${name} is not valid after it was rebuilt`);
        const k = ix.constraint;
        const statements = finishStatements(ix);
        // A constraint already put back by an earlier run is not added twice.
        const skipFirst = k !== null && k !== undefined && (await constraintExists(c, { schema: ix.tableSchema, table: ix.tableName, name: k.name }));
        for (const sql of skipFirst ? statements.slice(1) : statements) await c.query(sql);
      });
    }
  } finally {
    await pool.end().catch(() => undefined);
  }
}
