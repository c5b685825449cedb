/**
 * The databases restored into the target's own database of the same name (postgres, template1):
 * pg_dump writes plain CREATE statements (CREATE TABLE, CREATE SCHEMA, CREATE FUNCTION, ...), so an
 * object of the same name already there makes the one-transaction restore fail. Found in preflight,
 * before anything changes, with the names, so the DBA can decide; never dropped or renamed by the tool.
 */
import type pg from 'pg';
import { withClient, type Server } from '../pg/connect.ts';
import { notExtension, USER_SCHEMA } from '../pg/catalog.ts';

/** The user objects a restore would CREATE, by identity (`table public.t`, `function public.f(integer)`, `schema s`). */
async function objectNames(c: pg.Client): Promise<Set<string>> {
  const r = await c.query<{ o: string }>(
    `select 'relation ' || quote_ident(n.nspname) || '.' || quote_ident(c.relname) as o
       from pg_class c join pg_namespace n on n.oid = c.relnamespace
      where c.relkind in ('r', 'p', 'v', 'm', 'S', 'f', 'c') and ${USER_SCHEMA} and ${notExtension('pg_class', 'c.oid')}
     union all
     select 'function ' || p.oid::regprocedure::text from pg_proc p join pg_namespace n on n.oid = p.pronamespace
      where ${USER_SCHEMA} and ${notExtension('pg_proc', 'p.oid')}
     union all
     select 'type ' || t.oid::regtype::text from pg_type t join pg_namespace n on n.oid = t.typnamespace
      where ${USER_SCHEMA} and t.typtype in ('e', 'd', 'r') and ${notExtension('pg_type', 't.oid')}
     union all
     select 'schema ' || quote_ident(n.nspname) from pg_namespace n
      where ${USER_SCHEMA} and n.nspname <> 'public' and ${notExtension('pg_namespace', 'n.oid')}`,
  );
  return new Set(r.rows.map((row) => row.o));
}

/** The objects of the source's `db` that the target's own `db` already has (at most `limit` named, then how many more). */
export async function inPlaceConflicts(source: Server, target: Server, db: string, limit = 10): Promise<string[]> {
  const [src, dst] = await Promise.all([withClient(source, db, objectNames), withClient(target, db, objectNames)]);
  const both = [...src].filter((o) => dst.has(o)).sort();
  return both.length > limit ? [...both.slice(0, limit), `and ${String(both.length - limit)} more`] : both;
}
