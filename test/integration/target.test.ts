/**
 * The target is left as the operator had it, whatever ends a run (#12), against real servers: the
 * tuning of a run killed during a restore is reverted by the next run even with --fresh or another
 * --state-dir; SIGHUP stops a run cleanly; two runs never work on one target at once; a rerun right
 * after kill -9 takes the run lock over and removes the killed run's passfile; the client programs
 * never see the tool's own password variables; a database whose sessions an administrator ended is
 * reported as failed with the server's words; a target restarted mid-run gets its tuning back.
 *
 * One source server (a database `big` with one table of BIG_ROWS rows, and `small`) serves every
 * test; each test has a target and state of its own.
 */
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import pg from 'pg';
import { startCluster, type Cluster } from '../harness/cluster.ts';
import { autoConf, migrateSessions, prepareTargetAutoConf, waitFor } from './cli.ts';
import { cliEnv, migrateArgs, processesMentioning, runCli, since, sleep, startCli, stateFile, type CliResult, type Workspace } from './delayed-helpers.ts';
import { assertSameAfter, killLeftovers, killRun, waitDuring } from './safety-helpers.ts';
import { assertConfAsBefore, environOf, passfileDirs, restoreLoading, startCliUnreaped, targetFixtures, tuned, zombie } from './target-helpers.ts';

const BIG_ROWS = Number(process.env.PGM_TEST_BIG_ROWS ?? 2_000_000);

let src: Cluster;
before(async () => {
  const t0 = Date.now();
  src = await startCluster({ name: 'tg-src' });
  await src.query('create database big');
  await src.query(
    `create table t (id int not null, v text not null);
     insert into t select g, md5(g::text) from generate_series(1, ${String(BIG_ROWS)}) g;
     create index t_id on t (id);
     analyze t;`,
    [],
    'big',
  );
  await src.query('create database small');
  await src.query(`create table s (id int primary key, v text); insert into s select g, 'v' || g from generate_series(1, 1000) g`, [], 'small');
  console.log(`# source seeded (big: ${String(BIG_ROWS)} rows) in ${since(t0)}`);
});
after(async () => {
  await src.stop();
});

const fx = targetFixtures();

/** A target whose postgresql.auto.conf looks like an ordinary server's (see prepareTargetAutoConf), and a workspace. */
async function target(label: string): Promise<{ dst: Cluster; ws: Workspace; confBefore: string[] }> {
  const [dst, ws] = await Promise.all([fx.cluster({ name: `${label}-dst` }), fx.workspace(label)]);
  await prepareTargetAutoConf(dst);
  return { dst, ws, confBefore: await autoConf(dst) };
}

async function assertMigrated(dst: Cluster, r: CliResult): Promise<void> {
  assert.equal(r.code, 0, r.output);
  assert.match(r.stdout, /2 of 2 databases verified/, r.output);
  await assertSameAfter(src, dst, 'big', r);
  await assertSameAfter(src, dst, 'small', r);
}

test('kill -9 during a restore, then the same command with --fresh: the tuning the killed run left is reverted (auto.conf as before the first run)', async () => {
  const t0 = Date.now();
  const { dst, ws, confBefore } = await target('t2a');
  const args = migrateArgs(src, dst, ws);
  const run = fx.track(startCli(args, cliEnv(src, dst), 180_000));
  const rows = await restoreLoading(run, ws, dst, 'big', 't', ['small']);
  const mid = await autoConf(dst);
  assert.ok(tuned(mid), `the run tuned the target (fsync=off): ${mid.join(', ')}\n${run.output()}`);
  const killed = await killRun(run, ws, [src, dst]);
  console.log(`# killed during the restore of big (${String(rows)} rows loaded) at ${since(t0)}`);
  assert.ok(tuned(await autoConf(dst)), `the killed run left its tuning applied\n${killed.output}`);

  const fresh = await runCli([...args, '--fresh'], cliEnv(src, dst), 180_000);
  // The killed run's databases are on the target and with --fresh nothing is known to be this migration's.
  assert.ok(fresh.code === 0 || fresh.code === 3, fresh.output);
  if (fresh.code === 3) assert.match(fresh.stderr, /"big" already exists on the target and was not created by this migration/, fresh.output);
  assert.match(fresh.stderr, /reverted the target tuning that an interrupted earlier run had left applied/, fresh.output);
  await assertConfAsBefore(dst, confBefore, 'after the --fresh run', fresh);
  console.log(`# --fresh run: exit ${String(fresh.code)}; done in ${since(t0)}`);
});

