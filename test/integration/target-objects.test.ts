/**
 * What a run does to the target's objects and which databases it takes (#12), against real servers:
 * roles that existed on the target are left as they are (unless --overwrite-existing-roles) and no
 * password reaches the output; a failed globals statement is shown with its secrets masked; a target
 * that does not allow ALTER SYSTEM is migrated untuned; a PostgreSQL 10 source with deferred tables;
 * reg* columns copied in ranges as text; the source's postgres database and user template databases
 * are migrated and every database left out is named; a --state-dir that is a file is a usage error.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import * as fs from 'node:fs/promises';
import path from 'node:path';
import { test } from 'node:test';
import pg from 'pg';
import type { Cluster } from '../harness/cluster.ts';
import { applyGlobals } from '../../src/pipeline/globals-script.ts';
import type { RunSummary } from '../../src/events.ts';
import { autoConf, migrateSessions } from './cli.ts';
import { cliEnv, foreignKeysOf, indexesOf, migrateArgs, runCli, since, type CliResult } from './delayed-helpers.ts';
import { assertSameAfter, scalar } from './safety-helpers.ts';
import { assertNoSecrets, rowsAfter, scalarAfter, targetFixtures } from './target-helpers.ts';

const fx = targetFixtures();

/** Whether `user` can log in to `c` with `password`: true, or the server's refusal. */
async function login(c: Cluster, user: string, password: string): Promise<true | string> {
  const client = new pg.Client({ ...c.connectionConfig('postgres'), user, password });
  client.on('error', () => undefined);
  try {
    await client.connect();
    await client.query('select 1');
    return true;
  } catch (err) {
    return (err as Error).message;
  } finally {
    await client.end().catch(() => undefined);
  }
}

async function role(c: Cluster, name: string): Promise<{ replication: boolean; login: boolean } | undefined> {
  const rows = await c.query<{ replication: boolean; login: boolean }>(
    'select rolreplication as replication, rolcanlogin as login from pg_roles where rolname = $1',
    [name],
  );
  return rows[0];
}

const readReport = (file: string): RunSummary => JSON.parse(readFileSync(file, 'utf8')) as RunSummary;

