/**
 * Preflight for servers where the tool is not superuser (managed services). On the target: CREATEDB
 * is required, CREATEROLE where roles are to be created, the attributes only a superuser may give are
 * named, owners it may not assign are problems, and deferred loads (which need
 * session_replication_role = replica) are refused. On the source: every table must be readable
 * (SELECT, and not hidden by row-level security: pg_read_all_data does not bypass it, BYPASSRLS does).
 */
import type pg from 'pg';
import { withClient, type Server } from '../pg/connect.ts';
import type { MigrateOptions } from '../options.ts';
import type { SourceDatabase } from './discover.ts';
import type { DeferredPlan } from './deferred-plan.ts';
import type { ServerFacts } from './facts.ts';
import { databaseOwners, membershipRights, ownershipPlan } from './ownership.ts';
import { notExtension, USER_SCHEMA } from '../pg/catalog.ts';
import { rolePlan, roles } from './roles.ts';

export interface NonSuperuserChecks {
  problems: string[];
  warnings: string[];
  /** Roles the target user grants itself for the run to give objects their owners. */
  ownerGrants: string[];
}

/** The parameters the tuning would set, for the DBA to set in the provider's parameter group instead. */
export const tuningAdvice = (values: Record<string, string>): string =>
  Object.entries(values)
    .map(([k, v]) => `${k} = ${v}`)
    .join(', ');

/** Tables of the connected database the current user cannot read whole: no SELECT, or row-level security applies to it. */
export async function unreadableTables(c: pg.Client): Promise<{ table: string; why: string }[]> {
  const r = await c.query<{ table: string; noselect: boolean; rls: boolean }>(
    `select format('%I.%I', n.nspname, c.relname) as table,
            not has_table_privilege(c.oid, 'select') as noselect,
            c.relrowsecurity and not (select rolbypassrls or rolsuper from pg_roles where rolname = current_user)
              and (c.relforcerowsecurity or not pg_has_role(c.relowner, 'USAGE')) as rls
       from pg_class c join pg_namespace n on n.oid = c.relnamespace
      where c.relkind in ('r', 'p', 'm', 'S') and ${USER_SCHEMA}
        and ${notExtension('pg_class', 'c.oid')}
      order by 1`,
  );
  return r.rows
    .filter((row) => row.noselect || row.rls)
    .map((row) => ({ table: row.table, why: row.noselect ? 'no SELECT privilege' : 'row-level security applies (no BYPASSRLS)' }));
}

/**
 * How many large objects of the connected database the current user may not read (pg_read_all_data
 * covers them only from PostgreSQL 18; lo_compat_privileges = on lets everyone read them).
 */
export async function unreadableLargeObjects(c: pg.Client, major: number): Promise<number> {
  const readable =
    major >= 18
      ? "has_largeobject_privilege(m.oid, 'SELECT')"
      : `pg_has_role(m.lomowner, 'USAGE') or exists (select 1 from aclexplode(coalesce(m.lomacl, acldefault('L', m.lomowner))) a
                                                    where a.privilege_type = 'SELECT' and (a.grantee = 0 or pg_has_role(a.grantee, 'USAGE')))`;
  const r = await c.query<{ n: number }>(
    `select count(*)::int as n from pg_largeobject_metadata m where current_setting('lo_compat_privileges') = 'off' and not (${readable})`,
  );
  return r.rows[0]?.n ?? 0;
}

/** What preflight reads in each source database: one session each. */
interface SourceDatabaseFacts {
  unreadable: { table: string; why: string }[];
  largeObjects: number;
  eventTriggers: string[];
  owners: string[];
}

async function sourceDatabaseFacts(c: pg.Client, db: SourceDatabase, facts: { source: ServerFacts; target: ServerFacts }): Promise<SourceDatabaseFacts> {
  const out: SourceDatabaseFacts = { unreadable: [], largeObjects: 0, eventTriggers: [], owners: [] };
  if (!facts.source.superuser) {
    out.unreadable = await unreadableTables(c);
    out.largeObjects = await unreadableLargeObjects(c, facts.source.major);
  }
  if (!facts.target.superuser) {
    out.eventTriggers = (await c.query<{ n: string }>('select evtname as n from pg_event_trigger order by 1')).rows.map((r) => r.n);
    out.owners = await databaseOwners(c, db.inPlace === true);
  }
  return out;
}

