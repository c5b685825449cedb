/**
 * Tables copied in parallel page ranges (--split-table-size), from a PostgreSQL 15 source onto an 18
 * target: binary COPY for built-in types, text for an enum, session settings of the source database
 * that would change the text of dates, intervals and floats, dropped and generated columns, odd names,
 * partitions, NULLs and control characters; then the post-data section (indexes, constraints) built
 * after the load, and every value compared.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { startCluster, type Cluster } from '../harness/cluster.ts';
import { assertSameData, baseArgs, describeRun, makeDirs, migrateSessions, removeDirs, runCli, stopAll, type CliResult, type Dirs } from './cli.ts';
import type { RunSummary } from '../../src/events.ts';
import { referencedKeys } from '../../src/pg/catalog.ts';

let src: Cluster | undefined;
let dst: Cluster | undefined;
let dirs: Dirs | undefined;
let run: CliResult;
let report: RunSummary;

const DB = 'ranges';
/** Stream path, every table of at least 16 kB in ranges, two at a time. */
const IN_RANGES = ['--data-path', 'stream', '--split-table-size', '16kB', '--dump-jobs', '2', '--restore-jobs', '2'];
const ODD = '"s p"."Odd ""t"", x"';

before(async () => {
  [src, dst, dirs] = await Promise.all([startCluster({ name: 'split-src' }), startCluster({ version: '18', name: 'split-dst18' }), makeDirs('split')]);
  assert.equal(src.major, 15);
  assert.equal(dst.major, 18);
  await src.query(`CREATE DATABASE ${DB}`);
  // Session defaults that change how dates, intervals and floats print: the copy must not depend on them.
  await src.query(
    `ALTER DATABASE ${DB} SET datestyle = 'SQL, DMY'; ALTER DATABASE ${DB} SET intervalstyle = 'sql_standard'; ALTER DATABASE ${DB} SET extra_float_digits = -10`,
  );
  await src.query(
    `CREATE SCHEMA "s p";
     CREATE TABLE ${ODD} (
       id bigint PRIMARY KEY, gone int, ts timestamptz, d date, iv interval, f float8, r real, n numeric,
       b bytea, arr int[], j jsonb, t text, u uuid, ip inet,
       g bigint GENERATED ALWAYS AS (id * 2) STORED, "it's ""q"",\n(x)" int);
     ALTER TABLE ${ODD} DROP COLUMN gone;
     INSERT INTO ${ODD} (id, ts, d, iv, f, r, n, b, arr, j, t, u, ip, "it's ""q"",\n(x)")
       SELECT g, timestamptz '2001-02-03 04:05:06.789+02' + g * interval '1 hour 7.25 seconds', date '1999-12-31' + g,
              make_interval(days => g, secs => g / 7.0),
              CASE WHEN g % 100 = 0 THEN 'NaN'::float8 WHEN g % 101 = 0 THEN '-Infinity' ELSE g / 3.0 END,
              g / 7.0, CASE WHEN g % 50 = 0 THEN 'NaN'::numeric ELSE g / 9.0 END,
              decode(md5(g::text), 'hex'), ARRAY[g, NULL, -g]::int[],
              jsonb_build_object('k', g, 's', E'x"\\\\' || g, 'nested', jsonb_build_array(g, 'ñ €')),
              CASE WHEN g % 10 = 0 THEN NULL ELSE E'tab\\there\\nnew line \\\\ back ñ € ' || g END,
              md5(g::text)::uuid, ('10.0.' || (g % 256) || '.' || (g % 200))::inet, g % 7
         FROM generate_series(1, 20000) g;
     CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
     CREATE TABLE moods (id int PRIMARY KEY, m mood, d date, iv interval, f float8, parent bigint REFERENCES ${ODD} (id));
     INSERT INTO moods SELECT g, (ARRAY['sad', 'ok', 'happy'])[1 + g % 3]::mood, date '2020-02-29' + g, g * interval '1 day 3 minutes', g * 1.1, g FROM generate_series(1, 5000) g;
     CREATE INDEX moods_m_idx ON moods (m);
     CREATE TABLE measurements (id int NOT NULL, at date NOT NULL, v float8) PARTITION BY RANGE (at);
     CREATE TABLE measurements_2023 PARTITION OF measurements FOR VALUES FROM ('2023-01-01') TO ('2024-01-01');
     CREATE TABLE measurements_2024 PARTITION OF measurements FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
     INSERT INTO measurements SELECT g, date '2023-01-01' + g % 700, g * 0.25 FROM generate_series(1, 20000) g;
     CREATE INDEX measurements_at_idx ON measurements (at);
     ALTER TABLE measurements ADD PRIMARY KEY (id, at);
     -- Foreign keys whose referenced key the first post-data pass does not build: a unique index
     -- without a constraint, and the key of a partitioned table (complete once its partitions' indexes are attached).
     CREATE TABLE codes (code text NOT NULL);
     CREATE UNIQUE INDEX codes_code_uidx ON codes (code);
     INSERT INTO codes SELECT 'c' || g FROM generate_series(1, 100) g;
     CREATE TABLE notes (id int PRIMARY KEY, code text REFERENCES codes (code), m_id int, m_at date,
                         FOREIGN KEY (m_id, m_at) REFERENCES measurements (id, at));
     INSERT INTO notes SELECT g, 'c' || (1 + g % 100), g, date '2023-01-01' + g % 700 FROM generate_series(1, 100) g;
     CREATE TABLE tiny (id int PRIMARY KEY);
     INSERT INTO tiny VALUES (1), (2), (3);
     CREATE SEQUENCE counter;
     SELECT setval('counter', 4242);
     ANALYZE;`,
    undefined,
    DB,
  );
  const reportFile = path.join(dirs.stateDir, 'report.json');
  run = await runCli([...baseArgs(src, dst, dirs), ...IN_RANGES, '--report', reportFile]);
  report = JSON.parse(await fs.readFile(reportFile, 'utf8')) as RunSummary;
});

