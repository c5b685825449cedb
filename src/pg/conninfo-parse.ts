/**
 * libpq connection strings, parsed exactly as libpq (fe-connect.c) parses them: `keyword=value`
 * strings (conninfo_parse) and `postgresql://` URIs (conninfo_uri_parse), and written back in the
 * quoting libpq reads. Pure: no environment, no files (see conninfo.ts and servicefile.ts). Slightly
 * over 300 lines: it follows libpq's two parsers function by function, which is how it is checked.
 */
import { UsageError } from '../errors.ts';

/**
 * Every keyword libpq 18 knows, with the environment variable libpq falls back to (null: none).
 * The order is libpq's (PQconninfoOptions); formatConninfo writes keywords in this order.
 */
export const KEYWORDS = {
  service: 'PGSERVICE',
  servicefile: 'PGSERVICEFILE',
  user: 'PGUSER',
  password: 'PGPASSWORD',
  passfile: 'PGPASSFILE',
  channel_binding: 'PGCHANNELBINDING',
  connect_timeout: 'PGCONNECT_TIMEOUT',
  dbname: 'PGDATABASE',
  host: 'PGHOST',
  hostaddr: 'PGHOSTADDR',
  port: 'PGPORT',
  client_encoding: 'PGCLIENTENCODING',
  options: 'PGOPTIONS',
  application_name: 'PGAPPNAME',
  fallback_application_name: null,
  keepalives: null,
  keepalives_idle: null,
  keepalives_interval: null,
  keepalives_count: null,
  tcp_user_timeout: null,
  sslmode: 'PGSSLMODE',
  sslnegotiation: 'PGSSLNEGOTIATION',
  sslcompression: 'PGSSLCOMPRESSION',
  sslcert: 'PGSSLCERT',
  sslkey: 'PGSSLKEY',
  sslcertmode: 'PGSSLCERTMODE',
  sslpassword: null,
  sslrootcert: 'PGSSLROOTCERT',
  sslcrl: 'PGSSLCRL',
  sslcrldir: 'PGSSLCRLDIR',
  sslsni: 'PGSSLSNI',
  sslkeylogfile: null,
  requirepeer: 'PGREQUIREPEER',
  require_auth: 'PGREQUIREAUTH',
  ssl_min_protocol_version: 'PGSSLMINPROTOCOLVERSION',
  ssl_max_protocol_version: 'PGSSLMAXPROTOCOLVERSION',
  min_protocol_version: 'PGMINPROTOCOLVERSION',
  max_protocol_version: 'PGMAXPROTOCOLVERSION',
  gssencmode: 'PGGSSENCMODE',
  krbsrvname: 'PGKRBSRVNAME',
  gsslib: 'PGGSSLIB',
  gssdelegation: 'PGGSSDELEGATION',
  replication: null,
  target_session_attrs: 'PGTARGETSESSIONATTRS',
  load_balance_hosts: 'PGLOADBALANCEHOSTS',
  scram_client_key: null,
  scram_server_key: null,
  oauth_issuer: null,
  oauth_client_id: null,
  oauth_client_secret: null,
  oauth_scope: null,
} as const satisfies Record<string, string | null>;

/** A libpq connection keyword. */
export type Keyword = keyof typeof KEYWORDS;

/** Keyword values as a connection string gives them (later occurrences replace earlier ones, as in libpq). */
export type ConninfoParams = Partial<Record<Keyword, string>>;

/** Keywords whose values are secrets: never echoed in messages. */
export const SECRET_KEYWORDS: ReadonlySet<string> = new Set(['password', 'sslpassword', 'oauth_client_secret', 'scram_client_key', 'scram_server_key']);

/** A connection string or setting libpq would refuse; a usage error (exit 2). Messages never contain a secret. */
export class ConninfoError extends UsageError {
  readonly problems: string[];
  constructor(problems: string[]) {
    super(problems);
    this.name = 'ConninfoError';
    this.problems = problems;
  }
}

const fail = (message: string): never => {
  throw new ConninfoError([message]);
};

/** Whether `name` is a libpq connection keyword. */
export function isKeyword(name: string): name is Keyword {
  return Object.hasOwn(KEYWORDS, name);
}

/** Levenshtein distance, for "did you mean". */
function distance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) cur.push(Math.min((prev[j] ?? 0) + 1, (cur[j - 1] ?? 0) + 1, (prev[j - 1] ?? 0) + (a[i - 1] === b[j - 1] ? 0 : 1)));
    prev = cur;
  }
  return prev[b.length] ?? 0;
}

