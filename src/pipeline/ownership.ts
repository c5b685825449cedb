/**
 * Ownership when the target user is not a superuser. pg_restore gives each object its source owner
 * (ALTER … OWNER TO), which a non-superuser may only do for roles it is a member of (with SET, on 16+).
 * A CREATEROLE user may grant itself such a membership in any role that is not superuser (before 16),
 * or in the roles it created (16+: it holds ADMIN on them): it does so for the owners of the migrated
 * databases just before their restore, records each grant in the state first, and revokes them at the
 * end of the run (or, after a kill, at the start of the next run). Owners it may not assign (superusers
 * of the target, roles it may not administer, roles that will not exist) are preflight problems.
 */
import type pg from 'pg';
import { quoteIdent } from '../pg/sql.ts';
import type { StateStore } from '../state/store.ts';
import type { RoleRow } from './roles.ts';
import { ExitCode, MigrateError } from '../errors.ts';

/** Catalogs whose rows pg_dump restores with an owner, and their owner column. */
const OWNED: [string, string][] = [
  ['pg_class', 'relowner'],
  ['pg_namespace', 'nspowner'],
  ['pg_proc', 'proowner'],
  ['pg_type', 'typowner'],
  ['pg_collation', 'collowner'],
  ['pg_conversion', 'conowner'],
  ['pg_operator', 'oprowner'],
  ['pg_opclass', 'opcowner'],
  ['pg_opfamily', 'opfowner'],
  ['pg_ts_config', 'cfgowner'],
  ['pg_ts_dict', 'dictowner'],
  ['pg_foreign_data_wrapper', 'fdwowner'],
  ['pg_foreign_server', 'srvowner'],
  ['pg_event_trigger', 'evtowner'],
  ['pg_largeobject_metadata', 'lomowner'],
  ['pg_default_acl', 'defaclrole'],
];

/**
 * The roles that own something pg_dump restores with its owner in the connected database: user
 * objects (oid ≥ 16384, not members of an extension), and the database itself unless `inPlace`.
 */
export async function databaseOwners(c: pg.Client, inPlace: boolean): Promise<string[]> {
  const union = OWNED.map(([cat, col]) => `select '${cat}'::regclass as classid, oid, ${col} as owner from ${cat} where oid >= 16384`).join(' union all ');
  const db = inPlace ? '' : " union all select 'pg_database'::regclass, oid, datdba from pg_database where datname = current_database()";
  const r = await c.query<{ owner: string }>(
    `select distinct r.rolname as owner from (${union}${db}) o join pg_roles r on r.oid = o.owner
      where not exists (select 1 from pg_depend d where d.classid = o.classid and d.objid = o.oid and d.deptype = 'e')
      order by 1`,
  );
  return r.rows.map((row) => row.owner);
}

export interface OwnershipPlan {
  /** Roles the target user will grant itself for the run (revoked at its end). */
  grant: string[];
  /** Owners it may not assign, each with the databases where they own something and why. */
  problems: string[];
}

/**
 * Which owners a non-superuser target user can assign. `willCreate`: roles the globals stage creates
 * (without SUPERUSER); `targetRoles`: the target's roles now; `can`: per existing role, whether the
 * target user is already a member (with SET on 16+) and whether it may grant itself the role.
 */
export function ownershipPlan(
  owners: Map<string, string[]>,
  targetUser: string,
  targetRoles: Map<string, RoleRow>,
  willCreate: Set<string>,
  can: Map<string, { member: boolean; grantable: boolean }>,
): OwnershipPlan {
  const byRole = new Map<string, string[]>();
  for (const [db, roles] of owners) for (const r of roles) byRole.set(r, [...(byRole.get(r) ?? []), db]);
  const plan: OwnershipPlan = { grant: [], problems: [] };
  for (const [role, dbs] of [...byRole].sort(([a], [b]) => (a < b ? -1 : 1))) {
    if (role === targetUser) continue;
    const where = `owns objects in ${dbs.join(', ')}`;
    const existing = targetRoles.get(role);
    if (existing === undefined) {
      if (willCreate.has(role)) plan.grant.push(role);
      else
        plan.problems.push(
          `role ${role} ${where} on the source and does not exist on the target: create it there, or let the run migrate the roles (without --migrate-globals=false)`,
        );
    } else if (existing.superuser) {
      plan.problems.push(
        `role ${role} ${where} on the source and is a superuser on the target, which "${targetUser}" (not a superuser) may not make an owner: on the source, give those objects to another role (REASSIGN OWNED BY ${role} TO <role> in each of those databases), pass --no-owner to make the target user their owner, or pass --to-user with a superuser`,
      );
    } else if (can.get(role)?.member === true) continue;
    else if (can.get(role)?.grantable === true) plan.grant.push(role);
    else
      plan.problems.push(
        `role ${role} ${where} on the source; the target user "${targetUser}" is not a member of it and may not grant it to itself: GRANT ${role} TO ${targetUser} on the target (as its admin), pass --no-owner to make the target user the owner, or pass --to-user with a superuser`,
      );
  }
  return plan;
}