after(async () => {
  await stopAll([src, dst]);
  await removeDirs(dirs);
});

describe('tables copied in page ranges (15 → 18)', () => {
  test('the run verifies', () => {
    assert.equal(run.exitCode, 0, describeRun(run));
    assert.match(run.stdout, /1 of 1 databases verified/, describeRun(run));
    assert.match(run.stderr, /\[ranges\] streaming .*in ranges/, describeRun(run));
  });

  test('the report lists the tables copied in ranges, binary only where every type is built in', () => {
    const db = report.databases.find((d) => d.name === DB)!;
    const split = Object.fromEntries((db.splitTables ?? []).map((t) => [t.table, t]));
    assert.deepEqual(
      Object.keys(split).sort(),
      ['"public"."measurements_2023"', '"public"."measurements_2024"', '"public"."moods"', ODD].sort(),
      JSON.stringify(db),
    );
    assert.equal(split[ODD]!.binary, true);
    assert.equal(split['"public"."moods"']!.binary, false, 'an enum column: text format');
    assert.equal(split[ODD]!.rows, 20000);
    assert.equal(split['"public"."moods"']!.rows, 5000);
    assert.equal(split['"public"."measurements_2023"']!.rows + split['"public"."measurements_2024"']!.rows, 20000);
    for (const t of Object.values(split)) assert.ok(t.ranges >= 2, `${t.table} in ${t.ranges} ranges`);
  });

  test('every value is the same on both servers (generated column recomputed, dropped column absent)', async () => {
    const counts = await assertSameData(src!, dst!, DB);
    assert.equal(counts.get(ODD), 20000, JSON.stringify([...counts]));
    assert.equal(counts.get('public.tiny'), 3);
    const [a] = await dst!.query<{ n: string }>(`select count(*)::text as n from ${ODD} where g = id * 2`, undefined, DB);
    assert.equal(a!.n, '20000');
    const cols = await dst!.query<{ attname: string }>(
      `select attname from pg_attribute where attrelid = '${ODD.replace(/'/g, "''")}'::regclass and attnum > 0 and not attisdropped order by attnum`,
      undefined,
      DB,
    );
    assert.ok(!cols.some((c) => c.attname === 'gone'));
  });

  test('indexes and constraints were built after the load, the same as on the source, and validated', async () => {
    const defs = async (c: Cluster): Promise<string[]> =>
      (
        await c.query<{ d: string }>(
          `select conrelid::regclass::text || ' ' || conname || ' ' || pg_get_constraintdef(oid) || ' ' || convalidated as d from pg_constraint
            where connamespace <> 'pg_catalog'::regnamespace and contype <> 'n' -- 18 lists NOT NULL here
              and not (contype = 'f' and conparentid <> 0) -- the clones of a foreign key to a partitioned table, named by each server version its own way
           union all select indexdef from pg_indexes where schemaname not in ('pg_catalog', 'information_schema') order by 1`,
          undefined,
          DB,
        )
      ).map((r) => r.d);
    const [a, b] = await Promise.all([defs(src!), defs(dst!)]);
    assert.deepEqual(b, a);
    assert.ok(
      b.some((d) => /moods_parent_fkey FOREIGN KEY .* true$/.test(d)),
      b.join('\n'),
    );
    const [seq] = await dst!.query<{ v: string }>(`select last_value::text as v from counter`, undefined, DB);
    assert.equal(seq!.v, '4242');
  });

  test('only the foreign keys that reference a PRIMARY KEY/UNIQUE constraint of an ordinary table are restored right after the keys', async () => {
    const oid = async (name: string): Promise<string> =>
      (await src!.query<{ o: string }>(`select oid::text as o from pg_constraint where conname = $1`, [name], DB))[0]!.o;
    const early = await src!.withClient((c) => referencedKeys(c, src!.major), DB);
    assert.deepEqual([...early], [[await oid('moods_parent_fkey'), await oid('Odd "t", x_pkey')]]);
    assert.ok(!early.has(await oid('notes_code_fkey')), 'a unique index without a constraint: with the indexes');
    assert.ok(!early.has(await oid('notes_m_id_m_at_fkey')), 'the key of a partitioned table: with the indexes');
  });

  test('no session of the run is left on either server', async () => {
    assert.deepEqual(await migrateSessions(src!), []);
    assert.deepEqual(await migrateSessions(dst!), []);
  });
});