/** The message for an unknown keyword: names it and suggests the closest known one. */
export function unknownKeywordMessage(name: string, what = 'connection option'): string {
  const best = Object.keys(KEYWORDS)
    .map((k) => [k, distance(name, k)] as const)
    .sort((x, y) => x[1] - y[1])[0];
  const hint = best && best[1] <= 2 ? ` (did you mean ${best[0]}?)` : '';
  return `invalid ${what} "${name}"${hint}`;
}

/** conninfo_storeval: `requiressl` is translated as libpq does; unknown keywords are refused. */
function store(params: ConninfoParams, name: string, value: string, after: string | undefined, what?: string): void {
  if (name === 'requiressl') {
    params.sslmode = value.startsWith('1') ? 'require' : 'prefer';
    return;
  }
  if (!isKeyword(name)) {
    if (after !== undefined && SECRET_KEYWORDS.has(after))
      fail(`cannot parse what follows the ${after} value: quote values that contain spaces (${after}='...')`);
    fail(unknownKeywordMessage(name, what));
  }
  params[name as Keyword] = value;
}

/** C isspace() in the C locale. */
const isSpace = (c: string): boolean => c === ' ' || c === '\t' || c === '\n' || c === '\v' || c === '\f' || c === '\r';

/**
 * A `keyword=value ...` string as libpq's conninfo_parse reads it: blanks around `=` allowed,
 * values unquoted (up to the next blank) or single-quoted; `\` escapes the next character in both.
 */
export function parseKeywordValue(text: string): ConninfoParams {
  const params: ConninfoParams = {};
  let i = 0;
  let previous: string | undefined;
  while (i < text.length) {
    if (isSpace(text.charAt(i))) {
      i++;
      continue;
    }
    const start = i;
    while (i < text.length && text[i] !== '=' && !isSpace(text.charAt(i))) i++;
    const name = text.slice(start, i);
    while (i < text.length && isSpace(text.charAt(i))) i++;
    if (text[i] !== '=') {
      if (previous !== undefined && SECRET_KEYWORDS.has(previous))
        fail(`missing "=" after the ${previous} value: quote values that contain spaces (${previous}='...')`);
      fail(`missing "=" after "${name}" in connection info string`);
    }
    i++;
    while (i < text.length && isSpace(text.charAt(i))) i++;
    let value = '';
    if (text[i] === "'") {
      i++;
      for (;;) {
        if (i >= text.length) fail('unterminated quoted string in connection info string');
        const c = text.charAt(i++);
        if (c === "'") break;
        if (c === '\\') {
          if (i < text.length) value += text.charAt(i++);
        } else value += c;
      }
    } else {
      while (i < text.length && !isSpace(text.charAt(i))) {
        const c = text.charAt(i++);
        if (c === '\\') {
          if (i < text.length) value += text.charAt(i++);
        } else value += c;
      }
    }
    store(params, name, value, previous);
    previous = name;
  }
  return params;
}

/** libpq's percent-decoding (conninfo_uri_decode): `%xx` only, `%00` refused, `+` stays `+`. */
function uriDecode(text: string, part: string): string {
  if (!text.includes('%')) return text;
  const chunks: Buffer[] = [];
  for (let i = 0; i < text.length;) {
    const pct = text.indexOf('%', i);
    if (pct < 0) {
      chunks.push(Buffer.from(text.slice(i)));
      break;
    }
    chunks.push(Buffer.from(text.slice(i, pct)));
    const hex = text.slice(pct + 1, pct + 3);
    const shown = SECRET_KEYWORDS.has(part) ? `the ${part}` : `"${text}"`;
    if (!/^[0-9A-Fa-f]{2}$/.test(hex)) fail(`invalid percent-encoded token in ${shown}`);
    if (hex === '00') fail(`forbidden value %00 in percent-encoded value ${shown}`);
    chunks.push(Buffer.from([Number.parseInt(hex, 16)]));
    i = pct + 3;
  }
  return Buffer.concat(chunks).toString('utf8');
}

const URI_PREFIXES = ['postgresql://', 'postgres://'] as const;

/** Whether libpq would read `text` as a URI (it starts with postgresql:// or postgres://). */
export const isUri = (text: string): boolean => URI_PREFIXES.some((p) => text.startsWith(p));

/**
 * A connection URI as libpq's conninfo_uri_parse reads it:
 * `postgresql://[user[:password]@][host][:port][,...][/dbname][?keyword=value&...]`. Hosts may be
 * `[IPv6]`, every part may be percent-encoded (a socket directory as `%2Fvar%2Frun%2Fpostgresql`),
 * query parameters are connection keywords (`ssl=true` means `sslmode=require`).
 */
