/**
 * One connection per side, the way PostgreSQL users give it: a URI, a `keyword=value` string or a
 * service (--from / --to), the seed's flags (--from-host, ...), libpq's PG* variables and the
 * defaults, merged into one set of libpq keywords (a ConnectionSpec). node-postgres gets it through
 * conninfo-node.ts, the client programs as `--dbname=<toLibpqConninfo()>` plus the private passfile.
 */
import net from 'node:net';
import os from 'node:os';
import type { Side } from './connect.ts';
import { ConninfoError, KEYWORDS, SECRET_KEYWORDS, formatConninfo, isUri, parseConninfo, type ConninfoParams, type Keyword } from './conninfo-parse.ts';
import { passfileLine } from './passfile.ts';
import { lookupService, serviceFileLocations, type ReadText } from './servicefile.ts';

/** Where a keyword's value came from: its kind, and a label for messages (`--from-host`, `--to`, `PGHOST`, `service "old" (file)`, `default`). */
export interface Origin {
  readonly kind: 'flag' | 'conninfo' | 'service' | 'env' | 'default';
  readonly label: string;
}

/** What the operator gave for one side on the command line. */
export interface ConnectionInput {
  /** The --from / --to value: a URI, a `keyword=value` string, or `service=name`. */
  conninfo?: string | undefined;
  /** The seed's flags (--from-host, --from-port, --from-user, --from-pass, --from-db and the --to-* twins). */
  host?: string | undefined;
  port?: number | string | undefined;
  user?: string | undefined;
  password?: string | undefined;
  dbname?: string | undefined;
}

/** The tool's own defaults, used where nothing else gives a value. */
export interface ConnectionDefaults {
  /** Undefined: the side must get a host (or hostaddr) from somewhere else. */
  host?: string | undefined;
  port: number;
  user: string;
  /** The maintenance database. */
  dbname: string;
  /** Seconds; libpq's default is to wait forever. */
  connect_timeout?: number | undefined;
}

/** Where resolveConnection looks for files. */
export interface ResolveOptions {
  /** Home directory for ~/.pg_service.conf. @default env.HOME, else os.homedir() */
  home?: string;
  /** libpq's compiled-in SYSCONFDIR, used when PGSYSCONFDIR is not set. @default DEFAULT_SYSCONFDIR */
  sysconfdir?: string;
  readFile?: ReadText;
}

/** One side's connection: libpq keywords with values, where each came from, and the password kept apart. */
export interface ConnectionSpec {
  readonly side: Side;
  /** Every keyword that has a value (non-empty), the password excepted. sslmode, user, port and dbname are always set. */
  readonly params: Readonly<Omit<ConninfoParams, 'password'>>;
  readonly origins: Readonly<Partial<Record<Keyword, Origin>>>;
  /** Non-enumerable: JSON.stringify and console.log never show it. */
  readonly password: string | undefined;
}

/** One host of a spec, as libpq pairs host, hostaddr and port lists. */
export interface HostTarget {
  /** Host name or socket directory as given; '' for libpq's default socket directory (or when only hostaddr is given). */
  host: string;
  hostaddr?: string;
  port: number;
  /** A unix-domain socket (never TLS, as in libpq). */
  socket: boolean;
}

const CHOICES: Partial<Record<Keyword, readonly string[]>> = {
  sslmode: ['disable', 'allow', 'prefer', 'require', 'verify-ca', 'verify-full'],
  target_session_attrs: ['any', 'read-write', 'read-only', 'primary', 'standby', 'prefer-standby'],
  load_balance_hosts: ['disable', 'random'],
  channel_binding: ['disable', 'prefer', 'require'],
  gssencmode: ['disable', 'prefer', 'require'],
  sslcertmode: ['disable', 'allow', 'require'],
  sslnegotiation: ['postgres', 'direct'],
  min_protocol_version: ['3.0', '3.2', 'latest'],
  max_protocol_version: ['3.0', '3.2', 'latest'],
};
const INTEGERS: readonly Keyword[] = ['connect_timeout', 'keepalives', 'keepalives_idle', 'keepalives_interval', 'keepalives_count', 'tcp_user_timeout'];
const TLS_VERSIONS = ['TLSv1', 'TLSv1.1', 'TLSv1.2', 'TLSv1.3'];
/** Settings node-postgres (the tool's own sessions) cannot honour as libpq does: refused, so both kinds of session stay alike. */
const UNSUPPORTED: Partial<Record<Keyword, string | undefined>> = {
  channel_binding: 'require',
  gssencmode: 'require',
  sslcertmode: 'require',
  min_protocol_version: undefined, // any value but 3.0, below
  requirepeer: undefined,
  require_auth: undefined,
  sslpassword: undefined,
  replication: undefined,
  oauth_issuer: undefined,
  oauth_client_id: undefined,
  oauth_client_secret: undefined,
  oauth_scope: undefined,
  scram_client_key: undefined,
  scram_server_key: undefined,
};