test('kill -9 during a restore, then a run with another --state-dir reverts the tuning first; a run with the first state dir then completes', async () => {
  const t0 = Date.now();
  const { dst, ws, confBefore } = await target('t2b');
  const other = await fx.workspace('t2b-other');
  const args = migrateArgs(src, dst, ws);
  const run = fx.track(startCli(args, cliEnv(src, dst), 180_000));
  await restoreLoading(run, ws, dst, 'big', 't', ['small']);
  assert.ok(tuned(await autoConf(dst)), run.output());
  const killed = await killRun(run, ws, [src, dst]);
  assert.ok(tuned(await autoConf(dst)), `the killed run left its tuning applied\n${killed.output}`);

  const elsewhere = await runCli(migrateArgs(src, dst, other), cliEnv(src, dst), 180_000);
  console.log(`# run with another --state-dir: exit ${String(elsewhere.code)} at ${since(t0)}`);
  await assertConfAsBefore(dst, confBefore, 'after the run with another --state-dir', elsewhere);
  const lines = elsewhere.stderr.split('\n');
  const reverted = lines.findIndex((l) => l.includes('reverted the target tuning that an interrupted earlier run had left applied'));
  assert.ok(reverted >= 0, `the run with another --state-dir says it reverted the tuning\n${elsewhere.output}`);
  const firstWork = lines.findIndex((l) => /preflight: done|tuning: start|globals: start|\] (streaming|dumping|restoring)/.test(l));
  assert.ok(firstWork === -1 || reverted < firstWork, `the tuning is reverted before anything else\n${elsewhere.output}`);

  const resumed = await runCli(args, cliEnv(src, dst), 180_000);
  await assertMigrated(dst, resumed);
  await assertConfAsBefore(dst, confBefore, 'after the run with the first state dir', resumed);
  console.log(`# done in ${since(t0)}`);
});

test('SIGHUP during a restore: exit 130, no client program or session left, tuning reverted, passfile removed; the same command then completes', async () => {
  const t0 = Date.now();
  const { dst, ws, confBefore } = await target('t2d');
  const args = migrateArgs(src, dst, ws);
  const run = fx.track(startCli(args, cliEnv(src, dst), 180_000));
  const pid = run.child.pid!;
  await restoreLoading(run, ws, dst, 'big', 't', ['small']);
  assert.ok(tuned(await autoConf(dst)), run.output());
  const passfiles = passfileDirs(pid);
  assert.equal(passfiles.length, 1, `the run holds the passwords in one private passfile directory: ${passfiles.join(', ')}\n${run.output()}`);
  const tSig = Date.now();
  process.kill(pid, 'SIGHUP');
  const r = await run.done;
  console.log(`# exit ${String(r.code)} ${String(Date.now() - tSig)} ms after SIGHUP`);
  assert.equal(r.code, 130, r.output);
  assert.match(r.stderr, /SIGHUP: stopping cleanly/, r.output);
  assert.ok(!existsSync(stateFile(ws, 'big.done')), r.output);
  assert.deepEqual(processesMentioning(ws.dumpRoot), [], `no client program left\n${r.output}`);
  assert.deepEqual(await migrateSessions(src), [], `no session of the run on the source\n${r.output}`);
  assert.deepEqual(await migrateSessions(dst), [], `no session of the run on the target\n${r.output}`);
  await assertConfAsBefore(dst, confBefore, 'after SIGHUP', r);
  assert.deepEqual(passfileDirs(pid), [], `the passfile directory is removed\n${r.output}`);

  const again = fx.track(startCli(args, cliEnv(src, dst), 180_000));
  const second = await again.done;
  await assertMigrated(dst, second);
  await assertConfAsBefore(dst, confBefore, 'after the second run', second);
  assert.deepEqual(passfileDirs(again.child.pid!), [], second.output);
  console.log(`# done in ${since(t0)}`);
});

