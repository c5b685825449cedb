/** Roles as each server defines them, and what differs between the two definitions of one role. */
import type pg from 'pg';

export interface RoleRow {
  name: string;
  superuser: boolean;
  inherit: boolean;
  createrole: boolean;
  createdb: boolean;
  login: boolean;
  replication: boolean;
  bypassrls: boolean;
  connlimit: number;
  validuntil: string | null;
  config: string[] | null;
}

export async function roles(c: pg.Client): Promise<Map<string, RoleRow>> {
  const r = await c.query<RoleRow>(
    `select rolname as name, rolsuper as superuser, rolinherit as inherit, rolcreaterole as createrole, rolcreatedb as createdb,
            rolcanlogin as login, rolreplication as replication, rolbypassrls as bypassrls, rolconnlimit as connlimit,
            rolvaliduntil::text as validuntil, rolconfig as config
       from pg_roles`,
  );
  return new Map(r.rows.map((row) => [row.name, row]));
}

/** What differs between the source's and the target's definition of a role (passwords are never compared, only said to be kept). */
export function roleDifferences(src: RoleRow, dst: RoleRow): string[] {
  const out: string[] = [];
  for (const attr of ['superuser', 'inherit', 'createrole', 'createdb', 'login', 'replication', 'bypassrls'] as const) {
    if (src[attr] !== dst[attr])
      out.push(`${src[attr] ? '' : 'NO'}${attr.toUpperCase()} on the source, ${dst[attr] ? '' : 'NO'}${attr.toUpperCase()} on the target`);
  }
  if (src.connlimit !== dst.connlimit) out.push(`connection limit ${String(src.connlimit)} on the source, ${String(dst.connlimit)} on the target`);
  if (src.validuntil !== dst.validuntil) out.push(`valid until ${src.validuntil ?? 'infinity'} on the source, ${dst.validuntil ?? 'infinity'} on the target`);
  const settings = (c: string[] | null): string => (c ?? []).join(', ') || 'none';
  if (settings(src.config) !== settings(dst.config)) out.push(`settings ${settings(src.config)} on the source, ${settings(dst.config)} on the target`);
  return out;
}

/** Roles of the source the target lacks (to be created) and those both have (left as they are, with what differs). */
export function rolePlan(
  source: Map<string, RoleRow>,
  target: Map<string, RoleRow>,
): { create: string[]; leftAlone: { name: string; differences: string[] }[] } {
  const create: string[] = [];
  const leftAlone: { name: string; differences: string[] }[] = [];
  for (const [name, src] of [...source].sort(([a], [b]) => (a < b ? -1 : 1))) {
    if (name.startsWith('pg_')) continue; // built-in roles exist on every server
    const dst = target.get(name);
    if (dst === undefined) create.push(name);
    else leftAlone.push({ name, differences: roleDifferences(src, dst) });
  }
  return { create, leftAlone };
}
