/**
 * Safety of deferred tables (--delay-table-data, #11), against real servers: applications writing
 * into deferred tables between the phases and during the load keep their rows and get duplicates
 * refused; an interrupted load removes exactly the rows it committed; some partitions of a
 * partitioned table deferred; inheritance children untouched; event triggers and indexes in a
 * tablespace.
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import type { Cluster } from '../harness/cluster.ts';
import {
  cliEnv,
  exactCounts,
  foreignKeysOf,
  indexesOf,
  markerExists,
  migrateArgs,
  processesMentioning,
  readJson,
  rowsOf,
  runCli,
  since,
  sleep,
  startCli,
  stateFile,
  type CliResult,
  type Workspace,
} from './delayed-helpers.ts';
import { assertSameAfter, copyInto, fixtures, holdDeferredPhase, killLeftovers, killRun, scalar, waitDuring } from './safety-helpers.ts';
import type { RunSummary } from '../../src/events.ts';

const { setUp, tempDir, track } = fixtures();

/** The report's entry of a database. */
function reported(ws: Workspace, db: string, r: CliResult): RunSummary['databases'][number] {
  const report = readJson<RunSummary>(path.join(ws.dir, 'report.json'));
  const entry = report.databases.find((d) => d.name === db);
  assert.ok(entry, `${db} in the report\n${r.output}`);
  return entry;
}

// ---------------------------------------------------------------------------------------------
// 2. Applications writing into deferred tables
// ---------------------------------------------------------------------------------------------

const APP_IDS = [100000001, 100000002, 100000003, 100000004, 100000005];

/** `small` (int key, 1000 rows) and `big` (bigint key, `bigRows` narrow rows, a secondary index, a foreign key to small). */
async function seedApp(src: Cluster, bigRows: number): Promise<void> {
  await src.query('create database app');
  await src.query(
    `create table small (id int primary key, v text not null);
     insert into small select g, 's' || g from generate_series(1, 1000) g;
     create table big (id bigint not null, small_id int not null, v int not null);
     insert into big select g, 1 + g % 1000, g % 7919 from generate_series(1, ${String(bigRows)}) g;
     alter table big add primary key (id);
     alter table big add foreign key (small_id) references small (id);
     create index big_v on big (v);
     analyze;`,
    [],
    'app',
  );
}

const appArgs = (src: Cluster, dst: Cluster, ws: Workspace): string[] =>
  migrateArgs(src, dst, ws, [
    '--delay-table-data',
    'app.big',
    '--delay-table-data',
    'app.small',
    '--data-path',
    'stream',
    '--dump-jobs',
    '2',
    '--restore-jobs',
    '2',
    '--report',
    path.join(ws.dir, 'report.json'),
  ]);

/**
 * Holds app's deferred phase back once its regular phase verified, checks the deferred tables are still
 * empty on the target, and writes the application rows (ids far outside the source's) into both.
 */
async function writeApplicationRows(run: ReturnType<typeof startCli>, ws: Workspace, dst: Cluster): Promise<void> {
  const hold = await holdDeferredPhase(run, ws, dst, 'app', ['small', 'big'], track);
  const empty = await scalar(hold, 'select ((select count(*) from small) + (select count(*) from big))::text as n');
  assert.equal(empty, 0, `inconclusive: the deferred tables were no longer empty when the regular phase had verified\n${run.output()}`);
  // Writes succeed between the phases (the keys and the foreign key are there, enforced for new rows).
  await hold.query(`insert into small select g, 'app ' || g from unnest($1::int[]) g`, [APP_IDS]);
  await hold.query(`insert into big select g, $2, 42 from unnest($1::bigint[]) g`, [APP_IDS, APP_IDS[0]]);
  await hold.query('commit');
  await hold.end();
}

