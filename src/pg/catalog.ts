/**
 * Catalog queries, each guarded by the server's major version where a column or feature is newer than
 * the oldest server supported (see the README's versions): the only place that knows which catalog
 * column exists since when. Kept as one file over 300 lines on purpose: the version guards belong
 * side by side.
 */
import type pg from 'pg';

type Client = pg.ClientBase;

/** User schemas: not the system's, not TOAST or temporary ones. */
export const USER_SCHEMA = `n.nspname not in ('pg_catalog', 'information_schema') and n.nspname !~ '^pg_(toast|temp_|toast_temp_)'`;

/** `and <column> = 0` from the version that has the column (conparentid: 11), nothing before. */
const since = (major: number, first: number, sql: string): string => (major >= first ? sql : '');

export interface DatabaseRow {
  name: string;
  /** null when the user may not connect to it. */
  sizeBytes: number | null;
  allowConnections: boolean;
  /** A template (datistemplate). */
  isTemplate: boolean;
}

/** The databases of a server but template0 (which nobody can change). */
export async function listDatabases(client: Client): Promise<DatabaseRow[]> {
  const r = await client.query<{ datname: string; size: string | null; datallowconn: boolean; datistemplate: boolean }>(
    `select datname, datallowconn, datistemplate,
            case when datallowconn and has_database_privilege(oid, 'CONNECT') then pg_database_size(oid)::text end as size
       from pg_database
      where datname <> 'template0'`,
  );
  return r.rows.map((row) => ({
    name: row.datname,
    sizeBytes: row.size === null ? null : Number(row.size),
    allowConnections: row.datallowconn,
    isTemplate: row.datistemplate,
  }));
}

/** SQL: the object `oid` of catalog `classid` is not a member of an extension. */
export const notExtension = (classid: string, oid: string): string =>
  `not exists (select 1 from pg_depend d where d.classid = '${classid}'::regclass and d.objid = ${oid} and d.deptype = 'e')`;

/**
 * The objects a user made in a database that exists on every server (postgres, template1), by kind;
 * empty when it holds none. Extension members and the public schema itself do not count.
 */
export async function userObjects(client: Client, major: number): Promise<string[]> {
  const r = await client.query<{ kind: string; n: string }>(
    `select 'tables, views or sequences' as kind, count(*)::text as n from pg_class c join pg_namespace n on n.oid = c.relnamespace
      where c.relkind in ('r', 'p', 'v', 'm', 'S', 'f') and ${USER_SCHEMA} and ${notExtension('pg_class', 'c.oid')}
     union all
     select 'functions', count(*)::text from pg_proc p join pg_namespace n on n.oid = p.pronamespace
      where ${USER_SCHEMA} and ${notExtension('pg_proc', 'p.oid')}
     union all
     select 'types', count(*)::text from pg_type t join pg_namespace n on n.oid = t.typnamespace
      where ${USER_SCHEMA} and t.typtype in ('e', 'd', 'r', 'c') and (t.typrelid = 0 or (select relkind from pg_class where oid = t.typrelid) = 'c')
        and ${notExtension('pg_type', 't.oid')}
     union all
     select 'schemas', count(*)::text from pg_namespace n where ${USER_SCHEMA} and n.nspname <> 'public' and ${notExtension('pg_namespace', 'n.oid')}
     union all
     select 'extensions', count(*)::text from pg_extension where extname <> 'plpgsql'
     union all
     select 'large objects', count(*)::text from pg_largeobject_metadata${since(
       major,
       10,
       `
     union all
     select 'publications', count(*)::text from pg_publication`,
     )}
     union all
     select 'event triggers', count(*)::text from pg_event_trigger`,
  );
  return r.rows.filter((row) => row.n !== '0').map((row) => `${row.n} ${row.kind}`);
}

export interface TableRef {
  schema: string;
  name: string;
  /** r: table, p: partitioned table, m: materialized view */
  kind: 'r' | 'p' | 'm';
  /** pg_class.reltuples (-1: never analyzed on PostgreSQL 14+). */
  reltuples: number;
  relpages: number;
}

/** Every table, partitioned table and populated materialized view in every user schema. */
export async function listTables(client: Client): Promise<TableRef[]> {
  const r = await client.query<{ schema: string; name: string; kind: 'r' | 'p' | 'm'; reltuples: number; relpages: number }>(
    `select n.nspname as schema, c.relname as name, c.relkind::text as kind, c.reltuples::float8 as reltuples, c.relpages as relpages
       from pg_class c join pg_namespace n on n.oid = c.relnamespace
      where c.relkind in ('r', 'p', 'm')
        and (c.relkind <> 'm' or c.relispopulated)
        and ${USER_SCHEMA}
      order by n.nspname, c.relname`,
  );
  // float8 and int4 arrive as numbers already.
  return r.rows;
}