export async function nonSuperuserChecks(
  options: MigrateOptions,
  servers: { source: Server; target: Server; src: pg.Client; dst: pg.Client },
  facts: { source: ServerFacts; target: ServerFacts },
  dbs: SourceDatabase[],
  deferred: Map<string, DeferredPlan>,
): Promise<NonSuperuserChecks> {
  const out: NonSuperuserChecks = { problems: [], warnings: [], ownerGrants: [] };
  const { problems, warnings } = out;
  const { source, target, src, dst } = servers;
  const perDb = new Map<string, SourceDatabaseFacts>();
  for (const db of dbs) perDb.set(db.name, await withClient(source, db.name, (c) => sourceDatabaseFacts(c, db, facts)));
  const sourceUser = source.endpoint.user;
  for (const [db, f] of perDb) {
    if (f.largeObjects > 0) {
      problems.push(
        `the source user "${sourceUser}" cannot read ${String(f.largeObjects)} large objects of ${db} (pg_read_all_data covers them only from PostgreSQL 18): GRANT SELECT ON LARGE OBJECT … to it, or pass --from-user with their owner or a superuser`,
      );
    }
    if (f.unreadable.length > 0) {
      problems.push(
        `the source user "${sourceUser}" cannot read every table of ${db}, which would not be copied whole: ${f.unreadable.map((u) => `${u.table} (${u.why})`).join(', ')}; GRANT SELECT on them (or pg_read_all_data, PostgreSQL 14+), ALTER ROLE ${sourceUser} BYPASSRLS for row-level security, or pass --from-user with a user that can`,
      );
    }
  }
  if (facts.target.superuser) {
    if (!options.owner)
      warnings.push(
        `--no-owner: every object restored is owned by the target user "${target.endpoint.user}", a superuser: SECURITY DEFINER functions then run as a superuser and views read their tables as one; give the objects their owners afterwards (ALTER ... OWNER TO, REASSIGN OWNED)`,
      );
    return out;
  }
  const user = (await dst.query<{ u: string }>('select current_user as u')).rows[0]?.u ?? target.endpoint.user;
  const created = dbs.filter((d) => d.inPlace !== true).map((d) => d.name);
  if (!facts.target.createdb && created.length > 0) {
    problems.push(
      `the target user "${user}" has no CREATEDB privilege, which creating the databases (${created.join(', ')}) needs: ALTER ROLE ${user} CREATEDB (as the target's admin), or pass --to-user with a user that has it`,
    );
  }
  const [sourceRoles, targetRoles] = await Promise.all([roles(src), roles(dst)]);
  const toCreate = options.migrateGlobals ? rolePlan(sourceRoles, targetRoles).create : [];
  if (toCreate.length > 0 && !facts.target.createrole) {
    problems.push(
      `the target user "${user}" has no CREATEROLE privilege, which creating the roles (${toCreate.join(', ')}) needs: ALTER ROLE ${user} CREATEROLE (as the target's admin), pass --to-user with a user that has it, or create them there and run again`,
    );
  }
  for (const name of toCreate) {
    const r = sourceRoles.get(name);
    const attrs = r ? (['superuser', 'replication', 'bypassrls'] as const).filter((a) => r[a]).map((a) => a.toUpperCase()) : [];
    if (attrs.length > 0)
      warnings.push(`role ${name} will be created without ${attrs.join(', ')}: the target user "${user}" is not a superuser and may not give it`);
  }
  if (options.migrateGlobals) {
    const [srcSpc, dstSpc] = await Promise.all(
      [src, dst].map(async (c) =>
        (await c.query<{ n: string }>("select spcname as n from pg_tablespace where spcname not in ('pg_default', 'pg_global')")).rows.map((r) => r.n),
      ),
    );
    const missing = (srcSpc ?? []).filter((n) => !(dstSpc ?? []).includes(n));
    if (missing.length > 0) {
      warnings.push(
        `tablespaces ${missing.join(', ')} will not be created (CREATE TABLESPACE needs a superuser): what the source keeps in them fails to restore unless they are created on the target first`,
      );
    }
  }
  warnings.push(
    `the target user "${user}" is not a superuser: pg_restore runs without --disable-triggers, loading the data before it creates triggers and foreign keys (pg_restore's order), so none of them fires during the load`,
  );
  if (options.online) {
    problems.push(
      `--online needs a superuser target user: the target's subscriptions and their catch-up at cutover are not supported for "${user}", which is not one; migrate offline, or pass --to-user with a superuser`,
    );
  }
  for (const [db, plan] of deferred) {
    problems.push(
      `--delay-table-data needs a superuser target user: the deferred load into ${db} (${plan.tables.map((t) => `${t.schema}.${t.name}`).join(', ')}) goes in after triggers and foreign keys exist, with session_replication_role = replica, which "${user}" may not set; leave --delay-table-data out, or pass --to-user with a superuser`,
    );
  }
  problems.push(...(await superuserSettings(src, dst, facts.target.major, dbs, user)));
  for (const [db, f] of perDb) {
    if (f.eventTriggers.length > 0) {
      problems.push(
        `${db} has event triggers (${f.eventTriggers.join(', ')}), which only a superuser may create and "${user}" is not: drop them on the source for the migration and create them on the target afterwards as its admin, or pass --to-user with a superuser`,
      );
    }
  }
  if (!options.owner) {
    warnings.push(`--no-owner: every object restored is owned by the target user "${user}", not by its owner on the source`);
    return out;
  }
  const owners = new Map([...perDb].map(([db, f]) => [db, f.owners]));
  const willCreate = new Set(facts.target.createrole ? toCreate : []);
  const plan = ownershipPlan(owners, user, targetRoles, willCreate, await membershipRights(dst, facts.target.major));
  problems.push(...plan.problems);
  out.ownerGrants = plan.grant;
  if (plan.grant.length > 0) {
    warnings.push(
      `the target user "${user}" grants itself membership in ${plan.grant.join(', ')} for the run, to give the objects their owners, and revokes it at the end`,
    );
  }
  return out;
}