test('roles that exist on the target are left as they are (password, REPLICATION), new roles and memberships are added, no secret in the output; --overwrite-existing-roles gives them the source definition', async () => {
  const t0 = Date.now();
  const [src, dst] = await Promise.all([fx.cluster({ name: 'roles-src' }), fx.cluster({ name: 'roles-dst' })]);
  const [ws, ws2] = await Promise.all([fx.workspace('roles'), fx.workspace('roles-overwrite')]);
  await src.query(
    `create role replicator login password 'source-secret';
     create role app_user login password 'app-user-secret';
     create role some_group nologin;
     grant some_group to replicator;`,
  );
  await src.query('create database appdb owner app_user');
  await src.query('create table items (id int primary key, v text); insert into items select g, md5(g::text) from generate_series(1, 200) g', [], 'appdb');
  await dst.query(`create role replicator replication login password 'target-secret'`);
  assert.equal(await login(dst, 'replicator', 'target-secret'), true);
  const secrets = ['target-secret', 'source-secret', 'app-user-secret', src.password, dst.password, 'SCRAM-SHA-256$', 'md5'];
  const noSecrets = (r: CliResult, report: string): void => {
    assertNoSecrets(r.stdout, secrets, 'stdout', r.output);
    assertNoSecrets(r.stderr, secrets, 'stderr', r.output);
    assertNoSecrets(readFileSync(report, 'utf8'), secrets, `the report ${report}`, r.output);
  };

  const report = path.join(ws.dir, 'report.json');
  const first = await runCli(migrateArgs(src, dst, ws, ['--report', report]), cliEnv(src, dst));
  assert.equal(first.code, 0, first.output);
  assert.deepEqual(await role(dst, 'replicator'), { replication: true, login: true }, `the target's replicator keeps REPLICATION\n${first.output}`);
  assert.equal(await login(dst, 'replicator', 'target-secret'), true, `the target's password of replicator still works\n${first.output}`);
  assert.match(String(await login(dst, 'replicator', 'source-secret')), /password authentication failed/, `the source's password does not\n${first.output}`);
  assert.equal(await login(dst, 'app_user', 'app-user-secret'), true, `app_user was created with the source's password\n${first.output}`);
  assert.equal(
    await scalarAfter(
      dst,
      `select count(*)::text as n from pg_auth_members m join pg_roles g on g.oid = m.roleid join pg_roles u on u.oid = m.member
        where g.rolname = 'some_group' and u.rolname = 'replicator'`,
      first,
    ),
    1,
    `replicator was made a member of some_group\n${first.output}`,
  );
  assert.match(
    first.stdout,
    /role replicator existed on the target and was left as it is; differs from the source: NOREPLICATION on the source, REPLICATION on the target/,
    first.output,
  );
  assert.doesNotMatch(first.stdout, /role (app_user|some_group) existed/, first.output);
  assert.deepEqual(
    readReport(report).globals.rolesLeftAlone?.find((r) => r.name === 'replicator'),
    { name: 'replicator', differences: ['NOREPLICATION on the source, REPLICATION on the target'] },
    first.output,
  );
  assert.equal(
    await scalarAfter(dst, `select count(*)::text as n from pg_database d where datname = 'appdb' and pg_get_userbyid(datdba) = 'app_user'`, first),
    1,
    first.output,
  );
  await assertSameAfter(src, dst, 'appdb', first);
  noSecrets(first, report);
  console.log(`# first run at ${since(t0)}`);

  // A fresh state (the database dropped on the target) with --overwrite-existing-roles.
  await dst.query('drop database appdb with (force)');
  const report2 = path.join(ws2.dir, 'report.json');
  const second = await runCli(migrateArgs(src, dst, ws2, ['--overwrite-existing-roles', '--report', report2]), cliEnv(src, dst));
  assert.equal(second.code, 0, second.output);
  assert.deepEqual(await role(dst, 'replicator'), { replication: false, login: true }, `replicator has the source's definition\n${second.output}`);
  assert.equal(await login(dst, 'replicator', 'source-secret'), true, `and the source's password\n${second.output}`);
  assert.match(String(await login(dst, 'replicator', 'target-secret')), /password authentication failed/, second.output);
  assert.doesNotMatch(second.stdout, /role replicator existed on the target/, second.output);
  await assertSameAfter(src, dst, 'appdb', second);
  noSecrets(second, report2);
  console.log(`# done in ${since(t0)}`);
});

test('a failed globals statement is reported with the server error, its passwords and hashes masked', async () => {
  const c = await fx.cluster({ name: 'redact' });
  const longHash = `SCRAM-SHA-256$4096:${'A'.repeat(24)}$${'B'.repeat(44)}:${'C'.repeat(44)}`;
  const statements = [
    `ALTER ROLE no_such_role WITH LOGIN PASSWORD 'hunter2-secret';`,
    `ALTER ROLE no_such_role PASSWORD 'SCRAM-SHA-256$4096:abc$def:ghi';`,
    `ALTER ROLE no_such_role PASSWORD 'md50123456789abcdef0123456789abcdef';`,
    // Longer than the 200 characters shown, the hash across the cut.
    `ALTER ROLE no_such_role WITH NOSUPERUSER INHERIT NOCREATEROLE NOCREATEDB LOGIN NOREPLICATION NOBYPASSRLS CONNECTION LIMIT 5 VALID UNTIL 'infinity' PASSWORD '${longHash}';`,
    `ALTER ROLE no_such_role SET my.conninfo = 'host=db password=hunter3-secret';`,
    'CREATE ROLE fine_role;',
    'CREATE ROLE fine_role;',
  ];
  const out = await c.withClient((client) => applyGlobals(client, statements));
  const shown = JSON.stringify(out, null, 2);
  assert.equal(out.applied, 1, shown);
  assert.equal(out.alreadyExisted, 1, shown);
  assert.equal(out.errors.length, 5, shown);
  for (const e of out.errors) {
    assert.match(e, /role "no_such_role" does not exist/, shown);
    assert.match(e, /ALTER ROLE no_such_role/, `the statement is named\n${shown}`);
    assertNoSecrets(
      e,
      ['hunter2-secret', 'hunter3-secret', 'abc$def:ghi', '0123456789abcdef0123456789abcdef', 'AAAAAAAA', 'BBBBBBBB', 'CCCCCCCC'],
      'a globals error',
      shown,
    );
  }
  assert.match(out.errors[0]!, /PASSWORD '\*\*\*'/, shown);
  assert.match(out.errors[1]!, /PASSWORD '\*\*\*'/, shown);
  assert.match(out.errors[4]!, /password=\*\*\*/, shown);
});

