/**
 * The operator commands against real servers: plan (changes nothing, names every problem), status
 * (from the state alone, during a run and after a kill -9) and cleanup (after a kill -9 of a tuned run).
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import * as fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { test } from 'node:test';
import { autoConf, dbStateFile, prepareTargetAutoConf, userDatabases } from './cli.ts';
import { cliEnv, migrateArgs, runCli, startCli, type Workspace } from './delayed-helpers.ts';
import { fixtures, killRun, waitDuring, copyInto } from './safety-helpers.ts';

const { setUp, tempDir } = fixtures();
const run = promisify(execFile);

/** A database `big` whose restore takes a few seconds, and a small one. */
async function seed(src: import('../harness/cluster.ts').Cluster): Promise<void> {
  await src.query('create database big');
  await src.query('create table t (id int primary key, v text); insert into t select g, md5(g::text) from generate_series(1, 3000000) g', [], 'big');
  await src.query('create database small');
  await src.query('create table s (id int primary key); insert into s select generate_series(1, 100)', [], 'small');
}

/** `pg-migrate status --json` for a workspace. */
async function status(
  ws: Workspace,
): Promise<{ run?: { alive: boolean; pid: number }; tuning?: object; databases: { name: string; result: string; step: string }[] }> {
  const r = await runCli(['status', '--state-dir', ws.stateDir, '--json']);
  assert.equal(r.code, 0, r.output);
  return JSON.parse(r.stdout) as Awaited<ReturnType<typeof status>>;
}

test('plan: a budget that does not fit and a dump root without room: exit 3, both named, nothing changed', async (t) => {
  const { src, dst, ws } = await setUp('cmdplan');
  await src.query('create database filled');
  await src.query('create table t (id int, v text); insert into t select g, repeat(md5(g::text), 4) from generate_series(1, 60000) g', [], 'filled');
  await prepareTargetAutoConf(dst);
  const confBefore = await autoConf(dst);
  // A file system with 1 MB free for the dump root (a tmpfs: needs root, as CI has).
  const small = await tempDir('cmdplan-tmpfs');
  try {
    await run('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', small]);
  } catch (err) {
    t.skip(`cannot mount a tmpfs here (${(err as Error).message})`);
    return;
  }
  try {
    const dumpRoot = path.join(small, 'dumps');
    const args = migrateArgs(src, dst, ws, ['plan', '--data-path', 'files', '--dump-root', dumpRoot, '--dump-jobs', '200']);
    const r = await runCli(args, cliEnv(src, dst));
    assert.equal(r.code, 3, r.output);
    assert.match(r.stdout, /the run could not start/, r.output);
    assert.match(r.stdout, /the source has \d+ free connections .* need \d+/, r.output);
    assert.match(
      r.stdout,
      new RegExp(`the dump root ${dumpRoot.replaceAll('/', '\\/')} has .* free, but the dumps of the databases on the file path \\(filled\\)`),
      r.output,
    );
    assert.match(r.stdout, /filled .* files/, r.output);
    // Nothing changed: no database, no tuning, no state, no dump root.
    assert.deepEqual(await userDatabases(dst), []);
    assert.deepEqual(await autoConf(dst), confBefore);
    assert.ok(!existsSync(path.join(ws.stateDir, 'pg_migrate_state')), 'plan writes no state');
    assert.ok(!existsSync(dumpRoot), 'plan creates no dump root');
    // The same as JSON.
    const j = await runCli([...args, '--json'], cliEnv(src, dst));
    assert.equal(j.code, 3, j.output);
    const plan = JSON.parse(j.stdout) as { canStart: boolean; problems: string[]; plan: { databases: { name: string; dataPath: string }[] } };
    assert.equal(plan.canStart, false);
    assert.equal(plan.problems.length, 2, JSON.stringify(plan.problems));
    assert.deepEqual(
      plan.plan.databases.map((d) => [d.name, d.dataPath]),
      [['filled', 'files']],
    );
  } finally {
    await run('umount', [small]).catch(() => undefined);
  }
  // Within limits the run can start, and the plan says what it would do.
  const ok = await runCli(migrateArgs(src, dst, ws, ['plan']), cliEnv(src, dst));
  assert.equal(ok.code, 0, ok.output);
  assert.match(ok.stdout, /the run can start/, ok.output);
  assert.match(ok.stdout, /tuning of the target during the run: fsync=off/, ok.output);
  assert.match(ok.stdout, /connections: the source needs \d+ of \d+ free/, ok.output);
  assert.deepEqual(await autoConf(dst), confBefore);
});

