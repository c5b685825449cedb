/**
 * Passwords typed on a terminal (the CLI runs under `script`): with none given anywhere, each server
 * that wants one is asked once, one question at a time; with --password (-W) both are asked up front.
 * What is typed is not echoed, reaches the client programs (the migration works) and shows nowhere.
 */
import assert from 'node:assert/strict';
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { startCluster, type Cluster } from '../harness/cluster.ts';
import { assertSameData, makeDirs, PG15_BIN, removeDirs, stopAll, userDatabases, type Dirs } from './cli.ts';
import { createDatabases, filesContaining, noTerminal, runOnTerminal } from './connections-helpers.ts';

let src: Cluster; // TLS, hostssl only
let dst: Cluster;
let dirs: Dirs;
let env: Record<string, string>; // an empty HOME: no ~/.pgpass

before(async () => {
  if (noTerminal) return;
  [src, dst, dirs] = await Promise.all([
    startCluster({ name: 'connpw-src', tls: { hostsslOnly: true } }),
    startCluster({ name: 'connpw-dst' }),
    makeDirs('connpw'),
  ]);
  env = { HOME: path.join(dirs.root, 'home') };
  await mkdir(env.HOME!);
  await createDatabases(src, ['p1']);
});
after(async () => {
  await stopAll([src, dst]);
  await removeDirs(dirs);
});

const args = (command: string): string[] => [
  command,
  ...['--from-host', '127.0.0.1', '--from-port', String(src.port), '--to-host', '127.0.0.1', '--to-port', String(dst.port)],
  ...['--state-dir', dirs.stateDir, '--dump-root', dirs.dumpRoot, '--pg-bin-dir', PG15_BIN],
];
/** The password of the server a question names. */
const answer = (question: string): string => (question.includes(' on the source server ') ? src.password : dst.password);
const side = (q: string): string => / on the (source|target) server /.exec(q)?.[1] ?? q;

test('plan with no password anywhere: each server asked once, one question at a time', { skip: noTerminal }, async () => {
  const r = await runOnTerminal(args('plan'), env, answer);
  assert.equal(r.exitCode, 0, r.stdout);
  assert.deepEqual(r.questions.map(side).sort(), ['source', 'target'], r.stdout);
  // The second question comes after the first answer (its line ended), not beside the first.
  assert.doesNotMatch(r.stdout, /Password for user [^\n]*: Password for user/, r.stdout);
  assert.match(r.stdout, /the run can start/, r.stdout);
  for (const password of [src.password, dst.password]) assert.ok(!r.stdout.includes(password), `a typed password echoed\n${r.stdout}`);
});

test('migrate with -W: both asked up front, the typed passwords reach the client programs and show nowhere', { skip: noTerminal }, async () => {
  const r = await runOnTerminal([...args('migrate'), '-W'], env, answer);
  assert.equal(r.exitCode, 0, r.stdout);
  assert.deepEqual(r.questions.map(side).sort(), ['source', 'target'], r.stdout);
  assert.ok(r.stdout.indexOf('Password for user') < r.stdout.indexOf('preflight: start'), `asked before the run starts\n${r.stdout}`);
  assert.deepEqual(await userDatabases(dst), ['p1']);
  await assertSameData(src, dst, 'p1');
  for (const password of [src.password, dst.password]) {
    assert.ok(!r.stdout.includes(password), `a typed password echoed\n${r.stdout}`);
    assert.deepEqual(await filesContaining(dirs.root, password), []);
  }
});
