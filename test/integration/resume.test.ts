/**
 * Interruptions and resume: kill -9 during a restore, Ctrl-C during a dump, and state that belongs
 * to another server pair.
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import * as fs from 'node:fs/promises';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { startCluster, type Cluster } from '../harness/cluster.ts';
import {
  alive,
  assertSameData,
  autoConf,
  baseArgs,
  clientPrograms,
  describeRun,
  makeDirs,
  dbStateFile,
  markersDir,
  migrateSessions,
  passwordEnv,
  prepareTargetAutoConf,
  removeDirs,
  runCli,
  startCli,
  stopAll,
  userDatabases,
  waitCli,
  waitFor,
  type Dirs,
} from './cli.ts';
import type { RunSummary } from '../../src/events.ts';

const BIG_ROWS = Number(process.env.PGM_TEST_BIG_ROWS ?? 3_000_000);

const clusters: Cluster[] = [];
const allDirs: Dirs[] = [];
after(async () => {
  await stopAll(clusters);
  await Promise.all(allDirs.map(removeDirs));
});

async function pair(label: string): Promise<{ src: Cluster; dst: Cluster; dirs: Dirs }> {
  const [src, dst, dirs] = await Promise.all([startCluster({ name: `${label}-src` }), startCluster({ name: `${label}-dst` }), makeDirs(label)]);
  clusters.push(src, dst);
  allDirs.push(dirs);
  return { src, dst, dirs };
}

/**
 * A database `big` with one table of BIG_ROWS narrow rows and no unique constraint, so a restore that
 * loaded rows twice would show as duplicates rather than fail; plus a small database.
 */
async function seedBig(src: Cluster): Promise<void> {
  const t0 = performance.now();
  await src.query('CREATE DATABASE big');
  await src.query(
    `CREATE TABLE t (id int NOT NULL, v text NOT NULL);
     INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, ${BIG_ROWS}) g;
     CREATE INDEX t_id_idx ON t (id);
     ANALYZE t;`,
    undefined,
    'big',
  );
  await src.query('CREATE DATABASE small');
  await src.query('CREATE TABLE s (id int PRIMARY KEY, v text); INSERT INTO s SELECT g, g::text FROM generate_series(1, 1000) g', undefined, 'small');
  console.log(`# seeded big (${BIG_ROWS} rows) in ${Math.round(performance.now() - t0)} ms`);
}

async function assertNoDuplicates(src: Cluster, dst: Cluster): Promise<void> {
  const sql = 'select count(*)::text as n, count(distinct id)::text as d from t';
  const [[a], [b]] = await Promise.all([src.query(sql, undefined, 'big'), dst.query(sql, undefined, 'big')]);
  assert.deepEqual(b, a);
  assert.equal(b.n, String(BIG_ROWS));
  assert.equal(b.d, b.n);
}

/** A COPY of this run's (application_name pg-migrate/...) that has already moved rows. */
async function copyInProgress(c: Cluster, command: 'COPY FROM' | 'COPY TO'): Promise<number | undefined> {
  const rows = await c.query<{ n: string }>(
    `select p.tuples_processed::text as n from pg_stat_progress_copy p join pg_stat_activity a on a.pid = p.pid
      where a.application_name like 'pg-migrate/%' and p.command = $1 and p.tuples_processed > 0`,
    [command],
  );
  return rows.length > 0 ? Number(rows[0]!.n) : undefined;
}

/** Kills (by pid) client programs a killed run left under this test's dump root. */
async function killLeftovers(dirs: Dirs): Promise<void> {
  for (const p of await clientPrograms(dirs)) {
    try {
      process.kill(p.pid, 'SIGKILL');
    } catch {
      /* gone */
    }
  }
}

