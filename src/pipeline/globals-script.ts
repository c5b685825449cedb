/** A pg_dumpall globals script: split into statements, filtered, applied one by one. */
import type pg from 'pg';
import { describePgError, sqlState } from '../pg/connect.ts';

/**
 * Splits a pg_dumpall script into statements. psql meta-commands (`\restrict`, `\connect`) and
 * comments are dropped; quoted strings, quoted identifiers and dollar quotes may span lines.
 */
export function splitStatements(script: string): string[] {
  const out: string[] = [];
  let cur = '';
  let i = 0;
  const n = script.length;
  let atLineStart = true;
  while (i < n) {
    const ch = script.charAt(i);
    if (atLineStart && cur.trim() === '' && ch === '\\') {
      const end = script.indexOf('\n', i);
      i = end === -1 ? n : end + 1;
      continue;
    }
    atLineStart = false;
    if (ch === '-' && script[i + 1] === '-') {
      const end = script.indexOf('\n', i);
      i = end === -1 ? n : end;
      continue;
    }
    if (ch === "'" || ch === '"') {
      let j = i + 1;
      while (j < n) {
        if (script[j] === ch) {
          if (script[j + 1] === ch) j += 2;
          else break;
        } else if (ch === "'" && script[j] === '\\' && /[eE]$/.test(script.slice(Math.max(0, i - 1), i))) j += 2;
        else j++;
      }
      cur += script.slice(i, j + 1);
      i = j + 1;
      continue;
    }
    if (ch === '$') {
      const m = /^\$([A-Za-z_][A-Za-z0-9_]*)?\$/.exec(script.slice(i));
      if (m) {
        const end = script.indexOf(m[0], i + m[0].length);
        const stop = end === -1 ? n : end + m[0].length;
        cur += script.slice(i, stop);
        i = stop;
        continue;
      }
    }
    if (ch === ';') {
      if (cur.trim() !== '') out.push(`${cur.trim()};`);
      cur = '';
      i++;
      continue;
    }
    if (ch === '\n') atLineStart = true;
    cur += ch;
    i++;
  }
  if (cur.trim() !== '') out.push(cur.trim());
  return out;
}

/** The identifier at the start of `text`, unquoted as PostgreSQL would read it. */
function leadingIdentifier(text: string): string | undefined {
  if (text.startsWith('"')) {
    let name = '';
    for (let i = 1; i < text.length; i++) {
      if (text[i] === '"') {
        if (text[i + 1] === '"') {
          name += '"';
          i++;
        } else return name;
      } else name += text.charAt(i);
    }
    return undefined;
  }
  return /^[^\s;]+/.exec(text)?.[0].toLowerCase();
}

/** The role named right after `CREATE ROLE` / `ALTER ROLE`, unquoted as PostgreSQL would read it. */
export function roleStatementTarget(statement: string): string | undefined {
  const m = /^(?:CREATE|ALTER)\s+ROLE\s+/i.exec(statement);
  return m ? leadingIdentifier(statement.slice(m[0].length)) : undefined;
}

/**
 * The role or tablespace a statement defines or changes: CREATE/ALTER ROLE (attributes, password,
 * settings), COMMENT ON and SECURITY LABEL ON a role or tablespace, CREATE/ALTER TABLESPACE. GRANTs
 * (memberships, privileges) add to an object and are not counted as changing it.
 */
export function statementObject(statement: string): { kind: 'role' | 'tablespace'; name: string } | undefined {
  const m =
    /^(?:CREATE|ALTER)\s+(ROLE|TABLESPACE)\s+/i.exec(statement) ??
    /^COMMENT\s+ON\s+(ROLE|TABLESPACE)\s+/i.exec(statement) ??
    /^SECURITY\s+LABEL\s+(?:FOR\s+(?:"(?:[^"]|"")*"|\S+)\s+)?ON\s+(ROLE|TABLESPACE)\s+/i.exec(statement);
  if (!m?.[1]) return undefined;
  const name = leadingIdentifier(statement.slice(m[0].length));
  return name === undefined ? undefined : { kind: m[1].toLowerCase() === 'role' ? 'role' : 'tablespace', name };
}

/**
 * Leaves out the statements that would define or change the given roles and tablespaces (those that
 * exist on the target, which are the target's to keep as they are); everything else is kept, GRANTs
 * to and of those roles included.
 */
