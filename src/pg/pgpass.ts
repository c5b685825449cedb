/**
 * Reading a password file as libpq does (passwordFromFile in fe-connect.c), for node-postgres
 * sessions: its own pgpass support is deprecated and does not match socket directories as libpq does.
 */
import { readFileSync, statSync } from 'node:fs';

/** libpq's matching of one field (pwdfMatchesString): `*` matches anything, `\` escapes the next character. Returns the rest of the line. */
function matchField(line: string, token: string): string | undefined {
  if (line.startsWith('*:')) return line.slice(2);
  let i = 0;
  let j = 0;
  let escaped = false;
  while (i < line.length) {
    if (line[i] === '\\') {
      i++;
      escaped = true;
    }
    if (line[i] === ':' && j >= token.length && !escaped) return line.slice(i + 1);
    escaped = false;
    if (j >= token.length || line.charAt(i) !== token[j]) return undefined;
    i++;
    j++;
  }
  return undefined;
}

/**
 * The password libpq would take from a passfile's text for this host, port, database and user: the
 * first line whose `host:port:database:user` fields match (each field literal or `*`), its fifth field
 * unescaped up to an unescaped `:`. `host` is already the lookup key (see passfileHost).
 */
export function passfilePassword(text: string, host: string, port: string, dbname: string, user: string): string | undefined {
  if (dbname === '' || user === '') return undefined;
  for (const raw of text.split('\n')) {
    if (raw.startsWith('#')) continue;
    let rest: string | undefined = raw.replace(/[\r\n]+$/, '');
    for (const token of [host, port === '' ? '5432' : port, dbname, user]) rest = rest === undefined || rest === '' ? undefined : matchField(rest, token);
    if (rest === undefined) continue;
    let password = '';
    for (let i = 0; i < rest.length && rest[i] !== ':'; i++) {
      if (rest[i] === '\\' && i + 1 < rest.length) i++;
      password += rest.charAt(i);
    }
    return password;
  }
  return undefined;
}

/** The host name libpq looks up: `localhost` for no host and for its default socket directory, else the host (or hostaddr) as given. */
export function passfileHost(host: string, hostaddr: string | undefined, defaultSocketDir: string): string {
  const h = host !== '' ? host : (hostaddr ?? '');
  return h === '' || h === defaultSocketDir ? 'localhost' : h;
}

/** The password from a passfile, or why there is none (for the message of a failed login). */
export function readPassfilePassword(file: string, host: string, port: string, dbname: string, user: string): { password?: string; why: string } {
  let text: string;
  try {
    const st = statSync(file);
    if (!st.isFile()) return { why: `the password file "${file}" is not a plain file` };
    if ((st.mode & 0o077) !== 0)
      return { why: `the password file "${file}" has group or world access and is ignored (permissions should be u=rw (0600) or less)` };
    text = readFileSync(file, 'utf8');
  } catch {
    return { why: `there is no password file "${file}"` };
  }
  const password = passfilePassword(text, host, port, dbname, user);
  return password === undefined ? { why: `the password file "${file}" has no line for ${host}:${port}:${dbname}:${user}` } : { password, why: '' };
}