/** Per role of the target: whether the current user is a member able to give it objects, and whether it may grant it to itself. */
export async function membershipRights(c: pg.Client, targetMajor: number): Promise<Map<string, { member: boolean; grantable: boolean }>> {
  const r = await c.query<{ name: string; member: boolean; grantable: boolean }>(
    `select rolname as name, pg_has_role(current_user, oid, $1) as member,
            not rolsuper and ($2 or pg_has_role(current_user, oid, 'MEMBER WITH ADMIN OPTION')) and
              (select rolcreaterole from pg_roles where rolname = current_user) as grantable
       from pg_roles`,
    [targetMajor >= 16 ? 'SET' : 'MEMBER', targetMajor < 16],
  );
  return new Map(r.rows.map((row) => [row.name, { member: row.member, grantable: row.grantable }]));
}

interface Memberships {
  /** The target user, and the roles it granted itself. */
  user: string;
  granted: string[];
  /** The target server the grants were made on (pg_control_system()); absent in records of an earlier version. */
  systemIdentifier?: string;
}

const systemIdentifier = async (c: pg.Client): Promise<string> =>
  (await c.query<{ id: string }>('select system_identifier::text as id from pg_control_system()')).rows[0]?.id ?? '';

/**
 * Whether `user` holds a membership row in `role` that the current user would add or remove: before
 * 16 there is one row per pair whoever granted it; from 16 rows are per grantor (a CREATEROLE user
 * holds an ADMIN row, without SET, on every role it created), so only the current user's row counts.
 */
const hasMembershipRow = async (c: pg.Client, role: string, user: string): Promise<boolean> =>
  (
    await c.query(
      `select 1 from pg_auth_members m join pg_roles r on r.oid = m.roleid join pg_roles u on u.oid = m.member
        where r.rolname = $1 and u.rolname = $2
          and (current_setting('server_version_num')::int < 160000 or m.grantor = (select oid from pg_roles where rolname = current_user))`,
      [role, user],
    )
  ).rowCount !== 0;

/**
 * Grants the target user the roles it lacks among `roles`, each recorded in the state (with the
 * target's identity) before it is granted; a membership the user already has in any form is left
 * alone and not recorded, so the revoke removes only what the run added. Returns those granted.
 */
export async function grantOwnerRoles(c: pg.Client, store: StateStore, targetMajor: number, roles: string[]): Promise<string[]> {
  const rights = await membershipRights(c, targetMajor);
  const user = (await c.query<{ u: string }>('select current_user as u')).rows[0]?.u ?? '';
  const id = await systemIdentifier(c);
  const record = (await store.readDoc<Memberships>(store.membershipsPath)) ?? { user, granted: [], systemIdentifier: id };
  const granted: string[] = [];
  for (const role of roles) {
    if (rights.get(role)?.member === true || (await hasMembershipRow(c, role, user))) continue;
    record.granted = [...new Set([...record.granted, role])];
    await store.writeDoc(store.membershipsPath, record);
    await c.query(`grant ${quoteIdent(role)} to ${quoteIdent(user)}`);
    granted.push(role);
  }
  return granted;
}

/**
 * Revokes the memberships recorded in the state (this run's, or a killed run's), on the server they
 * were granted on only, and checks each is gone (a REVOKE that removes nothing only warns). The record
 * is removed once every one is gone. Returns the roles revoked.
 */
export async function revokeOwnerRoles(c: pg.Client, store: StateStore): Promise<string[]> {
  const record = await store.readDoc<Memberships>(store.membershipsPath);
  if (record === undefined) return [];
  const id = await systemIdentifier(c);
  if (record.systemIdentifier !== undefined && record.systemIdentifier !== id) {
    throw new MigrateError(
      `${store.membershipsPath} records role memberships (${record.granted.join(', ')}) that an interrupted run granted "${record.user}" on another target server (system identifier ${record.systemIdentifier}); revoke them there by running pg-migrate cleanup against that target, or remove the file if they were revoked by hand`,
      ExitCode.stateMismatch,
    );
  }
  const left: string[] = [];
  for (const role of record.granted) {
    const exists = (await c.query('select 1 from pg_roles where rolname = $1', [role])).rowCount === 1;
    if (!exists) continue;
    await c.query(`revoke ${quoteIdent(role)} from ${quoteIdent(record.user)}`);
    if (await hasMembershipRow(c, role, record.user)) left.push(role);
  }
  if (left.length > 0) {
    throw new MigrateError(
      `the memberships of "${record.user}" in ${left.join(', ')} that a run granted could not be revoked by this user (granted by another?): revoke them as the target's admin (REVOKE <role> FROM ${quoteIdent(record.user)}), then remove ${store.membershipsPath}`,
      ExitCode.failed,
    );
  }
  await store.removeDoc(store.membershipsPath);
  return record.granted;
}
