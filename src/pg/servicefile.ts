/**
 * libpq connection service files (pg_service.conf), read as libpq reads them (parseServiceInfo and
 * parseServiceFile in fe-connect.c): the per-user file first, then the system-wide one.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { ConninfoError, isKeyword, unknownKeywordMessage, type ConninfoParams, type Keyword } from './conninfo-parse.ts';

/**
 * The directory of the system-wide pg_service.conf when PGSYSCONFDIR is not set: libpq's compiled-in
 * SYSCONFDIR as Debian and Ubuntu build it (`pg_config --sysconfdir`). Other builds use another one:
 * pass it as `sysconfdir`.
 */
export const DEFAULT_SYSCONFDIR = '/etc/postgresql-common';

/** Where libpq looks for service definitions. */
export interface ServiceFileLocations {
  /** The per-user file: the servicefile keyword, else PGSERVICEFILE, else ~/.pg_service.conf. */
  user: string;
  /** Whether the per-user file was named (servicefile, PGSERVICEFILE): then it must exist, as in libpq. */
  named: boolean;
  /** The system-wide file: $PGSYSCONFDIR/pg_service.conf, else <sysconfdir>/pg_service.conf. */
  system: string;
}

/** The files libpq searches, in order. */
export function serviceFileLocations(env: NodeJS.ProcessEnv, home: string, servicefile?: string, sysconfdir = DEFAULT_SYSCONFDIR): ServiceFileLocations {
  const nonEmpty = (v: string | undefined): string | undefined => (v === '' ? undefined : v);
  const named = nonEmpty(servicefile) ?? nonEmpty(env.PGSERVICEFILE);
  return {
    user: named ?? path.join(home, '.pg_service.conf'),
    named: named !== undefined,
    system: path.join(env.PGSYSCONFDIR ?? sysconfdir, 'pg_service.conf'),
  };
}

const fail = (message: string): never => {
  throw new ConninfoError([message]);
};

/**
 * The keywords of `service` in one service file's text, or undefined when the file has no such
 * section. As libpq: lines are trimmed; `#` starts a comment line; `[name]` starts a section (text
 * after the `]` is ignored); in the section, `keyword=value` with nothing trimmed around the `=` and
 * no quoting; the first value of a keyword wins; `service` and unknown keywords are errors.
 */
export function parseServiceFile(text: string, service: string, file: string): ConninfoParams | undefined {
  let params: ConninfoParams | undefined;
  const lines = text.split('\n');
  for (const [index, raw] of lines.entries()) {
    const lineNo = index + 1;
    if (Buffer.byteLength(raw) + (index < lines.length - 1 ? 1 : 0) >= 1023) fail(`line ${lineNo} too long in service file "${file}"`);
    const line = raw.replace(/^[ \t\n\v\f\r]+|[ \t\n\v\f\r]+$/g, '');
    if (line === '' || line.startsWith('#')) continue;
    if (line.startsWith('[')) {
      if (params) return params;
      if (line.startsWith(`[${service}]`)) params = {};
      continue;
    }
    if (!params) continue;
    const eq = line.indexOf('=');
    if (eq < 0) fail(`syntax error in service file "${file}", line ${lineNo}: expected keyword=value`);
    const key = line.slice(0, eq);
    if (key === 'service') fail(`nested service specifications not supported in service file "${file}", line ${lineNo}`);
    if (!isKeyword(key)) fail(`syntax error in service file "${file}", line ${lineNo}: ${unknownKeywordMessage(key, 'keyword')} (no blanks around "=")`);
    params[key as Keyword] ??= line.slice(eq + 1);
  }
  return params;
}

/** A service found: its keywords and the file that defined it. */
export interface ServiceDefinition {
  name: string;
  file: string;
  params: ConninfoParams;
}

/** File contents, or undefined when the file does not exist. */
export type ReadText = (file: string) => string | undefined;

/** readFileSync, undefined for a file that does not exist (libpq skips those). */
export const readTextIfExists: ReadText = (file) => {
  try {
    return readFileSync(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT' || (err as NodeJS.ErrnoException).code === 'ENOTDIR') return undefined;
    return fail(`cannot read service file "${file}": ${(err as Error).message}`);
  }
};

/**
 * Looks `name` up as libpq does: in the per-user file (~/.pg_service.conf only when it exists; a
 * file named by servicefile or PGSERVICEFILE must exist), and only when not found there, in the
 * system-wide file (when it exists). A service found nowhere is an error naming both files.
 */
export function lookupService(name: string, files: ServiceFileLocations, read: ReadText = readTextIfExists): ServiceDefinition {
  for (const file of [files.user, files.system]) {
    const text = read(file);
    if (text === undefined && file === files.user && files.named) fail(`service file "${file}" not found`);
    if (text === undefined) continue;
    const params = parseServiceFile(text, name, file);
    if (params) return { name, file, params };
  }
  return fail(`definition of service "${name}" not found (searched ${files.user} and ${files.system})`);
}
