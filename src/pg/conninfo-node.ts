/**
 * A ConnectionSpec for node-postgres, with libpq's semantics: sslmode (require encrypts without
 * verifying unless a root certificate exists; prefer and allow fall back), the default files in
 * ~/.postgresql/, sslrootcert=system, CRLs, connect_timeout, several hosts and target_session_attrs.
 * Every field node-postgres would otherwise take from process.env is set explicitly.
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import pg from 'pg';
import { ConninfoError } from './conninfo-parse.ts';
import { hostTargets, type ConnectionSpec, type HostTarget } from './conninfo.ts';
import { passfileHost, readPassfilePassword } from './pgpass.ts';

/** libpq's default socket directory as Debian builds it (DEFAULT_PGSOCKET_DIR), for an empty host. */
export const DEFAULT_SOCKET_DIR = '/var/run/postgresql';

/** Where the node-postgres side looks for files, and how it picks among hosts. */
export interface NodeConnectionOptions {
  /** Home directory of ~/.postgresql/ and ~/.pgpass. @default process.env.HOME, else os.homedir() */
  home?: string;
  /** @default DEFAULT_SOCKET_DIR */
  defaultSocketDir?: string;
  /** Random numbers in [0, 1) for load_balance_hosts=random. @default Math.random */
  random?: () => number;
}

/** One host of the spec and the configs to try on it, in libpq's order. */
export interface HostPlan {
  target: HostTarget;
  /** [TLS, plain] for sslmode=prefer, [plain, TLS] for allow, one config otherwise (always plain on a unix socket). */
  attempts: pg.ClientConfig[];
}

const fail = (message: string): never => {
  throw new ConninfoError([message]);
};