test("the target restarted during a restore: big fails with the server's words, exit 1; the tuning is reverted once the target is back; the same command then completes", async () => {
  const t0 = Date.now();
  const { dst, ws, confBefore } = await target('t2r');
  const args = migrateArgs(src, dst, ws);
  const run = fx.track(startCli(args, cliEnv(src, dst), 180_000));
  await restoreLoading(run, ws, dst, 'big', 't', ['small']);
  assert.ok(tuned(await autoConf(dst)), run.output());
  // A fast restart: every session is ended, and the server refuses connections while it stops and starts.
  await dst.restart();
  const r = await run.done;
  assert.equal(r.code, 1, r.output);
  assert.match(r.stdout, /FAILED big: .*(terminating connection|shutting down|server closed the connection|starting up)/s, r.output);
  await assertConfAsBefore(dst, confBefore, 'after the restart', r);
  assert.deepEqual(await migrateSessions(dst), [], `no session of the run on the target\n${r.output}`);
  const second = await runCli(args, cliEnv(src, dst));
  await assertMigrated(dst, second);
  await assertConfAsBefore(dst, confBefore, 'after the second run', second);
  console.log(`# done in ${since(t0)}`);
});

test('two runs against one target with different state dirs: the second exits 4 naming the other run and leaves its tuning alone; the first completes', async () => {
  const t0 = Date.now();
  const { dst, ws, confBefore } = await target('t2e');
  const ws2 = await fx.workspace('t2e-second');
  // Holds the first run at the dump of big (pg_dump waits for its lock on t) with the target tuned.
  const holder = new pg.Client(src.connectionConfig('big'));
  holder.on('error', () => undefined);
  await holder.connect();
  try {
    await holder.query('begin');
    await holder.query('lock table t in access exclusive mode');
    const first = fx.track(startCli(migrateArgs(src, dst, ws), cliEnv(src, dst), 180_000));
    await waitDuring(first, 'the first run to wait for its lock on big.t', async () => {
      const rows = await src.query(
        `select 1 from pg_locks l join pg_stat_activity a on a.pid = l.pid where a.application_name like 'pg-migrate/%' and not l.granted and a.datname = 'big'`,
      );
      return rows.length > 0;
    });
    assert.ok(tuned(await autoConf(dst)), `the first run tuned the target\n${first.output()}`);

    const second = await runCli(migrateArgs(src, dst, ws2), cliEnv(src, dst), 60_000);
    assert.equal(second.code, 4, `${second.output}\n--- first run so far ---\n${first.output()}`);
    assert.match(
      second.stderr,
      new RegExp(`another pg-migrate run \\(pg-migrate/[0-9a-f]+/lock.*\\) is working on the target 127\\.0\\.0\\.1:${String(dst.port)}`),
      second.output,
    );
    assert.doesNotMatch(second.stderr, /tuning: start|globals: start|reverted the target tuning/, second.output);
    assert.equal(first.child.exitCode, null, `the first run is still held\n${first.output()}`);
    assert.ok(tuned(await autoConf(dst)), `the second run left the first run's tuning alone\n${second.output}`);

    await holder.query('commit');
    const r = await first.done;
    await assertMigrated(dst, r);
    await assertConfAsBefore(dst, confBefore, 'after the first run', r);
  } finally {
    await holder.end().catch(() => undefined);
  }
  console.log(`# done in ${since(t0)}`);
});