/**
 * The foreign keys between ordinary tables, each with the PRIMARY KEY or UNIQUE constraint whose index
 * it references (pg_constraint oids). A foreign key that references a unique index without a
 * constraint, or a partitioned table, is not listed; nor are the foreign keys that the server clones
 * for partitions (pg_dump does not dump them).
 */
export async function referencedKeys(client: Client, major: number): Promise<Map<string, string>> {
  const r = await client.query<{ fk: string; key: string }>(
    `select f.oid::text as fk, k.oid::text as key
       from pg_constraint f
       join pg_class fr on fr.oid = f.conrelid and fr.relkind = 'r'
       join pg_class kr on kr.oid = f.confrelid and kr.relkind = 'r'
       join pg_constraint k on k.conrelid = f.confrelid and k.conindid = f.conindid and k.contype in ('p', 'u')
      where f.contype = 'f'${since(major, 11, ' and f.conparentid = 0')}`,
  );
  return new Map(r.rows.map((row) => [row.fk, row.key]));
}

/** A foreign key as the source defines it. */
export interface ForeignKeyDef {
  /** pg_constraint oid on the source (to find its TOC entry). */
  oid: string;
  schema: string;
  table: string;
  name: string;
  /** pg_get_constraintdef with an empty search_path (schema-qualified). */
  definition: string;
}

/** The foreign keys from or to the given tables (pg_class oids), not those cloned for partitions. */
export async function foreignKeysTouching(client: Client, major: number, tableOids: string[]): Promise<ForeignKeyDef[]> {
  await client.query("set search_path = ''");
  try {
    const r = await client.query<ForeignKeyDef>(
      `select k.oid::text as oid, n.nspname as schema, t.relname as "table", k.conname as name, pg_get_constraintdef(k.oid) as definition
         from pg_constraint k join pg_class t on t.oid = k.conrelid join pg_namespace n on n.oid = t.relnamespace
        where k.contype = 'f'${since(major, 11, ' and k.conparentid = 0')}
          and (k.conrelid = any($1::oid[]) or k.confrelid = any($1::oid[]))
        order by n.nspname, t.relname, k.conname`,
      [tableOids],
    );
    return r.rows;
  } finally {
    await client.query('reset search_path');
  }
}

/** An index of a table as the source defines it. */
export interface IndexRow {
  schema: string;
  name: string;
  tableSchema: string;
  tableName: string;
  /** pg_get_indexdef with an empty search_path (schema-qualified); ON ONLY for a partitioned index. */
  definition: string;
  tablespace: string | null;
  /** An index of a partitioned table. */
  partitioned: boolean;
  parentSchema: string | null;
  parentName: string | null;
  replicaIdentity: boolean;
  clustered: boolean;
  comment: string | null;
  constraintName: string | null;
  constraintType: 'p' | 'u' | null;
  constraintComment: string | null;
}

/**
 * The indexes of the given tables, with the PRIMARY KEY or UNIQUE constraint each stands behind.
 * `withKeys`: also the indexes of immediate PRIMARY KEY/UNIQUE constraints of ordinary tables (the
 * only ones `ADD CONSTRAINT … USING INDEX` can put back); otherwise only indexes behind no constraint.
 * Indexes of EXCLUDE constraints are never listed.
 */
