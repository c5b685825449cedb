import { escape, minimatch, type MinimatchOptions } from 'minimatch';

/**
 * Glob matching for database and table names. `*` and `?` are the wildcards; every other character,
 * including `/`, `.`, `#` and `!`, is an ordinary part of a name.
 */
const GLOB: MinimatchOptions = { dot: true, nocomment: true, nonegate: true, noext: true, nobrace: true, noglobstar: true };
// minimatch treats '/' as a path separator that '*' never crosses, and '.' and '..' as special
// entries that '*' never matches; names are not paths: hide both from it.
const SLASH = '\uE000';
const LEAD = '\uE001';
const asName = (s: string): string => LEAD + s.replaceAll('/', SLASH);

/** Matches a name against a pattern already in minimatch syntax (see escapeGlobLiteral). */
function matchEscaped(name: string, pattern: string): boolean {
  return minimatch(asName(name), asName(pattern), GLOB);
}

/** Matches a name against an operator's glob: `*` and `?` are wildcards, every other character is literal. */
export function globMatch(name: string, glob: string): boolean {
  return matchEscaped(name, escapeGlobLiteral(glob, true));
}

export function matchesAny(name: string, globs: readonly string[]): boolean {
  return globs.some((g) => globMatch(name, g));
}

/** The globs that match none of the names (an operator's typo, most often). */
export function unmatchedGlobs(globs: readonly string[], names: readonly string[]): string[] {
  return globs.filter((g) => !names.some((n) => globMatch(n, g)));
}

/** Escapes a name part so that only `*` and `?` (when kept) act as wildcards. */
function escapeGlobLiteral(text: string, keepWildcards: boolean): string {
  if (!keepWildcards) return escape(text);
  return text
    .split(/([*?])/)
    .map((piece) => (piece === '*' || piece === '?' ? piece : escape(piece)))
    .join('');
}

export interface TablePattern {
  /** The text the operator wrote. */
  source: string;
  database: string;
  /** undefined: any schema. */
  schema: string | undefined;
  table: string;
}

/**
 * Parses `DATABASE.TABLE`, `DATABASE.SCHEMA.TABLE` as psql does: unquoted parts are folded to lower
 * case and `*`/`?` are wildcards there; double-quoted parts are literal (`""` is a quote).
 */
export function parseTablePattern(text: string): TablePattern {
  const parts: string[] = [];
  let current = '';
  let inQuotes = false;
  let sawAny = false;
  for (let i = 0; i < text.length; i++) {
    const ch = text.charAt(i);
    if (inQuotes) {
      if (ch === '"') {
        if (text[i + 1] === '"') {
          current += escapeGlobLiteral('"', false);
          i++;
        } else inQuotes = false;
      } else current += escapeGlobLiteral(ch, false);
    } else if (ch === '"') {
      inQuotes = true;
      sawAny = true;
    } else if (ch === '.') {
      if (!sawAny) throw new Error(`empty name part in table pattern ${JSON.stringify(text)}`);
      parts.push(current);
      current = '';
      sawAny = false;
    } else {
      // psql folds only ASCII letters of unquoted names.
      current += escapeGlobLiteral(/[A-Z]/.test(ch) ? ch.toLowerCase() : ch, true);
      sawAny = true;
    }
  }
  if (inQuotes) throw new Error(`unterminated double quote in table pattern ${JSON.stringify(text)}`);
  if (!sawAny) throw new Error(`empty name part in table pattern ${JSON.stringify(text)}`);
  parts.push(current);
  const [database, second, third] = parts;
  if (parts.length === 2 && database !== undefined && second !== undefined) return { source: text, database, schema: undefined, table: second };
  if (parts.length === 3 && database !== undefined && second !== undefined && third !== undefined)
    return { source: text, database, schema: second, table: third };
  throw new Error(
    `table pattern ${JSON.stringify(text)} must be DATABASE.TABLE or DATABASE.SCHEMA.TABLE; write names that contain dots in double quotes, e.g. "my.db".events`,
  );
}

export function patternMatchesDatabase(p: TablePattern, database: string): boolean {
  return matchEscaped(database, p.database);
}

export function patternMatchesTable(p: TablePattern, database: string, schema: string, table: string): boolean {
  return matchEscaped(database, p.database) && (p.schema === undefined || matchEscaped(schema, p.schema)) && matchEscaped(table, p.table);
}