test("the session holding the run's target lock terminated mid-restore: the run takes the lock again, so a second run with another state dir exits 4 and leaves the tuning alone; the first completes", async () => {
  const t0 = Date.now();
  const { dst, ws, confBefore } = await target('t2l');
  const ws2 = await fx.workspace('t2l-second');
  const first = fx.track(startCli(migrateArgs(src, dst, ws), cliEnv(src, dst), 180_000));
  await restoreLoading(first, ws, dst, 'big', 't', ['small']);
  assert.ok(tuned(await autoConf(dst)), first.output());
  const ended = await dst.query(`select pg_terminate_backend(pid) from pg_stat_activity where application_name like 'pg-migrate/%/lock'`);
  assert.equal(ended.length, 1, first.output());
  await sleep(1000);

  const second = await runCli(migrateArgs(src, dst, ws2), cliEnv(src, dst), 60_000);
  assert.equal(second.code, 4, `${second.output}\n--- first run so far ---\n${first.output()}`);
  assert.match(second.stderr, /another pg-migrate run \(pg-migrate\/[0-9a-f]+\/lock.*\) is working on the target/, second.output);
  assert.doesNotMatch(second.stderr, /reverted the target tuning/, second.output);

  const r = await first.done;
  assert.match(
    r.stderr,
    /warning: the session holding the run's lock on the target ended \(terminating connection due to administrator command\); taking the lock again/,
    r.output,
  );
  await assertMigrated(dst, r);
  await assertConfAsBefore(dst, confBefore, 'after the first run', r);
  console.log(`# done in ${since(t0)}`);
});

test('a rerun started 1 s after kill -9 of the CLI (not yet reaped by its parent: a zombie) is not refused by the run lock and completes', async () => {
  const t0 = Date.now();
  const { dst, ws, confBefore } = await target('t3a');
  const args = migrateArgs(src, dst, ws);
  const run = fx.track(await startCliUnreaped(args, cliEnv(src, dst)));
  await restoreLoading(run, ws, dst, 'big', 't', ['small']);
  process.kill(run.pid, 'SIGKILL');
  await waitFor(`the killed CLI (pid ${String(run.pid)}) to be a zombie`, () => Promise.resolve(zombie(run.pid)), 10_000, 10);
  assert.ok(existsSync(path.join(ws.markers, 'run.lock')), `the killed run left its lock file\n${run.output()}`);
  await sleep(1000);
  assert.ok(zombie(run.pid), `the killed CLI is still a zombie when the rerun starts\n${run.output()}`);
  const rerun = await runCli(args, cliEnv(src, dst), 180_000);
  assert.doesNotMatch(rerun.output, /another pg-migrate .* is using the state/, rerun.output);
  await assertMigrated(dst, rerun);
  await assertConfAsBefore(dst, confBefore, 'after the rerun', rerun);
  console.log(`# done in ${since(t0)}`);
});

/** The directory of the passfile the run's client programs use (PGPASSFILE in the environment of one of them). */
function childPassfileDir(ws: Workspace, cliPid: number): string | undefined {
  for (const p of processesMentioning(ws.dumpRoot)) {
    if (p.pid === cliPid || !/\b(pg_dump|pg_restore|psql)\b/.test(p.cmd)) continue;
    const file = environOf(p.pid)?.get('PGPASSFILE');
    if (file !== undefined) return path.dirname(file);
  }
  return undefined;
}

test('kill -9 of a run with PG_MIGRATE_*_PASS leaves its passfile directory behind; the next run removes it', async () => {
  const t0 = Date.now();
  const { dst, ws, confBefore } = await target('t3b');
  const args = migrateArgs(src, dst, ws);
  const run = fx.track(startCli(args, cliEnv(src, dst), 180_000));
  const pid = run.child.pid!;
  await restoreLoading(run, ws, dst, 'big', 't', ['small']);
  const dir = childPassfileDir(ws, pid);
  assert.ok(dir !== undefined, `the client programs read the passwords from a passfile (PGPASSFILE)\n${run.output()}`);
  const killed = await killRun(run, ws, [src, dst]);
  assert.ok(existsSync(dir), `the killed run's passfile directory ${dir} is left behind\n${killed.output}`);
  assert.ok(readFileSync(path.join(dir, 'pgpass'), 'utf8').includes(dst.password), `it holds the passwords\n${killed.output}`);

  const next = fx.track(startCli(args, cliEnv(src, dst), 180_000));
  const r = await next.done;
  await assertMigrated(dst, r);
  assert.ok(!existsSync(dir), `the next run removed the killed run's passfile directory ${dir}\n${r.output}`);
  assert.deepEqual(passfileDirs(next.child.pid!), [], `and its own\n${r.output}`);
  assert.match(dir, new RegExp(`/pg-migrate-${String(pid)}-[^/]+$`), `the directory is <tmpdir>/pg-migrate-<pid>-*\n${r.output}`);
  await assertConfAsBefore(dst, confBefore, 'after the next run', r);
  console.log(`# done in ${since(t0)}`);
});

