/**
 * Which tables of which database are deferred (--delay-table-data): resolved once against the source,
 * before anything changes.
 */
import { withClient, type Server } from '../pg/connect.ts';
import { matviewsReading, tablesWithAncestors } from '../pg/catalog.ts';
import { tableKey, type RelationName } from '../pg/sql.ts';
import { patternMatchesDatabase, patternMatchesTable, type TablePattern } from '../patterns.ts';

export interface DeferredTable extends RelationName {
  /** The source's pg_class oid (only meaningful on the source). */
  oid: string;
  /** r: table (or leaf partition), p: partitioned table */
  kind: 'r' | 'p';
  /** Its size on the source when planned (table, TOAST and indexes). */
  bytes: number;
}

export interface DeferredPlan {
  /** Matched tables and, for a partitioned one, all its partitions. */
  tables: DeferredTable[];
  keys: Set<string>;
  /** Materialized views that read a deferred table (directly or through views), in refresh order. */
  dependentMatviews: RelationName[];
  matviewKeys: Set<string>;
  /**
   * Partitioned tables above a deferred table that are not deferred themselves: their rows are
   * complete only after the deferred load, so they are compared in the deferred phase, not before.
   */
  ancestorKeys: Set<string>;
  /** The leaf partitions (keys) of every partitioned table among the deferred tables and their ancestors. */
  leaves: Map<string, string[]>;
}

/**
 * Resolves --delay-table-data patterns against the source. A pattern that matches no table in any
 * selected database is a problem reported before any work starts.
 */
export async function planDeferred(
  patterns: TablePattern[],
  databases: { name: string }[],
  source: Server,
  problems: string[],
): Promise<Map<string, DeferredPlan>> {
  const plans = new Map<string, DeferredPlan>();
  if (patterns.length === 0) return plans;
  const hits = new Map<TablePattern, number>(patterns.map((p) => [p, 0]));
  for (const db of databases) {
    const relevant = patterns.filter((p) => patternMatchesDatabase(p, db.name));
    if (relevant.length === 0) continue;
    await withClient(source, db.name, async (c) => {
      const rows = await tablesWithAncestors(c);
      const byOid = new Map(rows.map((r) => [r.oid, r]));
      const tables: DeferredTable[] = [];
      for (const t of rows) {
        let matched = false;
        for (const p of relevant) {
          const self = patternMatchesTable(p, db.name, t.schema, t.name);
          // A partitioned table that matches brings its partitions with it.
          const viaParent = t.ancestors.some((oid) => {
            const parent = byOid.get(oid);
            return parent !== undefined && patternMatchesTable(p, db.name, parent.schema, parent.name);
          });
          if (self) hits.set(p, (hits.get(p) ?? 0) + 1);
          if (self || viaParent) matched = true;
        }
        if (matched) tables.push({ oid: t.oid, schema: t.schema, name: t.name, kind: t.kind, bytes: t.bytes });
      }
      if (tables.length === 0) return;
      tables.sort((a, b) => (tableKey(a.schema, a.name) < tableKey(b.schema, b.name) ? -1 : 1));
      const keys = new Set(tables.map((t) => tableKey(t.schema, t.name)));
      const keyOf = (oid: string): string | undefined => {
        const r = byOid.get(oid);
        return r === undefined ? undefined : tableKey(r.schema, r.name);
      };
      const ancestorKeys = new Set(
        tables
          .flatMap((t) => byOid.get(t.oid)?.ancestors ?? [])
          .map(keyOf)
          .filter((k): k is string => k !== undefined && !keys.has(k)),
      );
      const leaves = new Map<string, string[]>();
      for (const r of rows) {
        if (r.kind !== 'r') continue;
        for (const a of r.ancestors) {
          const k = keyOf(a);
          if (k === undefined || !(keys.has(k) || ancestorKeys.has(k))) continue;
          leaves.set(k, [...(leaves.get(k) ?? []), tableKey(r.schema, r.name)]);
        }
      }
      const matviews = await matviewsReading(
        c,
        tables.map((t) => t.oid),
      );
      plans.set(db.name, {
        tables,
        keys,
        dependentMatviews: matviews,
        matviewKeys: new Set(matviews.map((r) => tableKey(r.schema, r.name))),
        ancestorKeys,
        leaves,
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