export function filterGlobals(
  statements: string[],
  roles: string | Iterable<string>,
  tablespaces: Iterable<string> = [],
): { kept: string[]; dropped: string[] } {
  const keepRoles = new Set(typeof roles === 'string' ? [roles] : roles);
  const keepTablespaces = new Set(tablespaces);
  const kept: string[] = [];
  const dropped: string[] = [];
  for (const s of statements) {
    const o = statementObject(s);
    if (o && (o.kind === 'role' ? keepRoles : keepTablespaces).has(o.name)) dropped.push(s);
    else kept.push(s);
  }
  return { kept, dropped };
}

/**
 * A statement's text as it may be shown: passwords and password hashes masked (PASSWORD '…', md5…,
 * SCRAM-SHA-256$…, password=… in connection strings).
 */
export function redactSecrets(text: string): string {
  return text
    .replace(/(PASSWORD\s+)'(?:[^']|'')*'/gi, "$1'***'")
    .replace(/\bmd5[0-9a-f]{32}\b/gi, 'md5***')
    .replace(/SCRAM-SHA-256\$[^'\s;]+/g, 'SCRAM-SHA-256$***')
    .replace(/(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)/gi, '$1***');
}

export interface GlobalsOutcome {
  applied: number;
  /** Statements that failed because the object already exists (tolerated). */
  alreadyExisted: number;
  errors: string[];
  /** Statements a non-superuser target user may not run (insufficient privilege), by role: reported, not failures. */
  notGranted: NotGranted[];
}

const DUPLICATE_OBJECT = '42710';
const INSUFFICIENT_PRIVILEGE = '42501';

/** Runs each statement on its own; "already exists" is tolerated, every other error is collected. */
export async function applyGlobals(client: pg.Client, statements: string[], reportNotPermitted = false): Promise<GlobalsOutcome> {
  const outcome: GlobalsOutcome = { applied: 0, alreadyExisted: 0, errors: [], notGranted: [] };
  for (const s of statements) {
    try {
      await client.query(s);
      outcome.applied++;
    } catch (err) {
      if (sqlState(err) === DUPLICATE_OBJECT) outcome.alreadyExisted++;
      else if (reportNotPermitted && sqlState(err) === INSUFFICIENT_PRIVILEGE) {
        const shown = redactSecrets(s);
        const role = statementObject(s)?.name ?? /\sTO\s+("(?:[^"]|"")*"|[^\s;]+)/i.exec(s)?.[1] ?? '?';
        outcome.notGranted.push({ role, what: `${shown.length > 120 ? `${shown.slice(0, 120)}…` : shown} (${redactSecrets(describePgError(err))})` });
      } else {
        const shown = redactSecrets(s);
        outcome.errors.push(`${redactSecrets(describePgError(err))} — in: ${shown.length > 200 ? `${shown.slice(0, 200)}…` : shown}`);
      }
    }
  }
  return outcome;
}

/** Role attributes only a superuser may give (or name at all, even as NO…) on PostgreSQL 15 and later alike. */
const SUPERUSER_ATTRIBUTES = ['SUPERUSER', 'REPLICATION', 'BYPASSRLS'] as const;

/** What a non-superuser target user could not give: per role, the attributes or memberships left out. */
export interface NotGranted {
  role: string;
  what: string;
}

/**
 * A globals script made applicable by a user that is not superuser (CREATEROLE): SUPERUSER,
 * REPLICATION and BYPASSRLS (and their NO… forms) are taken out of CREATE/ALTER ROLE, and GRANTED BY
 * out of GRANTs (only a superuser may name another grantor). Each attribute a role had on the source
 * and does not get is returned by role name, to be reported.
 */
export function forNonSuperuser(statements: string[]): { statements: string[]; notGranted: NotGranted[] } {
  const notGranted: NotGranted[] = [];
  const out = statements.map((s) => {
    const m = /^ALTER\s+ROLE\s+("(?:[^"]|"")*"|[^\s;]+)\s+WITH\s/i.exec(s);
    const role = m ? roleStatementTarget(s) : undefined;
    if (m && role !== undefined) {
      let text = s.slice(m[0].length - 1);
      for (const attr of SUPERUSER_ATTRIBUTES) {
        if (new RegExp(`\\s${attr}\\b`, 'i').test(text)) notGranted.push({ role, what: attr });
        text = text.replace(new RegExp(`\\s+(NO)?${attr}\\b`, 'gi'), '');
      }
      return /^\s*;?$/.test(text) ? '' : `${m[0].trimEnd()}${text}`;
    }
    return /^GRANT\s/i.test(s) ? s.replace(/\s+GRANTED\s+BY\s+(?:"(?:[^"]|"")*"|[^\s;]+)/i, '') : s;
  });
  return { statements: out.filter((t) => t !== ''), notGranted };
}