test('a PostgreSQL 18 target with allow_alter_system = off: a warning that it will not be tuned, exit 0, auto.conf unchanged; --disable-dst-optimizations exits 0 too', async () => {
  const t0 = Date.now();
  const [src, dst, ws] = await Promise.all([
    fx.cluster({ name: 'noalter-src' }),
    fx.cluster({ version: '18', name: 'noalter-dst18', settings: { allow_alter_system: 'off' } }),
    fx.workspace('noalter'),
  ]);
  assert.equal(dst.major, 18);
  await src.query('create database shop');
  await src.query('create table orders (id int primary key, v text); insert into orders select g, md5(g::text) from generate_series(1, 3000) g', [], 'shop');
  const confBefore = await autoConf(dst);
  const args = migrateArgs(src, dst, ws);
  const r = await runCli(args, cliEnv(src, dst));
  assert.equal(r.code, 0, r.output);
  assert.match(r.stderr, /warning: the target will not be tuned for the load: ALTER SYSTEM is disabled on the target \(allow_alter_system = off\)/, r.output);
  assert.match(r.stderr, /tuning: skipped/, r.output);
  assert.deepEqual(await autoConf(dst), confBefore, `the target's postgresql.auto.conf is unchanged\n${r.output}`);
  await assertSameAfter(src, dst, 'shop', r);

  const again = await runCli([...args, '--disable-dst-optimizations', '--redo-db', 'shop'], cliEnv(src, dst));
  assert.equal(again.code, 0, again.output);
  assert.match(again.output, /shop: --redo-db: migrating it afresh/, again.output);
  assert.doesNotMatch(again.stderr, /will not be tuned/, again.output);
  assert.deepEqual(await autoConf(dst), confBefore, again.output);
  await assertSameAfter(src, dst, 'shop', again);
  console.log(`# done in ${since(t0)}`);
});