export function parseUri(uri: string): ConninfoParams {
  const params: ConninfoParams = {};
  const prefix = URI_PREFIXES.find((p) => uri.startsWith(p));
  if (prefix === undefined) return fail('a connection URI starts with postgresql:// or postgres://');
  const at = (i: number): string => uri.charAt(i); // '' past the end
  let p = prefix.length;
  let q = p;
  while (q < uri.length && at(q) !== '@' && at(q) !== '/') q++;
  if (at(q) === '@') {
    const credentials = uri.slice(p, q);
    const colon = credentials.indexOf(':');
    const user = colon < 0 ? credentials : credentials.slice(0, colon);
    if (user !== '') params.user = uriDecode(user, 'user');
    const password = colon < 0 ? '' : credentials.slice(colon + 1);
    if (password !== '') params.password = uriDecode(password, 'password');
    p = q + 1;
  }
  let hosts = '';
  let ports = '';
  let stop: string;
  for (;;) {
    let host: string;
    if (at(p) === '[') {
      const close = uri.indexOf(']', p + 1);
      if (close < 0) fail('end of string reached when looking for matching "]" in IPv6 host address in URI');
      if (close === p + 1) fail('IPv6 host address may not be empty in URI');
      host = uri.slice(p + 1, close);
      p = close + 1;
      if (p < uri.length && !':/?,'.includes(at(p))) fail(`unexpected character "${at(p)}" at position ${p + 1} in URI (expected ":" or "/")`);
    } else {
      const start = p;
      while (p < uri.length && !':/?,'.includes(at(p))) p++;
      host = uri.slice(start, p);
    }
    hosts += host;
    stop = at(p);
    if (stop === ':') {
      const start = ++p;
      while (p < uri.length && !'/?,'.includes(at(p))) p++;
      ports += uri.slice(start, p);
      stop = at(p);
    }
    if (stop !== ',') break;
    p++;
    hosts += ',';
    ports += ',';
  }
  if (hosts !== '') params.host = uriDecode(hosts, 'host');
  if (ports !== '') params.port = uriDecode(ports, 'port');
  if (stop === '/') {
    const start = ++p;
    while (p < uri.length && at(p) !== '?') p++;
    const dbname = uri.slice(start, p);
    if (dbname !== '') params.dbname = uriDecode(dbname, 'dbname');
    stop = at(p);
  }
  if (stop === '?') parseUriQuery(uri.slice(p + 1), params);
  return params;
}

/** conninfo_uri_parse_params: `keyword=value` pairs separated by `&`, each side percent-decoded. */
function parseUriQuery(query: string, params: ConninfoParams): void {
  let i = 0;
  while (i < query.length) {
    const start = i;
    let eq = -1;
    let end: number;
    for (;;) {
      if (i < query.length && query[i] === '=') {
        if (eq >= 0) fail(`extra key/value separator "=" in URI query parameter: "${query.slice(start, eq)}"`);
        eq = i++;
      } else if (i >= query.length || query[i] === '&') {
        end = i;
        if (i < query.length) i++;
        if (eq < 0) fail(`missing key/value separator "=" in URI query parameter: "${query.slice(start, end)}"`);
        break;
      } else i++;
    }
    let name = uriDecode(query.slice(start, eq), 'keyword');
    let value = uriDecode(query.slice(eq + 1, end), name);
    if (name === 'ssl' && value === 'true') [name, value] = ['sslmode', 'require'];
    store(params, name, value, undefined, 'URI query parameter');
  }
}

/** A connection string as libpq reads one: a URI when it starts with postgresql:// or postgres://, else `keyword=value` pairs. */
export function parseConninfo(text: string): ConninfoParams {
  return isUri(text) ? parseUri(text) : parseKeywordValue(text);
}

/** One value quoted as libpq reads it: in single quotes, `\` and `'` escaped with `\`. */
export const quoteConninfoValue = (value: string): string => `'${value.replaceAll('\\', '\\\\').replaceAll("'", "\\'")}'`;

/** `keyword='value' ...` in libpq's keyword order; empty and undefined values are left out. */
export function formatConninfo(params: ConninfoParams): string {
  return (Object.keys(KEYWORDS) as Keyword[])
    .flatMap((k) => {
      const v = params[k];
      return v === undefined || v === '' ? [] : [`${k}=${quoteConninfoValue(v)}`];
    })
    .join(' ');
}