/** The application rows are all there, and every source row is on the target exactly once. */
async function assertAppFinal(src: Cluster, dst: Cluster, bigRows: number, r: CliResult): Promise<void> {
  const q = (t: string, max: number) =>
    `select count(*) filter (where id <= ${String(max)})::text as n, count(distinct id) filter (where id <= ${String(max)})::text as d,
            coalesce(sum(id) filter (where id <= ${String(max)}), 0)::text as s, count(*) filter (where id > ${String(max)})::text as app from ${t}`;
  assert.deepEqual(
    (await dst.query(q('small', 1000), [], 'app'))[0],
    { n: '1000', d: '1000', s: String((1000 * 1001) / 2), app: String(APP_IDS.length) },
    `small: every source row once, the application rows kept\n${r.output}`,
  );
  assert.deepEqual(
    (await dst.query(q('big', bigRows), [], 'app'))[0],
    { n: String(bigRows), d: String(bigRows), s: String((bigRows * (bigRows + 1)) / 2), app: String(APP_IDS.length) },
    `big: every source row once, the application rows kept\n${r.output}`,
  );
  assert.deepEqual(
    await dst.query('select id, v from small where id > 1000 order by id', [], 'app'),
    APP_IDS.map((id) => ({ id, v: `app ${String(id)}` })),
    `the application rows of small as written\n${r.output}`,
  );
  assert.deepEqual(
    await dst.query(`select id::int as id, small_id, v from big where id > ${String(bigRows)} order by id`, [], 'app'),
    APP_IDS.map((id) => ({ id, small_id: APP_IDS[0], v: 42 })),
    `the application rows of big as written\n${r.output}`,
  );
  // The source's rows, exactly (application rows aside).
  for (const [t, max] of [
    ['small', 1000],
    ['big', bigRows],
  ] as const) {
    const hash = `select md5(string_agg(x::text, ',' order by id)) as h from ${t} x where id <= ${String(max)}`;
    assert.deepEqual(await rowsOf(dst, 'app', hash), await rowsOf(src, 'app', hash), `rows of ${t}\n${r.output}`);
  }
  assert.deepEqual(await indexesOf(dst, 'app', ['big', 'small']), await indexesOf(src, 'app', ['big', 'small']), `indexes as on the source\n${r.output}`);
  const fks = await foreignKeysOf(dst, 'app', ['big', 'small']);
  assert.deepEqual(fks, await foreignKeysOf(src, 'app', ['big', 'small']), `foreign keys as on the source, validated\n${r.output}`);
  assert.equal(fks.length, 1, r.output);
}