test('status during a run and after kill -9; cleanup then reverts the tuning and removes the passfile', async () => {
  const { src, dst, ws } = await setUp('cmdstatus');
  await Promise.all([seed(src), prepareTargetAutoConf(dst)]);
  const confBefore = await autoConf(dst);
  const args = migrateArgs(src, dst, ws, ['--data-path', 'stream']);
  const first = startCli(args, cliEnv(src, dst));
  await waitDuring(first, 'the restore of big to load rows', () => copyInto(dst, 'big', 't').catch(() => undefined), { inconclusive: true });
  // First, while the run surely goes on: its passwords are in a private passfile.
  const passfiles = async (): Promise<string[]> => (await fs.readdir(os.tmpdir())).filter((n) => n.startsWith(`pg-migrate-${String(first.child.pid)}-`));
  assert.equal((await passfiles()).length, 1, 'the run keeps its passwords in a private passfile');
  const during = await status(ws);
  assert.equal(during.run?.alive, true, JSON.stringify(during));
  assert.equal(during.run.pid, first.child.pid);
  assert.ok(during.tuning, 'the tuning applied by the run going is shown');
  assert.ok(
    during.databases.some((d) => d.name === 'big' && d.result === 'in progress'),
    JSON.stringify(during.databases),
  );
  const text = await runCli(['status', '--state-dir', ws.stateDir]);
  assert.match(text.stdout, /a run is going: pid \d+/, text.output);

  // kill -9: the tool only; its client programs die with it.
  await killRun(first, ws, [src, dst]);
  assert.ok((await autoConf(dst)).includes('fsync=off'), 'the killed run left the target tuned');
  const after = await status(ws);
  assert.equal(after.run?.alive, false, JSON.stringify(after));
  assert.ok(after.tuning, 'the pending tuning is shown');
  // No run is going any more: big is not "in progress" but interrupted.
  assert.ok(
    after.databases.some((d) => d.name === 'big' && d.result === 'interrupted'),
    JSON.stringify(after.databases),
  );
  const afterText = await runCli(['status', '--state-dir', ws.stateDir]);
  assert.match(afterText.stdout, /was killed; the next run or pg-migrate cleanup cleans up after it/, afterText.output);
  assert.match(afterText.stdout, /│ big +│ interrupted +│/, afterText.output);
  assert.match(afterText.stdout, /0 in progress, .*1 interrupted \(no run is going: run the same command again to resume\)/, afterText.output);
  assert.match(
    afterText.stdout,
    /the target is tuned since .* \(as far as the state knows: .*\): the next run or pg-migrate cleanup puts back/,
    afterText.output,
  );

  // cleanup with the state lost (another --state-dir): the tuning's record on the target is enough.
  const elsewhere = path.join(ws.dir, 'no-state-here');
  const lost = await runCli(['cleanup', '--to-host', dst.host, '--to-port', String(dst.port), '--state-dir', elsewhere], cliEnv(src, dst));
  assert.equal(lost.code, 0, lost.output);
  assert.match(lost.stdout, /reverted the tuning an interrupted run had left on the target/, lost.output);
  assert.match(lost.stdout, /there is no state in .*no-state-here.* \(the record of the tuning on the target itself was enough\)/, lost.output);
  assert.deepEqual(await autoConf(dst), confBefore, 'the target is as before the run');

  // cleanup with the state: the passfile gone, the lock taken over, nothing else touched.
  const restoreStarted = JSON.parse(await fs.readFile(dbStateFile(ws.stateDir, 'big', 'restore_started'), 'utf8')) as { oid?: string };
  const c = await runCli(['cleanup', '--to-host', dst.host, '--to-port', String(dst.port), '--state-dir', ws.stateDir], cliEnv(src, dst));
  assert.equal(c.code, 0, c.output);
  assert.match(c.stdout, /took over the lock of a run that is gone/, c.output);
  assert.match(c.stdout, /the target carries no tuning of pg-migrate/, c.output);
  assert.deepEqual(await autoConf(dst), confBefore, 'the target is as before the run');
  const [fsync] = await dst.query<{ f: string }>("select current_setting('fsync') as f");
  assert.equal(fsync!.f, 'on');
  assert.deepEqual(await passfiles(), [], "the killed run's passfile is removed");
  const cleaned = await status(ws);
  assert.equal(cleaned.run, undefined);
  assert.equal(cleaned.tuning, undefined);
  // The state is kept: the next run resumes, dropping only its own database (oid recorded).
  assert.ok(restoreStarted.oid, 'the oid of the database the killed restore created was recorded');
  const second = await runCli(args, cliEnv(src, dst));
  assert.equal(second.code, 0, second.output);
  assert.deepEqual(await autoConf(dst), confBefore);
  const done = await status(ws);
  assert.deepEqual(done.databases.map((d) => [d.name, d.result]).sort(), [
    ['big', 'verified'],
    ['small', 'verified'],
  ]);
});
