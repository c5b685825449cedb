import { withClient, type Server } from '../pg/connect.ts';
import { patternMatchesDatabase, patternMatchesTable, type TablePattern } from '../patterns.ts';
import type { SourceDatabase } from './discover.ts';
import { tableKey } from './counts.ts';

export interface DelayedTable {
  schema: string;
  name: string;
  /** r: table (or leaf partition), p: partitioned table */
  kind: 'r' | 'p';
}

export interface DelayedPlan {
  /** Matched tables and, for a partitioned one, all its partitions. */
  tables: DelayedTable[];
  keys: Set<string>;
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
    const rows = await withClient(source, db.name, async (c) =>
      (
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
      ).rows,
    );
    const byOid = new Map(rows.map((r) => [r.oid, r]));
    const tables: DelayedTable[] = [];
    for (const t of rows) {
      let matched = false;
      for (const p of relevant) {
        const self = patternMatchesTable(p, db.name, t.schema, t.name);
        const viaParent = t.ancestors.some((oid) => {
          const parent = byOid.get(oid);
          return parent !== undefined && patternMatchesTable(p, db.name, parent.schema, parent.name);
        });
        if (self) hits.set(p, hits.get(p)! + 1);
        if (self || viaParent) matched = true;
      }
      if (matched) tables.push({ schema: t.schema, name: t.name, kind: t.kind });
    }
    if (tables.length > 0) {
      tables.sort((a, b) => tableKey(a.schema, a.name).localeCompare(tableKey(b.schema, b.name)));
      plans.set(db.name, { tables, keys: new Set(tables.map((t) => tableKey(t.schema, t.name))) });
    }
  }
  for (const [p, n] of hits) {
    if (n === 0) problems.push(`--delay-table-data ${JSON.stringify(p.source)} matches no table in the databases being migrated; check the database, schema and table names (unquoted names are folded to lower case)`);
  }
  return plans;
}