test('a PostgreSQL 10 source with deferred tables (--delay-table-data), onto 15 with the 15 client programs, stream and files paths: exit 0, every table equal', async () => {
  const t0 = Date.now();
  const src = await fx.cluster({ version: '10', name: 'pg10-src' });
  assert.equal(src.major, 10);
  await src.query('create database ana');
  await src.query(
    `create table kinds (id int primary key, name text not null);
     insert into kinds select g, 'kind ' || g from generate_series(0, 6) g;
     create table events (id int primary key, kind int not null references kinds (id), at date not null, v text);
     create index events_kind on events (kind);
     create unique index events_v on events (v);
     insert into events select g, g % 7, date '2024-01-01' + g % 300, 'e' || g from generate_series(1, 5000) g;
     create table notes (id int primary key, event int references events (id));
     insert into notes select g, g from generate_series(1, 100) g;
     create table measure (id int not null, at date not null, v float8) partition by range (at);
     create table measure_2023 partition of measure for values from ('2023-01-01') to ('2024-01-01');
     create table measure_2024 partition of measure for values from ('2024-01-01') to ('2025-01-01');
     alter table measure_2023 add primary key (id);
     create index measure_2024_at on measure_2024 (at);
     insert into measure select g, date '2023-01-01' + g % 700, g * 0.5 from generate_series(1, 3000) g;
     create materialized view per_kind as select kind, count(*) as n from events group by kind;
     analyze;`,
    [],
    'ana',
  );
  await src.query('create database plain');
  await src.query('create table t (id int primary key); insert into t select generate_series(1, 300)', [], 'plain');
  const tables = ['events', 'measure_2023', 'measure_2024', 'kinds', 'notes'];
  const indexNames = async (c: Cluster): Promise<string[]> => (await indexesOf(c, 'ana', tables)).map((i) => `${i.name} ${String(i.valid)}`);
  for (const dataPath of ['stream', 'files']) {
    const [dst, ws] = await Promise.all([fx.cluster({ name: `pg10-dst-${dataPath}` }), fx.workspace(`pg10-${dataPath}`)]);
    const r = await runCli(
      migrateArgs(src, dst, ws, ['--data-path', dataPath, '--delay-table-data', 'ana.events', '--delay-table-data', 'ana.measure']),
      cliEnv(src, dst),
    );
    assert.equal(r.code, 0, r.output);
    assert.match(r.stderr, /client programs 15\./, r.output);
    assert.match(r.stderr, /\[ana\] (dropping indexes|deferred loading)/, `the deferred phase ran\n${r.output}`);
    assert.match(r.stdout, /2 of 2 databases verified/, r.output);
    await assertSameAfter(src, dst, 'ana', r);
    await assertSameAfter(src, dst, 'plain', r);
    assert.deepEqual(await indexNames(dst), await indexNames(src), `the deferred tables' indexes are back, valid\n${r.output}`);
    const fks = (await foreignKeysOf(dst, 'ana', ['events'])).map((f) => `${f.table} ${f.name} ${String(f.validated)}`);
    assert.deepEqual(fks, ['events events_kind_fkey true', 'notes notes_event_fkey true'], `the foreign keys are back, validated\n${r.output}`);
    assert.equal(await scalarAfter(dst, 'select sum(n)::text as n from per_kind', r, 'ana'), 5000, r.output);
    console.log(`# ${dataPath} done at ${since(t0)}`);
  }
});

test('reg* columns copied in ranges (15 → 18) keep their meaning: text COPY, the same names on the target; binary where every type allows', async () => {
  const t0 = Date.now();
  const [src, dst, ws] = await Promise.all([fx.cluster({ name: 'reg-src' }), fx.cluster({ version: '18', name: 'reg-dst18' }), fx.workspace('reg')]);
  await src.query('create database regs');
  // b before a, and a table made and dropped between them: the oids differ from those the restore gives
  // on the target (where a comes first), so a value copied as an oid would name another table or none.
  await src.query(
    `create table b (id int);
     create table gone (id int); drop table gone;
     create table a (id int);
     create schema other;
     create table other.c (id int);
     create table refs (id int primary key, rc regclass not null, rt regtype not null, rcs regclass[] not null, pad text);
     insert into refs
       select g, (array['public.a', 'public.b', 'other.c'])[1 + g % 3]::regclass,
              (array['public.a', 'integer', 'other.c', 'public.b[]'])[1 + g % 4]::regtype,
              array['public.b'::regclass, 'public.a'::regclass, 'other.c'::regclass], repeat('x', 120)
         from generate_series(1, 4000) g;
     create table plain (id int primary key, v text);
     insert into plain select g, repeat(md5(g::text), 4) from generate_series(1, 4000) g;
     analyze;`,
    [],
    'regs',
  );
  const size = await scalar(src, `select pg_relation_size('refs')::text as n`, [], 'regs');
  assert.ok(size > 300 * 1024, `refs is a few hundred kB (${String(size)} bytes)`);
  const report = path.join(ws.dir, 'report.json');
  const r = await runCli(
    migrateArgs(src, dst, ws, ['--data-path', 'stream', '--split-table-size', '16kB', '--dump-jobs', '2', '--restore-jobs', '2', '--report', report]),
    cliEnv(src, dst),
  );
  assert.equal(r.code, 0, r.output);
  const db = readReport(report).databases.find((d) => d.name === 'regs');
  const split = new Map((db?.splitTables ?? []).map((t) => [t.table, t]));
  assert.equal(split.get('"public"."refs"')?.binary, false, `refs (reg* columns) copied as text\n${JSON.stringify(db)}\n${r.output}`);
  assert.ok((split.get('"public"."refs"')?.ranges ?? 0) >= 2, `refs in ranges\n${JSON.stringify(db)}`);
  assert.equal(split.get('"public"."refs"')?.rows, 4000, JSON.stringify(db));
  assert.equal(split.get('"public"."plain"')?.binary, true, `a table of built-in types only is still copied in binary\n${JSON.stringify(db)}`);
  const values = 'select id, rc::text as rc, rt::text as rt, rcs::text as rcs from refs order by id';
  const [a, b] = await Promise.all([src.query(values, [], 'regs'), rowsAfter(dst, values, r, 'regs')]);
  assert.equal(b.length, 4000, r.output);
  assert.deepEqual(b, a, `the reg* values name the same objects on the target\n${r.output}`);
  assert.deepEqual(
    (await rowsAfter<{ rc: string }>(dst, 'select distinct rc::text as rc from refs order by 1', r, 'regs')).map((x) => x.rc),
    ['a', 'b', 'other.c'],
    r.output,
  );
  await assertSameAfter(src, dst, 'regs', r);
  console.log(`# done in ${since(t0)}`);
});