/**
 * Settings of the databases to migrate (ALTER DATABASE … SET, ALTER ROLE … IN DATABASE … SET, which
 * pg_restore --create restores) that only a superuser may set on the target and the target user may
 * not (no GRANT SET ON PARAMETER, 15+): one problem each.
 */
async function superuserSettings(src: pg.Client, dst: pg.Client, targetMajor: number, dbs: SourceDatabase[], user: string): Promise<string[]> {
  const created = dbs.filter((d) => d.inPlace !== true).map((d) => d.name);
  const settings = await src.query<{ db: string; role: string | null; setting: string }>(
    `select d.datname as db, r.rolname as role, unnest(s.setconfig) as setting
       from pg_db_role_setting s join pg_database d on d.oid = s.setdatabase left join pg_roles r on r.oid = s.setrole
      where d.datname = any($1::text[]) order by 1, 2 nulls first`,
    [created],
  );
  const names = [...new Set(settings.rows.map((r) => r.setting.split('=')[0] ?? ''))];
  const restricted = await dst.query<{ name: string }>(
    `select name from pg_settings where name = any($1::text[]) and context = 'superuser'${targetMajor >= 15 ? " and not has_parameter_privilege(name, 'SET')" : ''}`,
    [names],
  );
  const superuserOnly = new Set(restricted.rows.map((r) => r.name));
  return settings.rows
    .filter((r) => superuserOnly.has(r.setting.split('=')[0] ?? ''))
    .map(
      (r) =>
        `${r.db}: ${r.role === null ? `ALTER DATABASE ${r.db}` : `ALTER ROLE ${r.role} IN DATABASE ${r.db}`} SET ${r.setting.split('=')[0] ?? ''} is a superuser-only setting that "${user}" may not set on the target: RESET it on the source for the migration and set it on the target afterwards (as its admin, or in the provider's parameter group), or pass --to-user with a superuser`,
    );
}
