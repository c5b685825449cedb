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

/** The role named right after `CREATE ROLE` / `ALTER ROLE`, unquoted as PostgreSQL would read it. */
export function roleStatementTarget(statement: string): string | undefined {
  const m = /^(?:CREATE|ALTER)\s+ROLE\s+/i.exec(statement);
  if (!m) return undefined;
  const rest = statement.slice(m[0].length);
  if (rest.startsWith('"')) {
    let name = '';
    for (let i = 1; i < rest.length; i++) {
      if (rest[i] === '"') {
        if (rest[i + 1] === '"') {
          name += '"';
          i++;
        } else return name;
      } else name += rest.charAt(i);
    }
    return undefined;
  }
  const word = /^[^\s;]+/.exec(rest)?.[0];
  return word?.toLowerCase();
}

/** Drops the CREATE ROLE / ALTER ROLE statements of the target's own user, and nothing else. */
export function filterGlobals(statements: string[], targetUser: string): { kept: string[]; dropped: string[] } {
  const kept: string[] = [];
  const dropped: string[] = [];
  for (const s of statements) {
    if (roleStatementTarget(s) === targetUser) dropped.push(s);
    else kept.push(s);
  }
  return { kept, dropped };
}

export interface GlobalsOutcome {
  applied: number;
  /** Statements that failed because the object already exists (tolerated). */
  alreadyExisted: number;
  errors: string[];
}

const DUPLICATE_OBJECT = '42710';

/** Runs each statement on its own; "already exists" is tolerated, every other error is collected. */
export async function applyGlobals(client: pg.Client, statements: string[]): Promise<GlobalsOutcome> {
  const outcome: GlobalsOutcome = { applied: 0, alreadyExisted: 0, errors: [] };
  for (const s of statements) {
    try {
      await client.query(s);
      outcome.applied++;
    } catch (err) {
      if (sqlState(err) === DUPLICATE_OBJECT) outcome.alreadyExisted++;
      else outcome.errors.push(`${describePgError(err)} — in: ${s.length > 200 ? `${s.slice(0, 200)}…` : s}`);
    }
  }
  return outcome;
}
