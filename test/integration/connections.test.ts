/**
 * Connecting the way PostgreSQL users do, end to end (CLI subprocess), against a source and a target
 * that accept TCP only over TLS (hostssl; private CA made by the harness with openssl). One state dir,
 * one database more per run, each run spelling the same two servers another way: flags with
 * PGSSLMODE, URIs with verify-full (the target named `localhost` instead of 127.0.0.1), a service per
 * side, PGHOST/PGPORT/PGPASSWORD, the source's socket directory. Each run resumes the state of the
 * others (pair identity by system identifier); a different target is refused. Also: database and role
 * settings that would end or forbid the run's sessions (statement_timeout, read-only,
 * idle_session_timeout), and passwords kept out of every output, file, command line and environment.
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { after, before, test } from 'node:test';
import pg from 'pg';
import { startCluster, type Cluster } from '../harness/cluster.ts';
import { quoteLiteral } from '../harness/seed.ts';
import { writeServiceFile } from '../harness/libpq.ts';
import { assertSameData, describeRun, makeDirs, passwordEnv, PG15_BIN, removeDirs, runCli, stopAll, userDatabases, type CliResult, type Dirs } from './cli.ts';
import { assertNoSecrets, createDatabases, recordingBinDir, uriOf, type ClientCall } from './connections-helpers.ts';

let src: Cluster; // TLS, hostssl only
let dst: Cluster; // TLS, hostssl only
let other: Cluster; // another target (no TLS)
let dirs: Dirs;
const DBS = ['a1', 'a2', 'a3', 'a4', 'a5', 'a6'];
const oddPassword = (c: Cluster): string => `p:a\\s@s%2F/ '"#?&=${c === src ? 'from' : 'to'}-${c.password}`;
let home: string; // an empty HOME: no ~/.pgpass, ~/.pg_service.conf or ~/.postgresql/ of the machine

before(async () => {
  [src, dst, other, dirs] = await Promise.all([
    startCluster({ name: 'conn-src', tls: { hostsslOnly: true } }),
    startCluster({ name: 'conn-dst', tls: { hostsslOnly: true } }),
    startCluster({ name: 'conn-other' }),
    makeDirs('conn'),
  ]);
  home = path.join(dirs.root, 'home');
  await mkdir(home);
  await createDatabases(src, DBS);
  // A superuser on each side whose password has every character a URI or a passfile must escape.
  for (const c of [src, dst]) await c.query(`create role odd superuser login password ${quoteLiteral(oddPassword(c))}`);
});
after(async () => {
  await stopAll([src, dst, other]);
  await removeDirs(dirs);
});

const files = (extra: string[]): string[] => ['--state-dir', dirs.stateDir, '--dump-root', dirs.dumpRoot, '--pg-bin-dir', PG15_BIN, ...extra];
const flags = (to: Cluster): string[] => ['--from-host', '127.0.0.1', '--from-port', String(src.port), '--to-host', '127.0.0.1', '--to-port', String(to.port)];
const env = (extra: Record<string, string> = {}): Record<string, string> => ({ HOME: home, ...passwordEnv(src, dst), ...extra });

let runs = 0;

/**
 * Runs the CLI (client programs recorded) for `db` alone: exit 0, only `db` copied, the same on both
 * servers, and no password in the output, the state, the dumps, the report or a client's command line.
 */
async function migrates(
  db: string,
  args: string[],
  runEnv: Record<string, string>,
  secrets: string[] = [],
): Promise<{ r: CliResult; connected: ClientCall[] }> {
  const rec = await recordingBinDir(path.join(dirs.root, `rec-${String(++runs)}`));
  const report = path.join(dirs.root, `report-${String(runs)}.json`);
  const run = ['--state-dir', dirs.stateDir, '--dump-root', dirs.dumpRoot, '--pg-bin-dir', rec.binDir, '--report', report];
  const r = await runCli([...args, ...run, '--include-db', db], { env: runEnv });
  assert.equal(r.exitCode, 0, describeRun(r));
  assert.match(r.stderr, new RegExp(`\\[${db}\\] (dumping|streaming)`), describeRun(r));
  for (const done of DBS.filter((d) => d !== db)) assert.doesNotMatch(r.stderr, new RegExp(`\\[${done}\\] (dumping|streaming)`), describeRun(r));
  assert.ok((await userDatabases(dst)).includes(db), `${db} on the target`);
  await assertSameData(src, dst, db);
  assert.ok(existsSync(report));
  const connected = await assertNoSecrets(r, await rec.calls(), [src.password, dst.password, ...secrets], [dirs.stateDir, dirs.dumpRoot, report]);
  return { r, connected };
}