describe('resume', () => {
  for (const dataPath of ['files', 'stream'] as const)
    test(`kill -9 during the restore of a database (--data-path ${dataPath}): the next run redoes it, no row lost or duplicated`, async () => {
      const { src, dst, dirs } = await pair(`kill9-${dataPath}`);
      try {
        await Promise.all([seedBig(src), prepareTargetAutoConf(dst)]);
        const confBefore = await autoConf(dst);
        const args = [...baseArgs(src, dst, dirs), '--restore-jobs', '2', '--dump-jobs', '2', '--data-path', dataPath];
        const child = startCli(args);
        const done = waitCli(child, 240_000);
        const marker = dbStateFile(dirs.stateDir, 'big', 'restore_started');
        const t0 = performance.now();
        const copied = await waitFor(
          'the restore of big to be loading rows (restore_started marker, a pg_restore process, a COPY on the target)',
          async () => {
            if (child.exitCode !== null) throw new Error(`pg-migrate exited early: ${describeRun(await done)}`);
            if (!existsSync(marker)) return undefined;
            if ((await clientPrograms(dirs, /\bpg_restore\b/)).length === 0) return undefined;
            return copyInProgress(dst, 'COPY FROM');
          },
          180_000,
          20,
        );
        console.log(`# restore of big loading (${copied} rows copied) after ${Math.round(performance.now() - t0)} ms; kill -9`);
        assert.ok(!existsSync(dbStateFile(dirs.stateDir, 'big', 'done')));
        process.kill(child.pid!, 'SIGKILL');
        const killed = await done;
        assert.equal(killed.signal, 'SIGKILL');
        // The killed run's client programs die with it (parent-death signal): none goes on restoring
        // into a database whose creation nobody records.
        await waitFor("the killed run's client programs to be gone", async () => ((await clientPrograms(dirs)).length === 0 ? true : undefined), 5_000, 50);

        const r = await runCli(args, { timeoutMs: 240_000 });
        assert.equal(r.exitCode, 0, describeRun(r));
        assert.match(r.stdout, /2 of 2 databases verified/, describeRun(r));
        // Files: the finished dump is kept and only the restore redone. Stream: dump and restore are one step.
        if (dataPath === 'files') assert.doesNotMatch(r.stderr, /\[big\] dumping/, `the finished dump is not redone\n${describeRun(r)}`);
        else assert.match(r.stderr, /\[big\] streaming/, describeRun(r));
        await assertNoDuplicates(src, dst);
        await assertSameData(src, dst, 'big');
        await assertSameData(src, dst, 'small');
        assert.deepEqual(await autoConf(dst), confBefore, 'tuning reverted');
        const left = await waitFor('no pg_dump/pg_restore left', async () => ((await clientPrograms(dirs)).length === 0 ? true : undefined), 10_000, 200).catch(
          async () => clientPrograms(dirs),
        );
        assert.equal(left, true, `client programs left: ${JSON.stringify(left)}`);
        assert.deepEqual(await migrateSessions(dst), []);
        assert.deepEqual(await migrateSessions(src), []);
      } finally {
        await killLeftovers(dirs);
      }
    });

  test('tables copied in ranges: SIGINT during the range copies stops cleanly, kill -9 during them is redone, no row lost or duplicated', async () => {
    const { src, dst, dirs } = await pair('ranges');
    try {
      await Promise.all([seedBig(src), prepareTargetAutoConf(dst)]);
      const confBefore = await autoConf(dst);
      const reportFile = path.join(dirs.stateDir, 'report.json');
      const args = [
        ...baseArgs(src, dst, dirs),
        '--data-path',
        'stream',
        '--split-table-size',
        '1MB',
        '--dump-jobs',
        '2',
        '--restore-jobs',
        '2',
        '--report',
        reportFile,
      ];
      /** Starts a run and waits until a range COPY of big.t (ours, not pg_restore's) has loaded rows. */
      const startAndWaitForRanges = async (): Promise<{ child: ReturnType<typeof startCli>; done: ReturnType<typeof waitCli> }> => {
        const child = startCli(args);
        const done = waitCli(child, 240_000);
        const copied = await waitFor(
          'a range copy of big.t loading rows on the target',
          async () => {
            if (child.exitCode !== null) throw new Error(`pg-migrate exited early: ${describeRun(await done)}`);
            const rows = await dst.query<{ n: string }>(
              `select p.tuples_processed::text as n from pg_stat_progress_copy p join pg_stat_activity a on a.pid = p.pid
                where a.application_name like 'pg-migrate/%' and a.query ilike 'copy %"public"."t" (%) from stdin%' and p.tuples_processed > 0`,
            );
            return rows.length > 0 ? Number(rows[0]!.n) : undefined;
          },
          180_000,
          20,
        );
        console.log(`# range copy of big.t loading (${copied} rows)`);
        // The copies are psql processes working in the dump root: the checks below that none is left must see them.
        assert.ok((await clientPrograms(dirs, /\bpsql\b/)).length >= 2, 'the range copy runs as psql processes under the dump root');
        return { child, done };
      };

      const first = await startAndWaitForRanges();
      process.kill(first.child.pid!, 'SIGINT');
      const interrupted = await first.done;
      assert.equal(interrupted.exitCode, 130, describeRun(interrupted));
      assert.ok(!existsSync(dbStateFile(dirs.stateDir, 'big', 'done')));
      const quiet = await waitFor(
        'no session and no client program of the run left',
        async () => ((await migrateSessions(src)).length + (await migrateSessions(dst)).length + (await clientPrograms(dirs)).length === 0 ? true : undefined),
        10_000,
        100,
      ).catch(async () => ({ src: await migrateSessions(src), dst: await migrateSessions(dst), programs: await clientPrograms(dirs) }));
      assert.equal(quiet, true, `left after SIGINT: ${JSON.stringify(quiet)}`);
      assert.deepEqual(await autoConf(dst), confBefore, 'tuning reverted');

      const second = await startAndWaitForRanges();
      process.kill(second.child.pid!, 'SIGKILL');
      assert.equal((await second.done).signal, 'SIGKILL');

      const r = await runCli(args, { timeoutMs: 240_000 });
      assert.equal(r.exitCode, 0, describeRun(r));
      assert.match(r.stdout, /2 of 2 databases verified/, describeRun(r));
      const report = JSON.parse(await fs.readFile(reportFile, 'utf8')) as RunSummary;
      const big = report.databases.find((d) => d.name === 'big')!;
      assert.deepEqual(
        big.splitTables?.map((t) => [t.table, t.rows, t.binary]),
        [['"public"."t"', BIG_ROWS, true]],
        JSON.stringify(big),
      );
      await assertNoDuplicates(src, dst);
      await assertSameData(src, dst, 'big');
      await assertSameData(src, dst, 'small');
      assert.deepEqual(await autoConf(dst), confBefore, 'tuning reverted');
      assert.deepEqual(await migrateSessions(dst), []);
      assert.deepEqual(await migrateSessions(src), []);
    } finally {
      await killLeftovers(dirs);
    }
  });

  test('SIGINT during a dump: exit 130, children and sessions gone, tuning reverted; the next run completes', async () => {
    const { src, dst, dirs } = await pair('sigint');
    try {
      await Promise.all([seedBig(src), prepareTargetAutoConf(dst)]);
      const confBefore = await autoConf(dst);
      // Passwords from the environment in this test.
      const args = [...baseArgs(src, dst, dirs, { passwords: 'env' }), '--dump-jobs', '2'];
      const env = passwordEnv(src, dst);
      const child = startCli(args, { env });
      const done = waitCli(child, 240_000);
      const t0 = performance.now();
      const copied = await waitFor(
        'pg_dump of big to be copying rows',
        async () => {
          if (child.exitCode !== null) throw new Error(`pg-migrate exited early: ${describeRun(await done)}`);
          const dumps = await clientPrograms(dirs, /\bpg_dump\b/);
          if (!dumps.some((p) => p.cmd.includes(path.join(dirs.dumpRoot, 'big')))) return undefined;
          return copyInProgress(src, 'COPY TO');
        },
        180_000,
        20,
      );
      const dumpPids = (await clientPrograms(dirs, /\bpg_dump\b/)).map((p) => p.pid);
      console.log(
        `# pg_dump of big copying (${copied} rows) after ${Math.round(performance.now() - t0)} ms; SIGINT to ${child.pid}, pg_dump pids ${dumpPids.join(' ')}`,
      );
      // The tuning is applied at this point.
      assert.ok((await autoConf(dst)).includes('fsync=off'), 'tuning applied during the run');
      const tSig = performance.now();
      process.kill(child.pid!, 'SIGINT');
      const r = await done;
      const stopMs = Math.round(performance.now() - tSig);
      console.log(`# exited ${r.exitCode} ${stopMs} ms after SIGINT`);
      assert.equal(r.exitCode, 130, describeRun(r));
      assert.ok(stopMs < 30_000, `stopped within 30 s (took ${stopMs} ms)`);
      assert.ok(!existsSync(dbStateFile(dirs.stateDir, 'big', 'dumped')));

      const gone = await waitFor(
        'pg_dump processes to end',
        async () => ((await clientPrograms(dirs)).length === 0 && dumpPids.every((p) => !alive(p)) ? true : undefined),
        5_000,
        100,
      ).catch(async () => clientPrograms(dirs));
      assert.equal(gone, true, `client programs still running 5 s after the exit: ${JSON.stringify(gone)}`);
      const conf = await autoConf(dst);
      assert.deepEqual(conf, confBefore, 'tuning reverted');
      assert.ok(!conf.some((l) => /^(fsync|full_page_writes|synchronous_commit)=/.test(l)), conf.join(', '));
      assert.ok(!existsSync(path.join(markersDir(dirs), 'tuning.json')));
      assert.deepEqual(await migrateSessions(src), []);
      assert.deepEqual(await migrateSessions(dst), []);

      const again = await runCli(args, { env, timeoutMs: 240_000 });
      assert.equal(again.exitCode, 0, describeRun(again));
      await assertNoDuplicates(src, dst);
      await assertSameData(src, dst, 'big');
      await assertSameData(src, dst, 'small');
      assert.deepEqual(await autoConf(dst), confBefore);
      assert.deepEqual(await clientPrograms(dirs), []);
    } finally {
      await killLeftovers(dirs);
    }
  });
});

