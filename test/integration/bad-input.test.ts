/**
 * A new user's bad input, run as the CLI: each mistake gets one clear message naming the fix and the
 * documented exit code, no stack trace, and nothing changes on a server.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, test } from 'node:test';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { autoConf, userDatabases } from './cli.ts';
import { cliEnv, migrateArgs, runCli } from './delayed-helpers.ts';
import { fixtures } from './safety-helpers.ts';

const { setUp } = fixtures();

const dirs: string[] = [];
const mounts: string[] = [];
afterEach(async () => {
  for (const m of mounts.splice(0)) await promisify(execFile)('umount', [m]).catch(() => undefined);
  await Promise.all(dirs.splice(0).map((d) => fs.rm(d, { recursive: true, force: true })));
});

/** A directory on a read-only file system (a tmpfs: needs root, as CI has), or undefined. */
async function readOnlyDir(label: string): Promise<string | undefined> {
  const dir = await tempDir(label);
  try {
    await promisify(execFile)('mount', ['-t', 'tmpfs', '-o', 'ro,size=1m', 'tmpfs', dir]);
  } catch {
    return undefined;
  }
  mounts.push(dir);
  return dir;
}
async function tempDir(label: string): Promise<string> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), `pgm-bad-${label}-`));
  dirs.push(dir);
  return dir;
}

/** No stack trace, no internal error wording. */
function assertNoTrace(output: string): void {
  assert.doesNotMatch(output, /\n\s+at .+:\d+:\d+/, output);
  assert.doesNotMatch(output, /unexpected error/, output);
}

test("a PG_MIGRATE_* variable of another command's option (the container's PG_MIGRATE_DUMP_ROOT) does not stop status; one that names no option does", async () => {
  const dir = await tempDir('env');
  const env = { PG_MIGRATE_STATE_DIR: dir, PG_MIGRATE_DUMP_ROOT: path.join(dir, 'dumps'), PG_MIGRATE_DUMP_JOBS: '2' };
  const r = await runCli(['status'], env);
  assert.equal(r.code, 0, r.output);
  assert.match(r.stdout, new RegExp(`no migration state in ${dir}/pg_migrate_state`), r.output);
  const typo = await runCli(['status'], { ...env, PG_MIGRATE_JOBS: '3' });
  assert.equal(typo.code, 2, typo.output);
  assert.match(typo.stderr, /unknown option from the environment variable PG_MIGRATE_JOBS/, typo.output);
  // On the command line, an option the command does not take is still refused.
  const flag = await runCli(['status', '--dump-root', dir], env);
  assert.equal(flag.code, 2, flag.output);
  assert.match(flag.stderr, /unknown option --dump-root/, flag.output);
  assertNoTrace(r.output + typo.output + flag.output);
});

/** A local port where nothing listens: connections are refused at once. */
async function closedPort(): Promise<number> {
  const net = await import('node:net');
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const port = (server.address() as import('node:net').AddressInfo).port;
      server.close(() => {
        resolve(port);
      });
    });
  });
}

test('cutover: a server out of reach exits 3 and another run holding the state exits 4, as documented (not 5)', async () => {
  const dir = await tempDir('cutover');
  const port = String(await closedPort());
  const conn = ['--from-host', '127.0.0.1', '--from-port', port, '--to-host', '127.0.0.1', '--to-port', port, '--state-dir', dir];
  const refused = await runCli(['cutover', ...conn]);
  assert.equal(refused.code, 3, refused.output);
  assert.match(refused.stderr, /refused the connection/, refused.output);
  assertNoTrace(refused.output);
  // A run holding the state directory's lock (this test's own process stands for it).
  const state = path.join(dir, 'pg_migrate_state');
  await fs.mkdir(state, { recursive: true });
  const lock = { pid: process.pid, startTicks: null, host: os.hostname(), appName: 'pg-migrate/test', startedAt: new Date().toISOString() };
  await fs.writeFile(path.join(state, 'run.lock'), JSON.stringify(lock));
  const locked = await runCli(['cutover', ...conn]);
  assert.equal(locked.code, 4, locked.output);
  assert.match(locked.stderr, new RegExp(`another pg-migrate \\(pid ${String(process.pid)}`), locked.output);
  assertNoTrace(locked.output);
});