test('an interrupted deferred load: writers get duplicates refused, the rerun removes exactly the rows the load committed, application rows stay', async () => {
  const t0 = Date.now();
  const { src, dst, ws } = await setUp('sd2k');
  const BIG = 1_500_000;
  await seedApp(src, BIG);
  console.log(`seeded in ${since(t0)}`);
  const args = appArgs(src, dst, ws);
  const run = startCli(args, cliEnv(src, dst), 180_000);
  await writeApplicationRows(run, ws, dst);
  console.log(`application rows written at ${since(t0)}`);

  // The load runs: small's unit committed, big's COPY still going.
  const seen = await waitDuring(
    run,
    "small's rows committed while big's COPY still runs",
    async () => {
      const small = await scalar(dst, 'select count(*)::text as n from small where id <= 1000', [], 'app');
      const bigCopy = await copyInto(dst, 'app', 'big');
      if (small === 1000 && bigCopy !== undefined) return { bigCopy };
      // No COPY into big: not started yet, or over already (then the kill would come too late).
      const bigDone =
        markerExists(ws, 'app.delayed_done') || (await scalar(dst, `select count(*)::text as n from big where id <= ${String(BIG)}`, [], 'app')) > 0;
      if (bigDone) assert.fail(`inconclusive: big's load had ended when small's rows showed (small ${String(small)}):\n${run.output()}`);
      return undefined;
    },
    { inconclusive: true, intervalMs: 10 },
  );
  console.log(`load running at ${since(t0)}: small committed, big ${String(seen.bigCopy)} rows in`);
  // During the load the PRIMARY KEY stays: a writer's duplicate of a source key is refused.
  await assert.rejects(
    dst.query(`insert into small values (1, 'duplicate of a source row')`, [], 'app'),
    (err: { code?: string }) => err.code === '23505',
    `a duplicate key error for id 1 in small during the load\n${run.output()}`,
  );
  const still = await copyInto(dst, 'app', 'big');
  const killed = await killRun(run, ws, [src, dst]);
  console.log(`killed at ${since(t0)} (big's COPY ${still === undefined ? 'had ended' : `at ${String(still)} rows`})`);
  assert.ok(!markerExists(ws, 'app.delayed_done'), `inconclusive: the load had finished\n${killed.output}`);

  // What the killed load committed (source keys), beside the application rows.
  const committedSmall = await scalar(dst, 'select count(*)::text as n from small where id <= 1000', [], 'app');
  const committedBig = await scalar(dst, `select count(*)::text as n from big where id <= ${String(BIG)}`, [], 'app');
  console.log(`committed by the killed load: small ${String(committedSmall)}, big ${String(committedBig)}`);
  if (committedSmall === 0) assert.fail(`inconclusive: nothing of the deferred load had committed when the run was killed\n${killed.output}`);
  assert.equal(await scalar(dst, 'select count(*)::text as n from small where id > 1000', [], 'app'), APP_IDS.length, killed.output);

  const second = await runCli(args, cliEnv(src, dst), 180_000);
  assert.equal(second.code, 0, second.output);
  assert.match(
    second.output,
    new RegExp(`app: removed the ${String(committedSmall + committedBig)} rows an interrupted load of the deferred tables had committed`),
    second.output,
  );
  if (committedBig === 0) assert.match(second.output, /removed the 1000 rows an interrupted load/, second.output);
  assert.match(second.output, /app: the deferred tables also hold 10 rows written by applications/, second.output);
  assert.match(second.stderr, /\[app\] deferred verifying/, second.output);
  assert.ok(markerExists(ws, 'app.delayed_verify'), second.output);
  assert.equal(reported(ws, 'app', second).status, 'verified', second.output);
  await assertAppFinal(src, dst, BIG, second);
  console.log(`2 (kill) done in ${since(t0)}`);
});

test('application rows written between the phases survive an uninterrupted deferred load, which reports them', async () => {
  const t0 = Date.now();
  const { src, dst, ws } = await setUp('sd2n');
  const BIG = 200_000;
  await seedApp(src, BIG);
  const run = startCli(appArgs(src, dst, ws), cliEnv(src, dst), 180_000);
  await writeApplicationRows(run, ws, dst);
  const r = await run.done;
  assert.equal(r.code, 0, r.output);
  assert.match(r.output, /app: the deferred tables also hold 10 rows written by applications since the regular phase/, r.output);
  assert.doesNotMatch(r.output, /removed the \d+ rows/, r.output);
  assert.ok(markerExists(ws, 'app.delayed_verify'), r.output);
  assert.equal(reported(ws, 'app', r).status, 'verified', r.output);
  await assertAppFinal(src, dst, BIG, r);
  console.log(`2 (normal) done in ${since(t0)}`);
});

// ---------------------------------------------------------------------------------------------
// 3. Some partitions of a partitioned table deferred
// ---------------------------------------------------------------------------------------------

/** `meas` by range of year; meas_2025 is itself partitioned (by half-year). A primary key and an index on the parent. */
const MEAS = `
  create table meas (id int not null, at date not null, v int not null, note text) partition by range (at);
  create table meas_2023 partition of meas for values from ('2023-01-01') to ('2024-01-01');
  create table meas_2024 partition of meas for values from ('2024-01-01') to ('2025-01-01');
  create table meas_2025 partition of meas for values from ('2025-01-01') to ('2026-01-01') partition by range (at);
  create table meas_2025_h1 partition of meas_2025 for values from ('2025-01-01') to ('2025-07-01');
  create table meas_2025_h2 partition of meas_2025 for values from ('2025-07-01') to ('2026-01-01');
  alter table meas add primary key (id, at);
  create index meas_v on meas (v);
  create index meas_2024_note on meas_2024 (note);
  insert into meas select g, date '2023-01-01' + (g % 1095), g % 100, 'n' || (g % 37) from generate_series(1, 30000) g;
  create table other (id int primary key);
  insert into other select generate_series(1, 10);
  analyze;`;