export async function indexesOf(client: Client, major: number, tableOids: string[], withKeys: boolean): Promise<IndexRow[]> {
  await client.query("set search_path = ''");
  try {
    const keyCondition = withKeys
      ? `(k.contype in ('p', 'u') and not k.condeferrable and t.relkind = 'r'${since(major, 10, ' and not t.relispartition')})`
      : 'false';
    const r = await client.query<IndexRow>(
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
          and (k.oid is null or ${keyCondition})
        order by n.nspname, ic.relname`,
      [tableOids],
    );
    return r.rows;
  } finally {
    await client.query('reset search_path');
  }
}

export interface RelationRow {
  oid: string;
  schema: string;
  name: string;
  kind: 'r' | 'p';
  /** Its size on disk with TOAST and indexes (pg_total_relation_size). */
  bytes: number;
  /** oids of the partitioned tables above it (every level). */
  ancestors: string[];
}

/** Every table and partitioned table in user schemas, with its partitioned ancestors. */
export async function tablesWithAncestors(client: Client): Promise<RelationRow[]> {
  const r = await client.query<RelationRow>(
    `with recursive anc(child, parent) as (
       select i.inhrelid, i.inhparent from pg_inherits i join pg_class p on p.oid = i.inhparent and p.relkind = 'p'
       union all
       select a.child, i.inhparent from anc a join pg_inherits i on i.inhrelid = a.parent
         join pg_class p on p.oid = i.inhparent and p.relkind = 'p'
     )
     select c.oid::text as oid, n.nspname as schema, c.relname as name, c.relkind::text as kind,
            pg_total_relation_size(c.oid)::float8 as bytes,
            coalesce((select array_agg(a.parent::text) from anc a where a.child = c.oid), '{}') as ancestors
       from pg_class c join pg_namespace n on n.oid = c.relnamespace
      where c.relkind in ('r', 'p') and ${USER_SCHEMA}`,
  );
  return r.rows;
}

/** Materialized views reading the given tables, through any chain of views: deepest last. */
export async function matviewsReading(client: Client, tableOids: string[]): Promise<{ schema: string; name: string }[]> {
  const r = await client.query<{ schema: string; name: string }>(
    `with recursive reader(oid, depth) as (
       select r.ev_class, 1 from pg_depend d join pg_rewrite r on r.oid = d.objid
        where d.classid = 'pg_rewrite'::regclass and d.refclassid = 'pg_class'::regclass
          and d.refobjid = any($1::oid[]) and r.ev_class <> d.refobjid
       union
       select r.ev_class, reader.depth + 1 from reader
         join pg_depend d on d.refclassid = 'pg_class'::regclass and d.refobjid = reader.oid and d.classid = 'pg_rewrite'::regclass
         join pg_rewrite r on r.oid = d.objid and r.ev_class <> reader.oid
        where reader.depth < 50
     )
     select n.nspname as schema, c.relname as name
       from reader join pg_class c on c.oid = reader.oid join pg_namespace n on n.oid = c.relnamespace
      where c.relkind = 'm'
      group by n.nspname, c.relname
      order by max(reader.depth), n.nspname, c.relname`,
    [tableOids],
  );
  return r.rows;
}

export interface CopyTableRow {
  /** pg_class oid on the server asked. */
  oid: string;
  schema: string;
  name: string;
  bytes: number;
  pages: number;
  /** Columns as COPY lists them: not dropped, not generated. */
  columns: string[];
  /**
   * Every column has a built-in type with binary send and receive functions whose binary form means
   * the same on another server: not the reg* types, whose binary form is an oid of the source.
   */
  builtin: boolean;
}

/** The COPY-relevant facts of the ordinary tables a condition selects (`c` is pg_class, `n` its namespace). */
async function copyTables(client: Client, major: number, condition: string, params: unknown[]): Promise<CopyTableRow[]> {
  const copyable = `a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped${since(major, 12, " and a.attgenerated = ''")}`;
  const r = await client.query<Omit<CopyTableRow, 'bytes' | 'pages'> & { bytes: string; pages: string }>(
    `select c.oid::text as oid, n.nspname as schema, c.relname as name, pg_relation_size(c.oid)::text as bytes,
            (pg_relation_size(c.oid) / current_setting('block_size')::int)::text as pages,
            array(select a.attname::text from pg_attribute a where ${copyable} order by a.attnum) as columns,
            coalesce((select bool_and(t.oid < 16384 and t.typsend <> 0 and t.typreceive <> 0 and t.typname !~ '^_?reg')
                        from pg_attribute a join pg_type t on t.oid = a.atttypid
                       where ${copyable}), false) as builtin
       from pg_class c join pg_namespace n on n.oid = c.relnamespace
      where c.relkind = 'r' and ${condition}
      order by pg_relation_size(c.oid) desc, n.nspname, c.relname`,
    params,
  );
  return r.rows.filter((t) => t.columns.length > 0).map((t) => ({ ...t, bytes: Number(t.bytes), pages: Number(t.pages) }));
}

/** The encoding of the database a client is connected to (pg_encoding_to_char). */
export async function databaseEncoding(client: Client): Promise<string> {
  const r = await client.query<{ enc: string }>('select pg_encoding_to_char(encoding) as enc from pg_database where datname = current_database()');
  return r.rows[0]?.enc ?? 'UTF8';
}

/**
 * Ordinary tables of at least `minBytes` heap, not members of an extension (pg_dump decides about
 * those), biggest first; none when the database is not UTF8 (rows copied in ranges pass through a UTF8
 * client encoding).
 */
export async function splitCandidateTables(client: Client, major: number, minBytes: number): Promise<CopyTableRow[]> {
  if ((await databaseEncoding(client)) !== 'UTF8') return [];
  return copyTables(
    client,
    major,
    `c.relpersistence <> 't' and ${USER_SCHEMA} and pg_relation_size(c.oid) >= $1
     and ${notExtension('pg_class', 'c.oid')}`,
    [minBytes],
  );
}

/** The given ordinary tables (pg_class oids), biggest first. */
export function tablesToCopy(client: Client, major: number, oids: string[]): Promise<CopyTableRow[]> {
  return copyTables(client, major, 'c.oid = any($1::oid[])', [oids]);
}

export interface ReplicationClass {
  schema: string;
  name: string;
  /** Logical replication can keep it in sync without breaking the source's UPDATE/DELETE. */
  publishable: boolean;
  /** Why not, when not: no key, or unlogged. */
  why?: string;
  /** Its heap size (for the time a copy at cutover takes). */
  bytes: number;
}

/**
 * Every ordinary table (leaf partitions included) of user schemas, with whether it can be published
 * safely: a table in a publication without a usable replica identity makes the source's UPDATE and
 * DELETE on it fail, and unlogged tables cannot be published at all.
 */
export async function replicationClasses(client: Client): Promise<ReplicationClass[]> {
  const r = await client.query<{ schema: string; name: string; ident: string; persistence: string; ok: boolean; bytes: string }>(
    `select n.nspname as schema, c.relname as name, c.relreplident::text as ident, c.relpersistence::text as persistence,
            pg_relation_size(c.oid)::text as bytes,
            case c.relreplident
              when 'f' then true
              when 'd' then exists (select 1 from pg_index i where i.indrelid = c.oid and i.indisprimary and i.indimmediate)
              when 'i' then exists (select 1 from pg_index i where i.indrelid = c.oid and i.indisreplident and i.indisvalid and i.indisready and i.indimmediate)
              else false end as ok
       from pg_class c join pg_namespace n on n.oid = c.relnamespace
      where c.relkind = 'r' and c.relpersistence <> 't' and ${USER_SCHEMA}
        and ${notExtension('pg_class', 'c.oid')}
      order by n.nspname, c.relname`,
  );
  return r.rows.map((row) => ({
    schema: row.schema,
    name: row.name,
    bytes: Number(row.bytes),
    publishable: row.persistence === 'p' && row.ok,
    ...(row.persistence !== 'p'
      ? { why: 'unlogged' }
      : row.ok
        ? {}
        : { why: row.ident === 'n' ? 'replica identity nothing' : 'no primary key or replica identity' }),
  }));
}

/** Every foreign key between two tables of user schemas: the referencing table and the referenced one. */
export async function foreignKeyPairs(client: Client): Promise<{ from: { schema: string; name: string }; to: { schema: string; name: string } }[]> {
  const r = await client.query<{ fs: string; fn: string; ts: string; tn: string }>(
    `select distinct fn.nspname as fs, fc.relname as fn, tn.nspname as ts, tc.relname as tn
       from pg_constraint k
       join pg_class fc on fc.oid = k.conrelid join pg_namespace fn on fn.oid = fc.relnamespace
       join pg_class tc on tc.oid = k.confrelid join pg_namespace tn on tn.oid = tc.relnamespace
      where k.contype = 'f' and k.conrelid <> k.confrelid
      order by 1, 2, 3, 4`,
  );
  return r.rows.map((x) => ({ from: { schema: x.fs, name: x.fn }, to: { schema: x.ts, name: x.tn } }));
}

/** The sequences of user schemas, qualified. */
export async function sequences(client: Client): Promise<{ schema: string; name: string }[]> {
  const r = await client.query<{ schema: string; name: string }>(
    `select n.nspname as schema, c.relname as name from pg_class c join pg_namespace n on n.oid = c.relnamespace
      where c.relkind = 'S' and ${USER_SCHEMA} order by 1, 2`,
  );
  return r.rows;
}

/**
 * A fingerprint of a database's schema as logical replication depends on it: every relation, its
 * columns (name, type, not null, default) and constraints. Compared at cutover with the one taken at
 * the snapshot, it shows the schema changes replication did not carry.
 */
export async function schemaFingerprint(client: Client): Promise<Record<string, string>> {
  const r = await client.query<{ obj: string; def: string }>(
    `select format('%s %I.%I', c.relkind, n.nspname, c.relname) as obj,
            md5(coalesce((select string_agg(format('%I %s %s %s', a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
                                                   pg_get_expr(d.adbin, d.adrelid)), ', ' order by a.attnum)
                            from pg_attribute a left join pg_attrdef d on d.adrelid = a.attrelid and d.adnum = a.attnum
                           where a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped), '')
                || coalesce((select string_agg(pg_get_constraintdef(k.oid), ', ' order by k.conname) from pg_constraint k where k.conrelid = c.oid), '')) as def
       from pg_class c join pg_namespace n on n.oid = c.relnamespace
      where c.relkind in ('r', 'p', 'v', 'm', 'S', 'f') and ${USER_SCHEMA}`,
  );
  return Object.fromEntries(r.rows.map((row) => [row.obj, row.def]));
}
