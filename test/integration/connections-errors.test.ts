/**
 * Connections that must not work, end to end (CLI subprocess): a certificate from the wrong CA, a
 * connection without TLS to a hostssl-only server, a password nobody gave (no terminal): exit 3 in
 * preflight with a message that names the cause and the fix, nothing changed. And bad connection
 * input (a broken URI, an unknown keyword, a bad port): exit 2 naming the problem, before any server.
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { startCluster, type Cluster } from '../harness/cluster.ts';
import { describeRun, makeDirs, markersDir, PG15_BIN, removeDirs, runCli, stopAll, userDatabases, type CliResult, type Dirs } from './cli.ts';
import { uriOf } from './connections-helpers.ts';

let src: Cluster; // TLS, hostssl only
let dst: Cluster;
let dirs: Dirs;
let home: string; // empty: no ~/.pgpass or ~/.postgresql/ of the machine

before(async () => {
  [src, dst, dirs] = await Promise.all([
    startCluster({ name: 'connerr-src', tls: { hostsslOnly: true } }),
    startCluster({ name: 'connerr-dst' }),
    makeDirs('connerr'),
  ]);
  home = path.join(dirs.root, 'home');
  await mkdir(home);
  await src.query('create database a1');
});
after(async () => {
  await stopAll([src, dst]);
  await removeDirs(dirs);
});

const toDst = (): string[] => ['--to-host', '127.0.0.1', '--to-port', String(dst.port)];
const passwords = (): Record<string, string> => ({ PG_MIGRATE_FROM_PASS: src.password, PG_MIGRATE_TO_PASS: dst.password });
const run = (args: string[], env = passwords(), stateDir = dirs.stateDir): Promise<CliResult> =>
  runCli([...args, '--state-dir', stateDir, '--dump-root', dirs.dumpRoot, '--pg-bin-dir', PG15_BIN], { env: { HOME: home, ...env } });

/** Exit 3, one preflight message on stderr matching every pattern, nothing done on the target. */
async function refused(r: CliResult, patterns: RegExp[]): Promise<void> {
  assert.equal(r.exitCode, 3, describeRun(r));
  // Progress lines (timestamped) go to stderr too; the message is the one other line.
  const message = r.stderr.split('\n').filter((l) => l !== '' && !/^\d{4}-\d\d-\d\dT/.test(l));
  assert.equal(message.length, 1, describeRun(r));
  assert.match(message[0]!, /^pg-migrate: preflight failed, nothing was changed: /, describeRun(r));
  for (const p of patterns) assert.match(message[0]!, p, describeRun(r));
  assert.doesNotMatch(r.stdout + r.stderr, /tuning: start|globals: start|\] (dumping|streaming)/, describeRun(r));
  assert.deepEqual(await userDatabases(dst), []);
  assert.ok(!existsSync(path.join(markersDir(dirs), 'globals.done')));
}

test('verify-full with a CA that did not sign the server certificate: exit 3 naming TLS and the certificate', async () => {
  const r = await run(['--from', uriOf(src, { sslmode: 'verify-full', sslrootcert: src.wrongCaFile ?? '' }), ...toDst()]);
  await refused(r, [/source server/, /TLS failed/, /certificate/, /sslrootcert \(from --from\)/]);
});

test('sslmode=disable against a hostssl-only server: refused by pg_hba.conf, and the message says so', async () => {
  const r = await run(['--from', `host=127.0.0.1 port=${String(src.port)} sslmode=disable`, ...toDst()]);
  await refused(r, [/source server/, /no pg_hba\.conf entry/, /no encryption/, /hostssl needs sslmode=require/]);
});

test('PGSSLMODE=require with a target without TLS: exit 3 naming the target and where sslmode came from', async () => {
  const r = await run(['--from-host', '127.0.0.1', '--from-port', String(src.port), ...toDst()], { ...passwords(), PGSSLMODE: 'require' });
  await refused(r, [/the target server .* does not accept TLS connections, but sslmode \(from PGSSLMODE\) requires it/]);
});

test('no password anywhere and no terminal: exit 3 naming the ways to give one', async () => {
  const r = await run(['--from-host', '127.0.0.1', '--from-port', String(src.port), ...toDst()], { PG_MIGRATE_TO_PASS: dst.password });
  await refused(r, [/source server/, /password/, /PG_MIGRATE_FROM_PASS/, /PGPASSWORD/, /pgpass/]);
});

test('bad connection input: exit 2 naming the problem, no server contacted', async () => {
  const cases: [string[], RegExp][] = [
    [['--from', 'postgresql://[::1/db'], /--from: .*"\]" in IPv6 host address in URI/],
    [['--from', 'host=127.0.0.1 hots=x'], /--from: invalid connection option "hots" \(did you mean host\?\)/],
    [['--from', 'postgresql://127.0.0.1:99999/postgres'], /--from: port "99999" is not a port number/],
    [['--from-port', 'abc'], /--from-port must be a whole number from 1 to 65535 \(got something that is not a number\)/],
    [['--to', 'service=nowhere'], /--to: .*service "nowhere"/],
    [['-W'], /--password \(-W\) asks on a terminal, and this one has none: give the passwords in PG_MIGRATE_FROM_PASS\/PG_MIGRATE_TO_PASS/],
  ];
  const stateDir = path.join(dirs.root, 'bad-input-state');
  for (const [args, message] of cases) {
    const r = await run([...toDst(), ...args], passwords(), stateDir);
    assert.equal(r.exitCode, 2, describeRun(r));
    assert.match(r.stderr, message, describeRun(r));
    assert.equal(r.stdout, '', describeRun(r));
  }
  assert.ok(!existsSync(stateDir), 'no state written');
});

test('--help shows a URI for each side; -h is help and -p is --max-parallel, as before', async () => {
  const r = await runCli(['--help']);
  assert.equal(r.exitCode, 0, describeRun(r));
  assert.match(r.stdout, /--from +source connection: a URI \(postgresql:\/\/[^)]+\)/, r.stdout);
  assert.match(r.stdout, /--to +target connection, as --from\s+\(postgresql:\/\/[^)]+\)/, r.stdout);
  assert.match(r.stdout, /-p, --max-parallel/, r.stdout);
  assert.equal((await runCli(['-h'])).stdout, r.stdout);
});