const MEAS_TABLES = ['meas', 'meas_2023', 'meas_2024', 'meas_2025', 'meas_2025_h1', 'meas_2025_h2'];

test('deferring some partitions of a partitioned table (one, two, a sub-partitioned one); an application writing into a regular partition meanwhile', async () => {
  const t0 = Date.now();
  const { src, dst, ws } = await setUp('sd3');
  // m1: one partition deferred (and an application writes into another between the phases); m2: two
  // partitions (two flags); m3: a partition that is itself partitioned (its sub-partitions follow).
  for (const db of ['m1', 'm2', 'm3']) {
    await src.query(`create database ${db}`);
    await src.query(MEAS, [], db);
  }
  const counts = await exactCounts(src, 'm1');
  assert.ok(
    MEAS_TABLES.every((t) => (counts[`public.${t}`] ?? 0) > 4000),
    JSON.stringify(counts),
  );
  const run = startCli(
    migrateArgs(src, dst, ws, [
      '--delay-table-data',
      'm1.meas_2024',
      '--delay-table-data',
      'm2.meas_2023',
      '--delay-table-data',
      'm2.meas_2024',
      '--delay-table-data',
      'm3.meas_2025',
      '--report',
      path.join(ws.dir, 'report.json'),
    ]),
    cliEnv(src, dst),
    180_000,
  );
  const hold = await holdDeferredPhase(run, ws, dst, 'm1', ['meas_2024'], track);
  assert.equal(await scalar(hold, 'select count(*)::text as n from meas_2024'), 0, `inconclusive: m1.meas_2024 already loaded\n${run.output()}`);
  // An application writes into a partition that is not deferred (through the parent).
  await hold.query(`insert into meas values (900001, '2023-06-01', 7, 'written by an application')`);
  await hold.query('commit');
  await hold.end();
  const r = await run.done;
  assert.equal(r.code, 0, r.output);
  assert.match(r.stdout, /3 of 3 databases verified/, r.output);

  const deferred: Record<string, string[]> = {
    m1: ['"public"."meas_2024"'],
    m2: ['"public"."meas_2023"', '"public"."meas_2024"'],
    m3: ['"public"."meas_2025"', '"public"."meas_2025_h1"', '"public"."meas_2025_h2"'],
  };
  for (const db of ['m1', 'm2', 'm3']) {
    assert.deepEqual(readJson<{ deferred?: string[] }>(stateFile(ws, `${db}.dumped`)).deferred, deferred[db], `${db}: deferred set\n${r.output}`);
    for (const m of ['verify', 'delayed_done', 'delayed_verify']) assert.ok(markerExists(ws, `${db}.${m}`), `${db}.${m}\n${r.output}`);
    assert.equal(reported(ws, db, r).status, 'verified', r.output);
    // The parent is compared in the deferred phase, as the sum of its partitions.
    const delayed = readJson<Record<string, number>>(stateFile(ws, `${db}.src_counts.delayed.json`));
    assert.equal(delayed['"public"."meas"'], 30000, `${db}: the parent in the deferred verify\n${JSON.stringify(delayed)}\n${r.output}`);
    assert.equal(readJson<Record<string, number>>(stateFile(ws, `${db}.dst_counts.delayed.json`))['"public"."meas"'], 30000, r.output);
    assert.deepEqual(await indexesOf(dst, db, MEAS_TABLES), await indexesOf(src, db, MEAS_TABLES), `${db}: indexes as on the source\n${r.output}`);
    if (db !== 'm1') await assertSameAfter(src, dst, db, r);
  }
  // m1: the source's rows plus the application's.
  const want = { ...counts, 'public.meas': counts['public.meas']! + 1, 'public.meas_2023': counts['public.meas_2023']! + 1 };
  assert.deepEqual(await exactCounts(dst, 'm1'), want, r.output);
  for (const t of ['meas_2024', 'meas_2025', 'other']) {
    const sql = `select md5(string_agg(x::text, ',' order by x::text)) as h from ${t} x`;
    assert.deepEqual(await rowsOf(dst, 'm1', sql), await rowsOf(src, 'm1', sql), `m1.${t}\n${r.output}`);
  }
  console.log(`3 done in ${since(t0)}`);
});