const split = (list: string | undefined): string[] | undefined => (list === undefined || list === '' ? undefined : list.split(','));
const nonEmpty = (v: string | undefined): string | undefined => (v === '' ? undefined : v);

/** libpq's checks of connectOptions2, plus what node-postgres cannot do. Normalizes ports and TLS versions in place. */
function validate(v: ConninfoParams, where: (k: Keyword) => string): string[] {
  const problems: string[] = [];
  const bad = (k: Keyword, why: string): void => {
    problems.push(`${where(k)}: ${k} "${v[k] ?? ''}" ${why}`);
  };
  for (const [k, allowed] of Object.entries(CHOICES) as [Keyword, string[]][]) {
    const x = v[k];
    if (x !== undefined && !allowed.includes(x)) bad(k, `is not one of ${allowed.join(', ')}`);
  }
  for (const k of INTEGERS) if (v[k] !== undefined && !/^\s*[-+]?\d+\s*$/.test(v[k])) bad(k, 'is not a whole number');
  for (const k of ['ssl_min_protocol_version', 'ssl_max_protocol_version'] as const) {
    const canonical = TLS_VERSIONS.find((t) => t.toLowerCase() === v[k]?.toLowerCase());
    if (v[k] !== undefined && canonical === undefined) bad(k, `is not one of ${TLS_VERSIONS.join(', ')}`);
    else if (canonical !== undefined) v[k] = canonical;
  }
  const min = TLS_VERSIONS.indexOf(v.ssl_min_protocol_version ?? 'TLSv1.2'); // libpq's default minimum
  const max = v.ssl_max_protocol_version === undefined ? -1 : TLS_VERSIONS.indexOf(v.ssl_max_protocol_version);
  if (max >= 0 && min > max) bad('ssl_max_protocol_version', `is below ssl_min_protocol_version "${v.ssl_min_protocol_version ?? 'TLSv1.2'}"`);
  if (v.sslrootcert === 'system' && v.sslmode !== 'verify-full') bad('sslmode', 'may not be used with sslrootcert=system (use verify-full)');
  if (v.sslnegotiation === 'direct' && !['require', 'verify-ca', 'verify-full'].includes(v.sslmode ?? ''))
    bad('sslmode', 'may not be used with sslnegotiation=direct (use require, verify-ca or verify-full)');
  for (const [k, value] of Object.entries(UNSUPPORTED) as [Keyword, string | undefined][]) {
    const x = v[k];
    if (x === undefined || (value !== undefined && x !== value) || (k === 'min_protocol_version' && x === '3.0')) continue;
    problems.push(
      `${where(k)}: ${k}${SECRET_KEYWORDS.has(k) ? '' : `=${x}`} is not supported: pg-migrate's own sessions (node-postgres) cannot honour it as libpq does`,
    );
  }
  const hosts = split(v.host);
  const addrs = split(v.hostaddr);
  const count = addrs?.length ?? hosts?.length ?? 1;
  if (hosts && addrs && hosts.length !== addrs.length) bad('host', `could not match ${hosts.length} host names to ${addrs.length} hostaddr values`);
  for (const a of addrs ?? []) if (a !== '' && net.isIP(a) === 0) bad('hostaddr', `has "${a}", which is not a numeric IP address`);
  for (const h of hosts ?? []) if (h.startsWith('@')) bad('host', 'names an abstract unix socket, which node-postgres cannot reach');
  const ports = split(v.port);
  if (ports && ports.length !== 1 && ports.length !== count) bad('port', `could not match ${ports.length} port numbers to ${count} hosts`);
  if (ports?.some((p) => p.trim() !== '' && !(/^\s*\d+\s*$/.test(p) && Number(p) >= 1 && Number(p) <= 65535))) bad('port', 'is not a port number (1 to 65535)');
  else if (ports) v.port = ports.map((p) => (p.trim() === '' ? '' : String(Number(p)))).join(',');
  return problems;
}