test('state of another source/target pair is refused (exit 4) until --fresh', async () => {
  const [src, a, b, dirs] = await Promise.all([
    startCluster({ name: 'pair-src' }),
    startCluster({ name: 'pair-dst-a' }),
    startCluster({ name: 'pair-dst-b' }),
    makeDirs('pair'),
  ]);
  clusters.push(src, a, b);
  allDirs.push(dirs);
  await src.query('CREATE DATABASE tiny');
  await src.query('CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 500) g', undefined, 'tiny');

  const onA = await runCli(baseArgs(src, a, dirs));
  assert.equal(onA.exitCode, 0, describeRun(onA));
  await assertSameData(src, a, 'tiny');

  const confB = await autoConf(b);
  const onB = await runCli(baseArgs(src, b, dirs));
  assert.equal(onB.exitCode, 4, describeRun(onB));
  assert.match(onB.stderr, /--fresh/, describeRun(onB));
  assert.match(onB.stderr, new RegExp(`${a.port}`), `names the pair the state belongs to\n${describeRun(onB)}`);
  assert.deepEqual(await userDatabases(b), [], 'nothing created on B');
  assert.deepEqual(await autoConf(b), confB, 'B not tuned');

  const fresh = await runCli([...baseArgs(src, b, dirs), '--fresh']);
  assert.equal(fresh.exitCode, 0, describeRun(fresh));
  assert.match(fresh.stderr, /\[tiny\] (dumping|streaming)/, describeRun(fresh));
  await assertSameData(src, b, 'tiny');
  assert.deepEqual(await autoConf(b), confB);
  // A is untouched by all this, and the state now belongs to B: A is refused.
  await assertSameData(src, a, 'tiny');
  const backToA = await runCli(baseArgs(src, a, dirs));
  assert.equal(backToA.exitCode, 4, describeRun(backToA));
});