test("the source's postgres database is migrated into the target's own (77 rows and a function); --exclude-db postgres and an empty postgres are named as left out", async () => {
  const t0 = Date.now();
  const [src, dst, ws] = await Promise.all([fx.cluster({ name: 'pgdb-src' }), fx.cluster({ name: 'pgdb-dst' }), fx.workspace('pgdb')]);
  await src.query(
    `create table in_postgres (id int primary key, v text);
     insert into in_postgres select g, 'row ' || g from generate_series(1, 77) g;
     create function in_postgres_count() returns bigint language sql as 'select count(*) from public.in_postgres';`,
  );
  await src.query('create database app');
  await src.query('create table t (id int primary key); insert into t select generate_series(1, 50)', [], 'app');
  // The target's own postgres database holds something of its own, which must stay.
  await dst.query('create table target_own (id int); insert into target_own select generate_series(1, 5)');
  const report = path.join(ws.dir, 'report.json');
  const args = migrateArgs(src, dst, ws, ['--report', report]);

  const r = await runCli(args, cliEnv(src, dst));
  assert.equal(r.code, 0, r.output);
  assert.equal(await scalarAfter(dst, 'select count(*)::text as n from in_postgres', r), 77, `the table is in the target's postgres\n${r.output}`);
  const rowsOf = "select md5(string_agg(t::text, E'\\n' order by id)) as n from in_postgres t";
  assert.deepEqual(await rowsAfter(dst, rowsOf, r), await src.query(rowsOf), `its rows are the source's\n${r.output}`);
  assert.equal(await scalarAfter(dst, 'select in_postgres_count()::text as n', r), 77, `the function too\n${r.output}`);
  assert.equal(await scalarAfter(dst, 'select count(*)::text as n from target_own', r), 5, `the target's own table is still there\n${r.output}`);
  assert.doesNotMatch(`${r.stdout}\n${r.stderr}`, /not migrated|left out postgres/i, r.output);
  assert.match(r.stderr, /\[postgres\] verified/, r.output);
  assert.deepEqual(
    readReport(report)
      .databases.map((d) => `${d.name} ${d.status}`)
      .sort(),
    ['app verified', 'postgres verified'],
    r.output,
  );
  assert.match(r.stdout, /2 of 2 databases verified/, r.output);
  await assertSameAfter(src, dst, 'app', r);

  const excluded = await runCli([...args, '--exclude-db', 'postgres'], cliEnv(src, dst));
  assert.equal(excluded.code, 0, excluded.output);
  assert.match(excluded.stdout, /left out postgres: excluded by --exclude-db/, excluded.output);
  assert.doesNotMatch(excluded.stderr, /\[postgres\]/, excluded.output);

  await src.query('drop function in_postgres_count(); drop table in_postgres');
  const empty = await runCli(args, cliEnv(src, dst));
  assert.equal(empty.code, 0, empty.output);
  assert.match(empty.stdout, /left out postgres: holds no user objects/, empty.output);
  assert.doesNotMatch(`${empty.stdout}\n${empty.stderr}`, /not migrated/i, empty.output);
  console.log(`# done in ${since(t0)}`);
});