// ---------------------------------------------------------------------------------------------
// 4. Inheritance children of a deferred table
// ---------------------------------------------------------------------------------------------

test("an interrupted load of a deferred table with an inheritance child: the rerun leaves the child's rows alone", async () => {
  const t0 = Date.now();
  const { src, dst, ws } = await setUp('sd4');
  const ROWS = 1_500_000;
  await src.query('create database legacy');
  await src.query(
    `create table log (id bigint not null, msg text not null);
     create index log_id on log (id);
     create table log_old () inherits (log);
     insert into log select g, 'm' || g from generate_series(1, ${String(ROWS)}) g;
     insert into log_old select g, 'old ' || g from generate_series(${String(ROWS + 1)}, ${String(ROWS + 1000)}) g;
     analyze;`,
    [],
    'legacy',
  );
  console.log(`seeded in ${since(t0)}`);
  const args = migrateArgs(src, dst, ws, ['--data-path', 'files', '--delay-table-data', 'legacy.log']);
  const run = startCli(args, cliEnv(src, dst), 180_000);
  await waitDuring(
    run,
    'the deferred load of log (delayed_indexes_dropped and a COPY into log on the target)',
    async () => (markerExists(ws, 'legacy.delayed_indexes_dropped') ? copyInto(dst, 'legacy', 'log') : undefined),
    { inconclusive: true, intervalMs: 10 },
  );
  assert.equal(await scalar(dst, 'select count(*)::text as n from only log_old', [], 'legacy'), 1000, `the regular phase restored log_old\n${run.output()}`);
  run.child.kill('SIGKILL');
  const killed = await run.done;
  // The load's psql copies may outlive the run: let them end (whatever they commit, the next run must
  // remove from log alone: rows in log and no marker), then kill whatever is left.
  for (let i = 0; i < 600 && processesMentioning(ws.dumpRoot).length > 0; i++) await sleep(100);
  await killLeftovers(ws, [src, dst]);
  assert.ok(!markerExists(ws, 'legacy.delayed_done'), killed.output);
  const between = await scalar(dst, 'select count(*)::text as n from only log', [], 'legacy');
  console.log(`killed at ${since(t0)}; rows in log between the runs: ${String(between)}`);

  const second = await runCli(args, cliEnv(src, dst), 180_000);
  assert.equal(second.code, 0, second.output);
  if (between > 0) assert.match(second.output, new RegExp(`legacy: removed the ${String(between)} rows an interrupted load`), second.output);
  assert.equal(await scalar(dst, 'select count(*)::text as n from only log_old', [], 'legacy'), 1000, `log_old keeps its 1000 rows\n${second.output}`);
  const own = 'select count(*)::text as n, count(distinct id)::text as d, sum(id)::text as s from only log';
  assert.deepEqual(await dst.query(own, [], 'legacy'), await src.query(own, [], 'legacy'), `log holds exactly the source's own rows\n${second.output}`);
  assert.deepEqual((await src.query(own, [], 'legacy'))[0], { n: String(ROWS), d: String(ROWS), s: String((ROWS * (ROWS + 1)) / 2) });
  await assertSameAfter(src, dst, 'legacy', second);
  assert.deepEqual(await indexesOf(dst, 'legacy', ['log']), await indexesOf(src, 'legacy', ['log']), second.output);
  console.log(`4 done in ${since(t0)}`);
});

// ---------------------------------------------------------------------------------------------
// 7. Event triggers and an index in a tablespace
// ---------------------------------------------------------------------------------------------