describe('deferred tables copied in page ranges', () => {
  test('--delay-table-data: the deferred tables load in ranges after the regular phase, every value equal, foreign keys validated', async () => {
    const reportFile = path.join(dirs!.stateDir, 'report-delayed.json');
    const r = await runCli([
      ...baseArgs(src!, dst!, dirs!),
      '--redo-db',
      DB,
      '--delay-table-data',
      `${DB}."s p".*`,
      '--delay-table-data',
      `${DB}.public.moods`,
      ...IN_RANGES,
      '--report',
      reportFile,
    ]);
    assert.equal(r.exitCode, 0, describeRun(r));
    assert.match(r.stderr, /\[ranges\] deferred loading .*in ranges/, describeRun(r));
    const db = (JSON.parse(await fs.readFile(reportFile, 'utf8')) as RunSummary).databases.find((d) => d.name === DB)!;
    assert.equal(db.deferredTables, 2, JSON.stringify(db));
    const split = Object.fromEntries((db.splitTables ?? []).map((t) => [t.table, t]));
    assert.deepEqual([split[ODD]?.rows, split[ODD]?.binary], [20000, true], JSON.stringify(db));
    assert.deepEqual([split['"public"."moods"']?.rows, split['"public"."moods"']?.binary], [5000, false], JSON.stringify(db));
    await assertSameData(src!, dst!, DB);
    const [fk] = await dst!.query<{ v: boolean }>(`select convalidated as v from pg_constraint where conname = 'moods_parent_fkey'`, undefined, DB);
    assert.equal(fk!.v, true);
    // The primary keys were dropped for the load and put back on their rebuilt indexes.
    const keys = `select conrelid::regclass::text as t, conname, pg_get_constraintdef(oid) as def, conindid::regclass::text as ix
                    from pg_constraint where contype in ('p', 'u') and connamespace <> 'pg_catalog'::regnamespace order by 1, 2`;
    const srcKeys = await src!.query(keys, undefined, DB);
    assert.ok(srcKeys.length >= 3, JSON.stringify(srcKeys));
    assert.deepEqual(await dst!.query(keys, undefined, DB), srcKeys);
    assert.match(r.stderr, /\[ranges\] rebuilding indexes/, describeRun(r));
    assert.deepEqual(await migrateSessions(dst!), []);
  });
});