test("the client programs' environment has PGPASSFILE but neither PG_MIGRATE_FROM_PASS / PG_MIGRATE_TO_PASS nor PGPASSWORD", async () => {
  const t0 = Date.now();
  const { dst, ws } = await target('t3c');
  // The operator's PGPASSWORD is set too (to a value no server accepts): it must not reach the children either.
  const env = { ...cliEnv(src, dst), PGPASSWORD: 'operator-pgpassword-not-for-children' };
  const run = fx.track(startCli(migrateArgs(src, dst, ws), env, 180_000));
  const pid = run.child.pid!;
  await restoreLoading(run, ws, dst, 'big', 't', ['small']);
  const environs: { pid: number; cmd: string; vars: Map<string, string> }[] = [];
  for (const p of processesMentioning(ws.dumpRoot)) {
    if (p.pid === pid || !/\b(pg_dump|pg_restore|psql)\b/.test(p.cmd)) continue;
    const vars = environOf(p.pid);
    if (vars !== undefined) environs.push({ pid: p.pid, cmd: p.cmd, vars });
  }
  assert.ok(environs.length > 0, `read the environment of at least one client program\n${run.output()}`);
  for (const { pid: child, cmd, vars } of environs) {
    const what = `client program ${String(child)} (${cmd}): ${[...vars.keys()].sort().join(' ')}`;
    for (const name of ['PG_MIGRATE_FROM_PASS', 'PG_MIGRATE_TO_PASS', 'PGPASSWORD']) assert.ok(!vars.has(name), `${name} in ${what}`);
    for (const [name, value] of vars) {
      assert.ok(!name.startsWith('PG_MIGRATE_'), `${name} in ${what}`);
      assert.ok(!value.includes(src.password) && !value.includes(dst.password), `a password in ${name} of ${what}`);
    }
    assert.match(vars.get('PGPASSFILE') ?? '', new RegExp(`/pg-migrate-${String(pid)}-[^/]+/pgpass$`), `PGPASSFILE in ${what}`);
  }
  console.log(`# read the environment of ${String(environs.length)} client programs: ${environs.map((e) => e.cmd.split(' ')[0]).join(', ')}`);
  const r = await run.done;
  await assertMigrated(dst, r);
  console.log(`# done in ${since(t0)}`);
});

/** The text of a progress line or summary entry and the indented lines that continue it. */
function entry(text: string, head: RegExp): string | undefined {
  const lines = text.split('\n');
  const i = lines.findIndex((l) => head.test(l));
  if (i < 0) return undefined;
  let j = i + 1;
  while (j < lines.length && /^\s+\S/.test(lines[j]!)) j++;
  return lines.slice(i, j).join('\n');
}

const SERVER_WORDS = /terminating connection due to administrator command|server closed the connection/;

/**
 * Ends the run's sessions on the source while big streams, and checks the outcome: big failed (not
 * interrupted) with the step and the server's words, in its progress line and in the summary; exit 1;
 * the same command then completes. `pauseReader`: the target side (pg_restore) is paused first, so
 * that pg_dump is blocked writing into the FIFO when its session ends (what a target slower than the
 * source does): pg_dump then fails in PQgetCopyData with "server closed the connection unexpectedly"
 * (and the rerun is left to the first variant).
 */