test("event triggers do not fire for the tool's own DDL; a partial index in a tablespace is rebuilt there", async () => {
  const t0 = Date.now();
  const { src, dst, ws } = await setUp('sd7');
  const [srcLoc, dstLoc] = await Promise.all([tempDir('tsp-src', 'postgres'), tempDir('tsp-dst', 'postgres')]);
  await src.query(`create tablespace tsp location '${srcLoc}'`);
  // The target has a tablespace of that name already (its own location): the globals' CREATE TABLESPACE reports "already exists".
  await dst.query(`create tablespace tsp location '${dstLoc}'`);
  await src.query('create database ts');
  await src.query(
    `create table kinds (id int primary key);
     insert into kinds select generate_series(0, 9);
     create table t (id int primary key, a int not null, k int not null references kinds (id), note text);
     insert into t select g, g % 100, g % 10, 'n' || g from generate_series(1, 20000) g;
     create index t_a_part on t (a) tablespace tsp where a > 10;
     create index t_note on t (note);
     create function refuse_ddl() returns event_trigger language plpgsql as $$ begin raise exception 'refused by an event trigger: %', tg_tag; end $$;
     create event trigger no_drops on sql_drop execute function refuse_ddl();
     create event trigger no_index_ddl on ddl_command_start when tag in ('CREATE INDEX', 'DROP INDEX', 'ALTER TABLE') execute function refuse_ddl();`,
    [],
    'ts',
  );
  // tsi: the same partial index in the tablespace, without event triggers.
  await src.query('create database tsi');
  await src.query(
    `create table t (id int primary key, a int not null);
     insert into t select g, g % 100 from generate_series(1, 5000) g;
     create index t_a_part on t (a) tablespace tsp where a > 10;`,
    [],
    'tsi',
  );
  const r = await runCli(migrateArgs(src, dst, ws, ['--delay-table-data', 'ts.t', '--delay-table-data', 'tsi.t']), cliEnv(src, dst));
  assert.equal(r.code, 0, r.output);
  assert.doesNotMatch(r.output, /refused by an event trigger/, r.output);
  assert.match(r.stderr, /\[ts\] rebuilding indexes/, r.output);
  const saved = readJson<{ name: string; tablespace?: string | null }[]>(stateFile(ws, 'ts.delayed_indexes.json'));
  assert.deepEqual(
    saved.map((i) => `${i.name}:${i.tablespace ?? ''}`).sort(),
    ['t_a_part:tsp', 't_note:'],
    `both secondary indexes went through the drop and rebuild\n${r.output}`,
  );

  const ix = `select i.relname as name, pg_get_indexdef(i.oid) as def, coalesce(s.spcname, '') as tablespace, x.indisvalid as valid
                from pg_index x join pg_class i on i.oid = x.indexrelid left join pg_tablespace s on s.oid = i.reltablespace
               where x.indrelid = 't'::regclass order by 1`;
  const want = await src.query(ix, [], 'ts');
  assert.deepEqual(
    want.find((i) => i.name === 't_a_part'),
    { name: 't_a_part', def: 'CREATE INDEX t_a_part ON public.t USING btree (a) WHERE (a > 10)', tablespace: 'tsp', valid: true },
  );
  assert.deepEqual(await dst.query(ix, [], 'ts'), want, `the indexes of t, the partial one in tablespace tsp\n${r.output}`);
  assert.deepEqual(await dst.query(ix, [], 'tsi'), await src.query(ix, [], 'tsi'), `tsi: the partial index in tablespace tsp\n${r.output}`);
  assert.equal((await dst.query(ix, [], 'tsi')).find((i) => i.name === 't_a_part')?.tablespace, 'tsp', r.output);
  const evt = `select evtname, evtevent, evtenabled::text as enabled, evtfoid::regproc::text as fn from pg_event_trigger order by 1`;
  const evts = await src.query(evt, [], 'ts');
  assert.equal(evts.length, 2);
  assert.deepEqual(await dst.query(evt, [], 'ts'), evts, `the event triggers exist and are enabled\n${r.output}`);
  assert.deepEqual(await foreignKeysOf(dst, 'ts', ['t']), await foreignKeysOf(src, 'ts', ['t']), r.output);
  for (const db of ['ts', 'tsi']) {
    await assertSameAfter(src, dst, db, r);
    assert.ok(existsSync(stateFile(ws, `${db}.delayed_verify`)), r.output);
  }
  console.log(`7 done in ${since(t0)}`);
});
