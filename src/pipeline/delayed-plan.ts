import { withClient, type Server } from '../pg/connect.ts';
import { patternMatchesDatabase, patternMatchesTable, type TablePattern } from '../patterns.ts';
import type { SourceDatabase } from './discover.ts';
import { tableKey } from './counts.ts';

export interface DelayedTable {
  /** The source's pg_class oid (only meaningful on the source). */
  oid: string;
  schema: string;
  name: string;
  /** r: table (or leaf partition), p: partitioned table */
  kind: 'r' | 'p';
}

export interface RelationName {
  schema: string;
  name: string;
}

export interface DelayedPlan {
  /** Matched tables and, for a partitioned one, all its partitions. */
  tables: DelayedTable[];
  keys: Set<string>;
  /** Materialized views that read a deferred table (directly or through views), in refresh order. */
  dependentMatviews: RelationName[];
  matviewKeys: Set<string>;
}

/**
 * Resolves --delay-table-data patterns against the source. A pattern that matches no table in any
 * selected database is a problem reported before any work starts.
 */
export async function planDelayed(patterns: TablePattern[], databases: SourceDatabase[], source: Server, problems: string[]): Promise<Map<string, DelayedPlan>> {
  const plans = new Map<string, DelayedPlan>();
  if (patterns.length === 0) return plans;
  const hits = new Map<TablePattern, number>(patterns.map((p) => [p, 0]));
  for (const db of databases) {
    const relevant = patterns.filter((p) => patternMatchesDatabase(p, db.name));
    if (relevant.length === 0) continue;
    await withClient(source, db.name, async (c) => {
      const rows = (
        await c.query<{ oid: string; schema: string; name: string; kind: 'r' | 'p'; ancestors: string[] }>(
          `with recursive anc(child, parent) as (
             select i.inhrelid, i.inhparent from pg_inherits i join pg_class p on p.oid = i.inhparent and p.relkind = 'p'
             union all
             select a.child, i.inhparent from anc a join pg_inherits i on i.inhrelid = a.parent
               join pg_class p on p.oid = i.inhparent and p.relkind = 'p'
           )
           select c.oid::text as oid, n.nspname as schema, c.relname as name, c.relkind::text as kind,
                  coalesce((select array_agg(a.parent::text) from anc a where a.child = c.oid), '{}') as ancestors
             from pg_class c join pg_namespace n on n.oid = c.relnamespace
            where c.relkind in ('r', 'p') and n.nspname not in ('pg_catalog', 'information_schema') and n.nspname !~ '^pg_(toast|temp_)'`,
        )
      ).rows;
      const byOid = new Map(rows.map((r) => [r.oid, r]));
      const tables: DelayedTable[] = [];
      for (const t of rows) {
        let matched = false;
        for (const p of relevant) {
          const self = patternMatchesTable(p, db.name, t.schema, t.name);
          // A partitioned table that matches brings its partitions with it.
          const viaParent = t.ancestors.some((oid) => {
            const parent = byOid.get(oid);
            return parent !== undefined && patternMatchesTable(p, db.name, parent.schema, parent.name);
          });
          if (self) hits.set(p, hits.get(p)! + 1);
          if (self || viaParent) matched = true;
        }
        if (matched) tables.push({ oid: t.oid, schema: t.schema, name: t.name, kind: t.kind });
      }
      if (tables.length === 0) return;
      tables.sort((a, b) => (tableKey(a.schema, a.name) < tableKey(b.schema, b.name) ? -1 : 1));
      // Materialized views reading the deferred tables, through any chain of views: deepest last.
      const mv = await c.query<{ schema: string; name: string; depth: number }>(
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
         select n.nspname as schema, c.relname as name, max(reader.depth) as depth
           from reader join pg_class c on c.oid = reader.oid join pg_namespace n on n.oid = c.relnamespace
          where c.relkind = 'm'
          group by n.nspname, c.relname
          order by max(reader.depth), n.nspname, c.relname`,
        [tables.map((t) => t.oid)],
      );
      plans.set(db.name, {
        tables,
        keys: new Set(tables.map((t) => tableKey(t.schema, t.name))),
        dependentMatviews: mv.rows.map((r) => ({ schema: r.schema, name: r.name })),
        matviewKeys: new Set(mv.rows.map((r) => tableKey(r.schema, r.name))),
      });
    });
  }
  for (const [p, n] of hits) {
    if (n === 0) {
      problems.push(
        `--delay-table-data ${JSON.stringify(p.source)} matches no table in the databases being migrated; check the database, schema and table names (unquoted names are folded to lower case, as in psql)`,
      );
    }
  }
  return plans;
}