/** A file's text; undefined when it does not exist (libpq stat()s first). */
function readIfExists(file: string, what: string): string | undefined {
  try {
    return readFileSync(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return undefined;
    return fail(`could not read ${what} "${file}": ${(err as Error).message}`);
  }
}

/** libpq refuses a private key others may read (0600 or less; 0640 or less when owned by root). */
function checkKeyFile(file: string): void {
  const st = statSync(file);
  if (!st.isFile()) fail(`private key file "${file}" is not a regular file`);
  if ((st.uid === 0 ? st.mode & 0o037 : st.mode & 0o077) !== 0) {
    fail(
      `private key file "${file}" has group or world access; it must have permissions u=rw (0600) or less if owned by the current user, or u=rw,g=r (0640) or less if owned by root`,
    );
  }
}

/** The CA certificates OpenSSL would trust by default (sslrootcert=system). */
function systemCertificates(): string[] {
  const get = (tls as { getCACertificates?: (type: 'system') => string[] }).getCACertificates;
  return get === undefined ? [...tls.rootCertificates] : get('system');
}

/**
 * TLS options for one host as libpq's initialize_SSL sets them up: the chain is verified when a root
 * certificate exists (sslrootcert, else ~/.postgresql/root.crt; `system`: the system store) whatever
 * the sslmode, the host name only with verify-full; verify-ca/verify-full without a root certificate
 * are errors. CRLs (sslcrl, sslcrldir, else ~/.postgresql/root.crl) with a root file; the client
 * certificate (sslcert/sslkey, else ~/.postgresql/postgresql.crt/.key) when its file exists.
 */
export function tlsOptions(spec: ConnectionSpec, target: HostTarget, home: string): tls.ConnectionOptions {
  const p = spec.params;
  const mode = p.sslmode ?? 'prefer';
  const dir = path.join(home, '.postgresql');
  const options: tls.ConnectionOptions = { minVersion: (p.ssl_min_protocol_version ?? 'TLSv1.2') as tls.SecureVersion, rejectUnauthorized: false };
  if (p.ssl_max_protocol_version !== undefined) options.maxVersion = p.ssl_max_protocol_version as tls.SecureVersion;
  if (p.sslrootcert === 'system') {
    options.ca = systemCertificates();
    options.rejectUnauthorized = true;
  } else {
    const rootFile = p.sslrootcert ?? path.join(dir, 'root.crt');
    const ca = readIfExists(rootFile, 'root certificate file');
    if (ca !== undefined) {
      options.ca = ca;
      options.rejectUnauthorized = true;
      const crlFiles = p.sslcrldir !== undefined ? listFiles(p.sslcrldir) : [];
      if (p.sslcrl !== undefined || p.sslcrldir === undefined) crlFiles.push(p.sslcrl ?? path.join(dir, 'root.crl'));
      const crl = crlFiles.map((f) => readIfExists(f, 'certificate revocation list')).filter((c) => c !== undefined);
      if (crl.length > 0) options.crl = crl;
    } else if (mode.startsWith('verify')) {
      fail(
        `root certificate file "${rootFile}" does not exist: provide the file, use the system's trusted roots with sslrootcert=system, or change sslmode to disable server certificate verification`,
      );
    }
  }
  const name = target.host !== '' && !target.socket ? target.host : undefined;
  if (options.rejectUnauthorized === true) {
    if (mode === 'verify-full') {
      if (name === undefined) fail('host name must be specified for a verified SSL connection (sslmode=verify-full)');
      options.checkServerIdentity = (_host, cert) => tls.checkServerIdentity(name ?? '', cert);
    } else options.checkServerIdentity = () => undefined;
  }
  if (name !== undefined && net.isIP(name) === 0 && p.sslsni !== '0') options.servername = name;
  if (p.sslcertmode !== 'disable') {
    const certFile = p.sslcert ?? path.join(dir, 'postgresql.crt');
    const cert = readIfExists(certFile, 'certificate file');
    if (cert !== undefined) {
      const keyFile = p.sslkey ?? path.join(dir, 'postgresql.key');
      const key = readIfExists(keyFile, 'private key file') ?? fail(`certificate present, but not private key file "${keyFile}"`);
      checkKeyFile(keyFile);
      Object.assign(options, { cert, key });
    }
  }
  return options;
}

function listFiles(dir: string): string[] {
  try {
    return readdirSync(dir, { withFileTypes: true })
      .filter((e) => e.isFile())
      .map((e) => path.join(dir, e.name));
  } catch {
    return []; // libpq ignores a CRL directory it cannot use
  }
}

/** libpq's connect_timeout in milliseconds: 0 or less (or none) waits forever, and 1 counts as 2 seconds. */
export function connectTimeoutMillis(value: string | undefined): number {
  const seconds = value === undefined ? 0 : Number.parseInt(value.trim(), 10);
  return seconds > 0 ? Math.max(seconds, 2) * 1000 : 0;
}

/**
 * The configs to try, host by host: libpq's host order (shuffled with load_balance_hosts=random),
 * on each host the sslmode's attempts. `applicationName` overrides the spec's application_name.
 * The password is the spec's, else looked up in the passfile (passfile, else ~/.pgpass) as libpq does.
 */
export function toClientConfigs(spec: ConnectionSpec, database: string, applicationName?: string, options: NodeConnectionOptions = {}): HostPlan[] {
  const p = spec.params;
  const home = options.home ?? process.env.HOME ?? os.homedir();
  const socketDir = options.defaultSocketDir ?? DEFAULT_SOCKET_DIR;
  const targets = hostTargets(spec);
  if (p.load_balance_hosts === 'random') {
    const random = options.random ?? Math.random;
    for (let i = targets.length - 1; i > 0; i--) {
      const j = Math.floor(random() * (i + 1));
      const [a, b] = [targets[i], targets[j]];
      if (a && b) [targets[i], targets[j]] = [b, a];
    }
  }
  const user = p.user ?? '';
  const mode = p.sslmode ?? 'prefer';
  return targets.map((target) => {
    const host = target.hostaddr ?? (target.host === '' ? socketDir : target.host);
    const base: pg.ClientConfig = {
      host,
      port: target.port,
      user,
      database,
      password:
        spec.password ??
        passfileLookup(p.passfile ?? path.join(home, '.pgpass'), passfileHost(target.host, target.hostaddr, socketDir), target.port, database, user),
      application_name: applicationName ?? p.application_name,
      fallback_application_name: p.fallback_application_name,
      options: p.options,
      client_encoding: p.client_encoding,
      connectionTimeoutMillis: connectTimeoutMillis(p.connect_timeout),
      keepAlive: p.keepalives === undefined || Number.parseInt(p.keepalives, 10) !== 0,
      enableChannelBinding: p.channel_binding !== 'disable',
      sslnegotiation: 'postgres',
      ssl: false,
    };
    if (p.keepalives_idle !== undefined) base.keepAliveInitialDelayMillis = Number.parseInt(p.keepalives_idle, 10) * 1000;
    if (target.socket || mode === 'disable') return { target, attempts: [base] };
    const secure: pg.ClientConfig = { ...base, ssl: tlsOptions(spec, target, home), sslnegotiation: p.sslnegotiation === 'direct' ? 'direct' : 'postgres' };
    return { target, attempts: mode === 'allow' ? [base, secure] : mode === 'prefer' ? [secure, base] : [secure] };
  });
}

/** The first config libpq would try (first host, first attempt). Use connectSpec() to get the fallbacks too. */
export function toClientConfig(spec: ConnectionSpec, database: string, applicationName?: string, options?: NodeConnectionOptions): pg.ClientConfig {
  const first = toClientConfigs(spec, database, applicationName, options)[0]?.attempts[0];
  return first ?? fail('no host to connect to');
}

/** The server asked for a password and there is none to send (libpq's "fe_sendauth: no password supplied"). */
class NoPasswordError extends Error {}

/** A password callback for node-postgres, called only when the server asks for a password. */
function passfileLookup(file: string, host: string, port: number, database: string, user: string): () => Promise<string> {
  return () => {
    const found = readPassfilePassword(file, host, String(port), database, user);
    return found.password === undefined
      ? Promise.reject(new NoPasswordError(`no password supplied for user "${user}": none was given, and ${found.why}`))
      : Promise.resolve(found.password);
  };
}

/** libpq's target_session_attrs values. */
export type TargetSessionAttrs = 'any' | 'read-write' | 'read-only' | 'primary' | 'standby' | 'prefer-standby';

/**
 * Whether a session fits `attrs` as libpq checks it after connecting: read-write/read-only by
 * `SHOW transaction_read_only`, primary/standby by pg_is_in_recovery(). prefer-standby checks for a
 * standby (its second pass, accepting any server, is connectSpec's).
 */
export async function sessionMatches(client: Pick<pg.ClientBase, 'query'>, attrs: TargetSessionAttrs): Promise<boolean> {
  if (attrs === 'any') return true;
  if (attrs === 'read-write' || attrs === 'read-only') {
    const r = await client.query<{ transaction_read_only: string }>('SHOW transaction_read_only');
    return (r.rows[0]?.transaction_read_only === 'on') === (attrs === 'read-only');
  }
  const r = await client.query<{ recovery: boolean }>('SELECT pg_catalog.pg_is_in_recovery() AS recovery');
  return (r.rows[0]?.recovery === true) === (attrs !== 'primary');
}

const MISMATCH: Record<TargetSessionAttrs, string> = {
  any: '',
  'read-write': 'session is read-only',
  'read-only': 'session is not read-only',
  primary: 'server is in hot standby mode',
  standby: 'server is not in hot standby mode',
  'prefer-standby': 'server is not in hot standby mode',
};

/** Failures that leave the host unreached: libpq moves to the next host instead of retrying with(out) TLS. */
function unreachable(err: unknown): boolean {
  const e = err as { code?: unknown; message?: unknown };
  const codes = ['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH', 'ETIMEDOUT', 'ENOENT'];
  return (typeof e.code === 'string' && codes.includes(e.code)) || (typeof e.message === 'string' && /timeout/i.test(e.message));
}

/** A connection made by connectSpec, with the config that made it (for a pg.Pool on the same host). */
export interface Connected {
  client: pg.Client;
  config: pg.ClientConfig;
  target: HostTarget;
}

/**
 * Connects as libpq does: host after host; on each, the sslmode's attempts (the fallback only when
 * the server was reached; none, and no next host, when a password is wanted and there is none); then target_session_attrs is checked, and prefer-standby takes any server
 * when no standby answered. One failure is rethrown as it is; several become one error listing each,
 * with the `code` and `cause` of the most telling one (a server's SQLSTATE first).
 */
export async function connectSpec(spec: ConnectionSpec, database: string, applicationName?: string, options: NodeConnectionOptions = {}): Promise<Connected> {
  const plans = toClientConfigs(spec, database, applicationName, options);
  const attrs = (spec.params.target_session_attrs ?? 'any') as TargetSessionAttrs;
  const failures: { where: string; error: unknown }[] = [];
  for (const want of attrs === 'prefer-standby' ? (['standby', 'any'] as const) : [attrs]) {
    for (const { target, attempts } of plans) {
      const tried: { where: string; error: unknown }[] = [];
      for (const [i, config] of attempts.entries()) {
        const where = `${target.host !== '' ? target.host : (target.hostaddr ?? 'local socket')}:${target.port}${config.ssl === false ? '' : ' (TLS)'}`;
        const client = new pg.Client(config);
        client.on('error', () => undefined);
        try {
          await client.connect();
        } catch (error) {
          await client.end().catch(() => undefined);
          // libpq gives up at once when it has no password to send: no sslmode fallback, no next host.
          // (A fallback would hide the cause: e.g. prefer on a hostssl-only server, refused by pg_hba.conf without TLS.)
          if (error instanceof NoPasswordError) throw error;
          // A server without TLS answering sslmode=prefer is negotiation, as in libpq: not a failure to report.
          const negotiation = i + 1 < attempts.length && config.ssl !== false && /does not support SSL/i.test((error as Error).message);
          if (!negotiation) tried.push({ where, error });
          if (i + 1 < attempts.length && !unreachable(error)) continue;
          break;
        }
        tried.splice(0); // a fallback that got in: the attempts before it were part of the negotiation
        try {
          if (await sessionMatches(client, want)) return { client, config, target };
          tried.push({ where, error: new Error(MISMATCH[want]) });
        } catch (error) {
          tried.push({ where, error });
        }
        await client.end().catch(() => undefined);
        break;
      }
      failures.push(...tried);
    }
  }
  const first = failures[0];
  if (failures.length === 1 && first) throw first.error;
  const codeOf = (e: unknown): unknown => (e as { code?: unknown }).code;
  const main =
    failures.find((f) => /^[0-9A-Z]{5}$/.test(String(codeOf(f.error)))) ?? failures.find((f) => codeOf(f.error) !== undefined) ?? failures[failures.length - 1];
  const text = failures.map((f) => `${f.where}: ${f.error instanceof Error ? f.error.message : String(f.error)}`).join('; ');
  throw Object.assign(new Error(`could not connect (${text})`, { cause: main?.error }), { code: codeOf(main?.error) });
}