test('database and role settings that would end or forbid sessions do not break the run', async () => {
  const timeout = "statement_timeout = '1ms'";
  const readOnly = 'default_transaction_read_only = on';
  // The source's maintenance database also gets JIT for every query: even the first query of the
  // tool's first session takes more than 1 ms there, so a session without its settings always fails.
  const changed: [Cluster, string, string[]][] = [
    [src, 'database a5', [timeout, readOnly]],
    [src, 'database postgres', [timeout, 'jit = on', 'jit_above_cost = 0']],
    [dst, 'role postgres', [timeout, readOnly, "idle_session_timeout = '100ms'"]],
  ];
  // One session per server: the settings take effect at the next login.
  for (const [c, what, settings] of changed)
    await c.withClient(async (client) => {
      for (const setting of settings) await client.query(`alter ${what} set ${setting}`);
    });
  const reset = async (c: Cluster, what: string): Promise<void> => {
    const client = new pg.Client({ ...c.connectionConfig(), options: '-c statement_timeout=0 -c default_transaction_read_only=off' });
    await client.connect();
    await client.query(`alter ${what} reset all`).finally(() => client.end());
  };
  let r: CliResult;
  try {
    r = await runCli(files([...flags(dst), '--include-db', 'a5']), { env: env() });
  } finally {
    for (const [c, what] of changed.slice(1)) await reset(c, what);
  }
  assert.equal(r.exitCode, 0, describeRun(r));
  const settings = `select array_to_string(setconfig, ',') as s from pg_db_role_setting join pg_database d on d.oid = setdatabase where datname = 'a5'`;
  assert.deepEqual(await dst.query(settings), await src.query(settings), 'the database settings came across');
  await reset(src, 'database a5');
  await reset(dst, 'database a5');
  await assertSameData(src, dst, 'a5');
});

test('PGSSLMODE=require with flags: TLS without verifying the certificate (as libpq), both sides', async () => {
  await migrates('a1', flags(dst), env({ PGSSLMODE: 'require' }));
});

test('the same run as URIs with odd passwords (verify-full, the target named localhost) resumes, and TLS reaches the client programs', async () => {
  const tls = (c: Cluster): Record<string, string> => ({ sslmode: 'verify-full', sslrootcert: c.caFile ?? '' });
  const as = (c: Cluster, host = '127.0.0.1'): string => uriOf(c, tls(c), { host, user: 'odd', password: oddPassword(c) });
  const { connected } = await migrates('a2', ['--from', as(src), '--to', as(dst, 'localhost')], { HOME: home }, [oddPassword(src), oddPassword(dst)]);
  assert.deepEqual(await userDatabases(dst), ['a1', 'a2', 'a5'], 'a1 and a5 kept from the runs spelled with flags');
  // The client programs get the TLS settings of the URI (in --dbname), the password only in their passfile.
  for (const c of connected) {
    const dbname = c.args.find((a) => a.startsWith('--dbname=')) ?? '';
    assert.match(dbname, /sslmode='verify-full' sslrootcert='\/tmp\/pg-migrate-harness\/.*-ca\.crt'/, `${c.tool} ${c.args.join(' ')}`);
  }
});

test('a service per side in PGSERVICEFILE, passwords in it', async () => {
  const file = path.join(dirs.root, 'services.conf');
  const service = (c: Cluster): Record<string, string> => ({
    host: '127.0.0.1',
    port: String(c.port),
    user: 'postgres',
    sslmode: 'verify-full',
    sslrootcert: c.caFile ?? '',
    password: c.password,
  });
  await writeServiceFile(file, { old: service(src), new: service(dst) });
  await migrates('a3', ['--from', 'service=old', '--to', 'service=new'], { HOME: home, PGSERVICEFILE: file });
});

test('PGHOST, PGPORT and PGPASSWORD apply to the source when --from is not given', async () => {
  // Else the source would be localhost:5432 (no server there), and another source would be refused (exit 4).
  // The target has its own host, port and password: the variables do not reach it.
  const vars = { PGHOST: '127.0.0.1', PGPORT: String(src.port), PGPASSWORD: src.password, PG_MIGRATE_TO_PASS: dst.password };
  await migrates('a4', ['--to-host', '127.0.0.1', '--to-port', String(dst.port)], { HOME: home, ...vars });
});

test('the source through its unix socket directory, for the client programs too', async () => {
  const { connected } = await migrates('a6', ['--from', `host=${src.socketDir} port=${String(src.port)}`, ...flags(dst).slice(4)], env());
  const dumps = connected.filter((c) => c.tool === 'pg_dump');
  assert.ok(dumps.length > 0 && dumps.every((c) => c.args.some((a) => a.startsWith('--dbname=') && a.includes(`host='${src.socketDir}'`))));
});

test('every database done: a rerun spelled as conninfo strings copies nothing and verifies', async () => {
  const conninfo = (c: Cluster): string => `host=localhost hostaddr=127.0.0.1 port=${String(c.port)} sslmode=require`;
  const r = await runCli(files(['--from', conninfo(src), '--to', conninfo(dst)]), { env: env() });
  assert.equal(r.exitCode, 0, describeRun(r));
  assert.doesNotMatch(r.stderr, /\] (dumping|streaming|restoring)/, describeRun(r));
  assert.match(r.stdout, /6 of 6 databases verified/, describeRun(r));
});

test('another target server with this state: exit 4, nothing created there', async () => {
  const r = await runCli(files(flags(other)), { env: { HOME: home, PG_MIGRATE_FROM_PASS: src.password, PG_MIGRATE_TO_PASS: other.password } });
  assert.equal(r.exitCode, 4, describeRun(r));
  assert.match(r.stderr, /--fresh/, describeRun(r));
  assert.deepEqual(await userDatabases(other), []);
});