async function sessionsEndedDuringDump(label: string, pauseReader: boolean): Promise<void> {
  const t0 = Date.now();
  const { dst, ws, confBefore } = await target(label);
  const args = migrateArgs(src, dst, ws);
  const run = fx.track(startCli(args, cliEnv(src, dst), 180_000));
  const copied = async (): Promise<number | undefined> => {
    const rows = await src.query<{ n: string }>(
      `select p.tuples_processed::text as n from pg_stat_progress_copy p join pg_stat_activity a on a.pid = p.pid
        where a.application_name like 'pg-migrate/%' and p.command = 'COPY TO' and p.tuples_processed > 0`,
    );
    return rows.length > 0 ? Number(rows[0]!.n) : undefined;
  };
  await waitDuring(run, 'small verified and a COPY of big.t running on the source', async () => existsSync(stateFile(ws, 'small.verify')) && copied(), {
    inconclusive: true,
    intervalMs: 10,
  });
  const readers = pauseReader ? processesMentioning(ws.dumpRoot).filter((p) => /\bpg_restore\b/.test(p.cmd) && p.cmd.includes('big.fifo')) : [];
  if (pauseReader) {
    assert.ok(readers.length > 0, `the pg_restore reading big's stream\n${run.output()}`);
    for (const p of readers) process.kill(p.pid, 'SIGSTOP');
    // pg_dump fills the FIFO and blocks: its COPY stops advancing.
    let last = -1;
    await waitDuring(run, "pg_dump blocked on the FIFO (the source's COPY no longer advancing)", async () => {
      const n = (await copied()) ?? -1;
      const still = n === last;
      last = n;
      await sleep(300);
      return still;
    });
  }
  const [ended] = await src.query<{ n: string }>(
    `select count(pg_terminate_backend(pid))::text as n from pg_stat_activity where application_name like 'pg-migrate/%'`,
  );
  console.log(`# terminated ${ended!.n} sessions of the run on the source at ${since(t0)}`);
  if (pauseReader) {
    await sleep(300);
    for (const p of readers) process.kill(p.pid, 'SIGCONT');
  }
  const r = await run.done;
  assert.equal(r.code, 1, r.output);
  assert.match(r.stdout, /1 of 2 databases verified/, r.output);
  assert.doesNotMatch(r.output, /interrupted/, r.output);
  const progress = entry(r.stderr, /\[big\] failed \(/);
  const summary = entry(r.stdout, /^FAILED big: /);
  assert.match(progress ?? '', /\[big\] failed \([^)]*\): (streaming|dumping): /, `the progress line names the step\n${r.output}`);
  assert.match(summary ?? '', /^FAILED big: (streaming|dumping): /, `the summary names the step\n${r.output}`);
  await killLeftovers(ws, [src, dst]);
  await assertConfAsBefore(dst, confBefore, 'after the failed run', r);
  if (!pauseReader) {
    // (the first variant's rerun; checked before the cause so that a failure there shows too)
    const again = await runCli(args, cliEnv(src, dst), 180_000);
    await assertMigrated(dst, again);
    await assertConfAsBefore(dst, confBefore, 'after the second run', again);
  }
  // SRC BUG (found by this test; see the report on branch tests-issue12): when pg_dump is blocked on
  // the FIFO as its session ends, it fails in PQgetCopyData and prints the server's words on a line
  // "pg_dump: detail: Error message from server: server closed the connection unexpectedly", which has
  // no "error:"/"FATAL:" in it; runTool (src/proc/run.ts) shows only the lines matching
  // (error|ERROR|FATAL|PANIC): when there are any, so that line is dropped and the reason reads
  // "pg_dump exited with status 1: pg_dump: error: Dumping the contents of table "t" failed:
  // PQgetCopyData() failed." without the cause. The pauseReader variant fails on this every time, the
  // first one whenever pg_dump happened to be blocked on the FIFO (often: the target side is the slower).
  assert.match(progress ?? '', SERVER_WORDS, `the progress line gives the server's words\n${r.output}`);
  assert.match(summary ?? '', SERVER_WORDS, `the summary gives the server's words\n${r.output}`);
  console.log(`# done in ${since(t0)}`);
}

test("sessions on the source ended by an administrator during the dump: big is reported failed with the step and the server's words, exit 1; the same command then completes", async () => {
  await sessionsEndedDuringDump('t5b', false);
});

test("the same with pg_dump blocked on the FIFO when its session ends (target side paused): the server's words are still reported", async () => {
  await sessionsEndedDuringDump('t5b-blocked', true);
});