test('a state directory that cannot be created or read: exit 2 naming it and --state-dir, for migrate, cutover and status (was 5 with a bare EROFS/ENOTDIR)', async (t) => {
  const ro = await readOnlyDir('rostate');
  if (ro === undefined) {
    t.skip('cannot mount a read-only tmpfs here');
    return;
  }
  const port = String(await closedPort());
  const conn = ['--from-host', '127.0.0.1', '--from-port', port, '--to-host', '127.0.0.1', '--to-port', port];
  for (const command of ['migrate', 'cutover']) {
    const r = await runCli([command, ...conn, '--state-dir', path.join(ro, 'state')]);
    assert.equal(r.code, 2, `${command}: ${r.output}`);
    assert.match(
      r.stderr,
      /the state directory .*pg_migrate_state cannot be created or written \((EROFS|ENOENT).*pass --state-dir with a directory this user can write/,
      r.output,
    );
    assertNoTrace(r.output);
  }
  // status only reads: a state whose databases/ is a file cannot be read.
  const broken = await tempDir('brokenstate');
  await fs.mkdir(path.join(broken, 'pg_migrate_state'));
  await fs.writeFile(path.join(broken, 'pg_migrate_state', 'databases'), 'x');
  const r = await runCli(['status', '--state-dir', broken]);
  assert.equal(r.code, 2, r.output);
  assert.match(r.stderr, /the state in .*pg_migrate_state cannot be read \(ENOTDIR.*pass the --state-dir of the migration/, r.output);
  assertNoTrace(r.output);
});

test('a dump root that preflight finds writable but cannot be created (/sys as root), or a --compression pg_dump refuses: exit 3, nothing changed on the target', async () => {
  const { src, dst, ws } = await setUp('baddump');
  await src.query('create database shop');
  const before = await autoConf(dst);
  const r = await runCli(migrateArgs(src, dst, ws, ['--dump-root', '/sys/kernel/pgm-test-dumps']), cliEnv(src, dst));
  assert.equal(r.code, 3, r.output);
  assert.match(r.stderr, /the dump root \/sys\/kernel\/pgm-test-dumps (cannot be created|cannot be written)/, r.output);
  assertNoTrace(r.output);
  assert.deepEqual(await userDatabases(dst), []);
  assert.deepEqual(await autoConf(dst), before);
  // A -Z value pg_dump refuses: named in preflight, before the tuning and the globals (every dump failed after them).
  await src.query('create role app_owner');
  const z = await runCli(migrateArgs(src, dst, ws, ['--compression', 'abc']), cliEnv(src, dst));
  assert.equal(z.code, 3, z.output);
  assert.match(z.stderr, /--compression "abc" is not a pg_dump -Z value for pg_dump 15/, z.output);
  assertNoTrace(z.output);
  assert.deepEqual(await userDatabases(dst), []);
  assert.deepEqual(await dst.query(`select rolname from pg_roles where rolname = 'app_owner'`), []);
});

test('verify: one server given twice (another spelling of it), an --include-db that matches nothing, or a selection that leaves nothing: exit 2, never "equal"', async () => {
  const { src, dst } = await setUp('badverify');
  await src.query('create database shop');
  const env = { PG_MIGRATE_FROM_PASS: src.password, PG_MIGRATE_TO_PASS: src.password };
  const from = ['--from-host', src.host, '--from-port', String(src.port)];
  const same = await runCli(['verify', ...from, '--to', `postgresql://postgres@localhost:${String(src.port)}/postgres`], env);
  assert.equal(same.code, 2, same.output);
  assert.match(same.stderr, /the source and the target are the same server/, same.output);
  assert.doesNotMatch(same.stdout, /equal/, same.output);
  const args = ['verify', ...from, '--to-host', dst.host, '--to-port', String(dst.port)];
  const pair = cliEnv(src, dst);
  const nosuch = await runCli([...args, '--include-db', 'nosuch'], pair);
  assert.equal(nosuch.code, 2, nosuch.output);
  assert.match(nosuch.stderr, /--include-db "nosuch" matches no database on either server; nothing was compared/, nosuch.output);
  const none = await runCli([...args, '--exclude-db', '*'], pair);
  assert.equal(none.code, 2, none.output);
  assert.match(none.stderr, /leave no database to compare/, none.output);
  for (const r of [same, nosuch, none]) {
    assertNoTrace(r.output);
    assert.doesNotMatch(r.output, new RegExp(src.password), r.output);
  }
  // A selection that names something still compares it.
  const shop = await runCli([...args, '--include-db', 'shop'], pair);
  assert.equal(shop.code, 1, shop.output);
  assert.match(shop.stdout, /shop: database is missing on the target/, shop.output);
});

test('plan/migrate: a mistyped --exclude-db or --redo-db, a selection that leaves every database out, and plan while a run holds the state are named, not passed over', async () => {
  const { src, dst, ws } = await setUp('badselect');
  await src.query('create database shop');
  await src.query('create table t (id int)', [], 'shop');
  const typo = await runCli(migrateArgs(src, dst, ws, ['plan', '--exclude-db', 'shpo']), cliEnv(src, dst));
  assert.equal(typo.code, 0, typo.output);
  assert.match(typo.output, /--exclude-db "shpo" matches no database on the source, so it leaves nothing out/, typo.output);
  const redo = await runCli(migrateArgs(src, dst, ws, ['plan', '--redo-db', 'shpo']), cliEnv(src, dst));
  assert.equal(redo.code, 3, redo.output);
  assert.match(redo.output, /--redo-db "shpo" matches no database being migrated/, redo.output);
  const all = await runCli(migrateArgs(src, dst, ws, ['--exclude-db', '*']), cliEnv(src, dst));
  assert.equal(all.code, 0, all.output);
  assert.match(
    all.output,
    /--include-db\/--exclude-db leave no database to migrate \(left out: [^)]*shop[^)]*\): only the roles and tablespaces are copied/,
    all.output,
  );
  assert.match(all.output, /tuning: skipped — no database to migrate/, all.output);
  assert.deepEqual(await userDatabases(dst), []);
  // plan while another run holds the state directory (this test's process stands for it): could not start.
  const lock = { pid: process.pid, startTicks: null, host: os.hostname(), appName: 'pg-migrate/test', startedAt: new Date().toISOString() };
  await fs.writeFile(path.join(ws.markers, 'run.lock'), JSON.stringify(lock));
  const locked = await runCli(migrateArgs(src, dst, ws, ['plan']), cliEnv(src, dst));
  assert.equal(locked.code, 3, locked.output);
  assert.match(locked.output, new RegExp(`another pg-migrate \\(pid ${String(process.pid)}`), locked.output);
});

test("cutover against servers that are not the state's pair: exit 4 before anything is asked of them (no fence on an unrelated server)", async () => {
  const { src, dst, ws } = await setUp('badpair');
  await src.query('create database shop');
  await fs.mkdir(ws.markers, { recursive: true });
  const other = (port: number) => ({ host: 'old-db.example', port, systemIdentifier: '7000000000000000001' });
  await fs.writeFile(
    path.join(ws.markers, 'pair.json'),
    JSON.stringify({ source: other(5432), target: { ...other(5433), systemIdentifier: '7000000000000000002' } }),
  );
  const r = await runCli(
    ['cutover', '--from-host', src.host, '--from-port', String(src.port), '--to-host', dst.host, '--to-port', String(dst.port), '--state-dir', ws.stateDir],
    cliEnv(src, dst),
  );
  assert.equal(r.code, 4, r.output);
  assert.match(r.stderr, /belongs to another migration: source old-db\.example:5432/, r.output);
  assertNoTrace(r.output);
  const fenced = await src.query<{ n: string }>(
    `select count(*)::text as n from pg_db_role_setting where setconfig::text like '%default_transaction_read_only%'`,
  );
  assert.equal(fenced[0]?.n, '0');
});