/**
 * One side's connection from everything the operator gave. Per keyword, the first of: the seed flag,
 * the --from/--to string, the service it names (else PGSERVICE's; its keywords never override the
 * string's), libpq's PG* variable, the tool's default. An empty value counts as not given (libpq
 * would take it as set, to its own default). Throws a ConninfoError (a UsageError) listing every problem.
 */
export function resolveConnection(
  side: Side,
  input: ConnectionInput,
  env: NodeJS.ProcessEnv,
  defaults: ConnectionDefaults,
  options: ResolveOptions = {},
): ConnectionSpec {
  const long = side === 'source' ? 'from' : 'to';
  const values: ConninfoParams = {};
  const origins: Partial<Record<Keyword, Origin>> = {};
  const set = (k: Keyword, v: string | number | undefined, origin: Origin): void => {
    if (v === undefined || v === '' || values[k] !== undefined) return;
    values[k] = String(v);
    origins[k] = origin;
  };
  const within = <T>(what: string, f: () => T): T => {
    try {
      return f();
    } catch (err) {
      if (err instanceof ConninfoError) throw new ConninfoError(err.problems.map((p) => `${what}: ${p}`));
      throw err;
    }
  };
  for (const [k, v, flag] of [
    ['host', input.host, 'host'],
    ['port', input.port, 'port'],
    ['user', input.user, 'user'],
    ['password', input.password, 'pass'],
    ['dbname', input.dbname, 'db'],
  ] as const)
    set(k, v, { kind: 'flag', label: `--${long}-${flag}` });
  if (input.conninfo !== undefined) {
    const text = input.conninfo;
    if (!isUri(text) && !text.includes('=')) {
      // Not echoed: it may be anything, a password given by mistake included.
      throw new ConninfoError([
        `--${long} is neither a URI (postgresql://...) nor keyword=value pairs (host=... port=...); for a host name alone use --${long}-host NAME or --${long} host=NAME`,
      ]);
    }
    const parsed = within(`--${long}`, () => parseConninfo(text));
    for (const [k, v] of Object.entries(parsed) as [Keyword, string][]) set(k, v, { kind: 'conninfo', label: `--${long}` });
  }
  const service = values.service ?? nonEmpty(env.PGSERVICE);
  if (service !== undefined) {
    const files = serviceFileLocations(env, options.home ?? env.HOME ?? os.homedir(), values.servicefile, options.sysconfdir);
    const found = within(origins.service?.label ?? 'PGSERVICE', () => lookupService(service, files, options.readFile));
    for (const [k, v] of Object.entries(found.params) as [Keyword, string][]) set(k, v, { kind: 'service', label: `service "${service}" (${found.file})` });
  }
  for (const [k, name] of Object.entries(KEYWORDS) as [Keyword, string | null][]) if (name !== null) set(k, env[name], { kind: 'env', label: name });
  if (env.PGREQUIRESSL?.startsWith('1')) set('sslmode', 'require', { kind: 'env', label: 'PGREQUIRESSL' });
  const byDefault: Origin = { kind: 'default', label: 'default' };
  if (values.hostaddr === undefined) set('host', defaults.host, byDefault);
  set('port', defaults.port, byDefault);
  set('user', defaults.user, byDefault);
  set('dbname', defaults.dbname, byDefault);
  set('connect_timeout', defaults.connect_timeout, byDefault);
  set('sslmode', values.sslrootcert === 'system' ? 'verify-full' : 'prefer', byDefault);

  const problems = validate(values, (k) => origins[k]?.label ?? 'default');
  if (values.host === undefined && values.hostaddr === undefined) {
    problems.push(`the ${side} server has no host: give --${long} (a URI or host=...), --${long}-host, a service, or PGHOST`);
  }
  if (problems.length > 0) throw new ConninfoError(problems);
  const { password, ...params } = values;
  return Object.defineProperty({ side, params, origins }, 'password', { value: password, enumerable: false }) as ConnectionSpec;
}