test('--state-dir naming a regular file (or a path under one): exit 2 naming --state-dir, nothing written', async () => {
  const [src, dst, ws] = await Promise.all([fx.cluster({ name: 'sdfile-src' }), fx.cluster({ name: 'sdfile-dst' }), fx.workspace('sdfile')]);
  await src.query('create database shop');
  const file = path.join(ws.dir, 'not-a-directory');
  await fs.writeFile(file, 'operator data\n');
  const before = readdirSync(ws.dir).sort();
  const confBefore = await autoConf(dst);
  for (const stateDir of [file, path.join(file, 'state')]) {
    const args = [
      ...migrateArgs(src, dst, ws).map((a) => (a === ws.stateDir ? stateDir : a === ws.dumpRoot ? path.join(ws.dir, 'dumps-new') : a)),
      '--report',
      path.join(ws.dir, 'reports', 'r.json'),
    ];
    const r = await runCli(args, cliEnv(src, dst));
    assert.equal(r.code, 2, r.output);
    assert.match(
      r.stderr,
      new RegExp(`--state-dir ${stateDir.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}: ${file.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')} is not a directory`),
      r.output,
    );
    assert.equal(r.stdout, '', r.output);
    assert.deepEqual(readdirSync(ws.dir).sort(), before, `nothing written beside it\n${r.output}`);
    assert.equal(readFileSync(file, 'utf8'), 'operator data\n', `the file is untouched\n${r.output}`);
    assert.deepEqual(await autoConf(dst), confBefore, r.output);
    assert.deepEqual(await migrateSessions(dst), [], r.output);
    assert.deepEqual(
      (await dst.query<{ datname: string }>(`select datname from pg_database where datname = 'shop'`)).length,
      0,
      `nothing created on the target\n${r.output}`,
    );
  }
});

test('a user template database (IS_TEMPLATE true) is migrated: datistemplate true on the target, its table there; --redo-db redoes it', async () => {
  const t0 = Date.now();
  const [src, dst, ws] = await Promise.all([fx.cluster({ name: 'tpl-src' }), fx.cluster({ name: 'tpl-dst' }), fx.workspace('tpl')]);
  await src.query('create database tpl is_template true');
  await src.query(`create table seed_data (id int primary key, v text); insert into seed_data select g, 'v' || g from generate_series(1, 120) g`, [], 'tpl');
  const isTemplate = async (): Promise<boolean | undefined> =>
    (await dst.query<{ t: boolean }>(`select datistemplate as t from pg_database where datname = 'tpl'`))[0]?.t;
  const args = migrateArgs(src, dst, ws);
  const r = await runCli(args, cliEnv(src, dst));
  assert.equal(r.code, 0, r.output);
  assert.match(r.stdout, /1 of 1 databases verified/, r.output);
  assert.equal(await isTemplate(), true, `tpl is a template on the target\n${r.output}`);
  await assertSameAfter(src, dst, 'tpl', r);

  const redo = await runCli([...args, '--redo-db', 'tpl'], cliEnv(src, dst));
  assert.equal(redo.code, 0, redo.output);
  assert.match(redo.output, /tpl: --redo-db: migrating it afresh/, redo.output);
  assert.match(redo.output, /dropping the database this migration created on the target/, redo.output);
  assert.equal(await isTemplate(), true, redo.output);
  await assertSameAfter(src, dst, 'tpl', redo);
  console.log(`# done in ${since(t0)}`);
});