/** The hosts to try, in libpq's order: host and hostaddr lists paired, one port for all or one each (empty: 5432). */
export function hostTargets(spec: Pick<ConnectionSpec, 'params'>): HostTarget[] {
  const hosts = split(spec.params.host);
  const addrs = split(spec.params.hostaddr);
  const ports = split(spec.params.port) ?? [''];
  return Array.from({ length: addrs?.length ?? hosts?.length ?? 1 }, (_, i) => {
    const host = hosts?.[i] ?? '';
    const hostaddr = nonEmpty(addrs?.[i]);
    const port = ports.length === 1 ? ports[0] : ports[i];
    return {
      host,
      ...(hostaddr === undefined ? {} : { hostaddr }),
      port: port === undefined || port === '' ? 5432 : Number(port),
      socket: hostaddr === undefined && (host === '' || host.startsWith('/')),
    };
  });
}

/**
 * The connection string for a client program (`--dbname=<this>`): every keyword of the spec, quoted
 * as libpq reads it, `database` as dbname, then `extra` (application_name, connect_timeout, options,
 * ... set by the caller). Never the password: that goes to the private passfile (conninfoPassfileLines).
 * The service is already expanded, so service/servicefile are left out; passfile only when the spec
 * holds no password. Run the program with clientProgramEnv() so no PG* variable adds to it.
 */
export function toLibpqConninfo(spec: ConnectionSpec, database: string, extra: Omit<ConninfoParams, 'password'> = {}): string {
  if ('password' in extra) throw new Error('toLibpqConninfo: a password never goes into a connection string');
  const params: ConninfoParams = { ...spec.params, ...extra, dbname: database };
  delete params.service;
  delete params.servicefile;
  if (spec.password !== undefined) delete params.passfile;
  return formatConninfo(params);
}

/**
 * Passfile lines that give the spec's password to a client program: one per host, matched as libpq
 * matches them (host name, else hostaddr; a socket directory by its path and as `localhost`, which is
 * how libpq looks up its default directory). Empty when the spec holds no password.
 */
export function conninfoPassfileLines(spec: ConnectionSpec): string[] {
  const password = spec.password;
  if (password === undefined) return [];
  const lines = hostTargets(spec).flatMap((t) => {
    const host = t.host !== '' ? t.host : (t.hostaddr ?? 'localhost');
    return (t.socket && host !== 'localhost' ? [host, 'localhost'] : [host]).map((h) => passfileLine(h, String(t.port), spec.params.user ?? '', password));
  });
  return [...new Set(lines)];
}

/** `user@host:port[,host:port]/dbname sslmode=...` for messages; never the password. */
export function describeConnection(spec: ConnectionSpec): string {
  const hosts = hostTargets(spec).map((t) => {
    const name = t.host !== '' ? t.host : (t.hostaddr ?? 'local socket');
    const shown = name.includes(':') ? `[${name}]` : name;
    return `${shown}${t.host !== '' && t.hostaddr !== undefined ? ` (${t.hostaddr})` : ''}:${t.port}`;
  });
  const p = spec.params;
  const extra = [`sslmode=${p.sslmode ?? 'prefer'}`];
  if (p.target_session_attrs !== undefined && p.target_session_attrs !== 'any') extra.push(`target_session_attrs=${p.target_session_attrs}`);
  if (p.service !== undefined) extra.push(`service=${p.service}`);
  return `${p.user ?? ''}@${hosts.join(',')}/${p.dbname ?? ''} ${extra.join(' ')}`;
}

/** libpq's connection variables (PGHOST, PGSSLMODE, PGSERVICE, PGPASSWORD, ...), which a full conninfo makes redundant. */
export const LIBPQ_CONNECTION_VARIABLES: readonly string[] = [
  ...Object.values(KEYWORDS).filter((v): v is NonNullable<typeof v> => v !== null),
  'PGREQUIRESSL',
  'PGSYSCONFDIR',
];

/**
 * The environment for client programs given toLibpqConninfo(): without libpq's connection variables,
 * so that nothing but the conninfo (and PGPASSFILE, set afterwards by the caller) decides where and
 * how they connect. Session variables such as PGTZ or PGDATESTYLE stay.
 */
export function clientProgramEnv(env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  return Object.fromEntries(Object.entries(env).filter(([k]) => !LIBPQ_CONNECTION_VARIABLES.includes(k)));
}
