/**
 * Safety of the target's databases and of the state directory (#11), against real servers: a database
 * that verified is never dropped by a rerun; --redo-db is resumed after an interruption and not
 * repeated once it verified; a database is dropped only when its oid is the one this migration
 * created; databases named like the run's own state files; state in the first layout is converted.
 */
import assert from 'node:assert/strict';
import { existsSync, readdirSync } from 'node:fs';
import * as fs from 'node:fs/promises';
import path from 'node:path';
import { test } from 'node:test';
import type { Cluster } from '../harness/cluster.ts';
import { autoConf, prepareTargetAutoConf } from './cli.ts';
import { cliEnv, migrateArgs, readJson, runCli, since, startCli, stateFile, type CliResult, type Workspace } from './delayed-helpers.ts';
import { assertSameAfter, copyInto, fixtures, killRun, scalar, waitDuring } from './safety-helpers.ts';

const { setUp, workspace } = fixtures();

/** A database `db` with one table `big` of `rows` narrow rows (no unique key: a row loaded twice would show). */
async function seedBig(src: Cluster, db: string, rows: number): Promise<void> {
  await src.query(`create database ${db}`);
  await src.query(
    `create table big (id int not null, v text not null);
     insert into big select g, md5(g::text) from generate_series(1, ${String(rows)}) g;
     create index big_id on big (id);
     create table small (id int primary key, v text);
     insert into small select g, 'v' || g from generate_series(1, 100) g;
     analyze;`,
    [],
    db,
  );
}

test('a verified database whose deferred set changed (a partition added on the source) is left alone: exit 1, the application row kept', async () => {
  const t0 = Date.now();
  const { src, dst, ws } = await setUp('sf1a');
  await src.query('create database p');
  await src.query(
    `create table ev (id int not null, at date not null, v text) partition by range (at);
     create table ev_1 partition of ev for values from ('2024-01-01') to ('2025-01-01');
     insert into ev select g, date '2024-01-01' + (g % 366), 'v' || g from generate_series(1, 2000) g;
     create table orders (id int primary key, note text not null);
     insert into orders select g, 'order ' || g from generate_series(1, 300) g;`,
    [],
    'p',
  );
  const args = migrateArgs(src, dst, ws, ['--delay-table-data', 'p.ev']);
  const first = await runCli(args, cliEnv(src, dst));
  assert.equal(first.code, 0, first.output);
  assert.deepEqual(readJson<{ deferred?: string[] }>(stateFile(ws, 'p.dumped')).deferred, ['"public"."ev"', '"public"."ev_1"'], first.output);
  await assertSameAfter(src, dst, 'p', first);

  // An application writes into the migrated database; the source gets a partition of the deferred table.
  await dst.query(`insert into orders values (100001, 'written on the target')`, [], 'p');
  await src.query(`create table ev_2 partition of ev for values from ('2025-01-01') to ('2026-01-01')`, [], 'p');

  const second = await runCli(args, cliEnv(src, dst));
  assert.equal(second.code, 1, second.output);
  assert.match(
    second.output,
    /the --delay-table-data tables of p differ from those of the run that migrated it \(then: "public"\."ev", "public"\."ev_1"; now: "public"\."ev", "public"\."ev_1", "public"\."ev_2"\)/,
    second.output,
  );
  assert.match(second.output, /--redo-db "p"/, second.output);
  assert.doesNotMatch(second.output, /migrating p afresh|\[p\] (streaming|dumping|restoring)/, second.output);
  assert.deepEqual(
    await dst.query('select id, note from orders where id > 300', [], 'p'),
    [{ id: 100001, note: 'written on the target' }],
    `the application's row is still on the target\n${second.output}`,
  );
  assert.equal(await scalar(dst, 'select count(*)::text as n from ev', [], 'p'), 2000, `the deferred table keeps its rows\n${second.output}`);
  console.log(`1a done in ${since(t0)}`);
});

test('--redo-db: killed during the redo, the same command resumes it; once verified, it is not repeated', async () => {
  const t0 = Date.now();
  const { src, dst, ws } = await setUp('sf1b');
  await seedBig(src, 'shop', 1_000_000);
  console.log(`seeded in ${since(t0)}`);
  const plain = migrateArgs(src, dst, ws, ['--dump-jobs', '2', '--restore-jobs', '2']);
  const first = await runCli(plain, cliEnv(src, dst), 180_000);
  assert.equal(first.code, 0, first.output);
  console.log(`first migration at ${since(t0)}`);

  const redo = [...plain, '--redo-db', 'shop'];
  const run = startCli(redo, cliEnv(src, dst), 180_000);
  const copied = await waitDuring(run, "the redo's restore of shop.big to load rows on the target", () => copyInto(dst, 'shop', 'big').catch(() => undefined), {
    inconclusive: true,
  });
  const killed = await killRun(run, ws, [src, dst]);
  console.log(`killed during the redo's restore (${String(copied)} rows copied) at ${since(t0)}`);
  assert.match(killed.output, /shop: --redo-db: migrating it afresh/, killed.output);
  assert.equal(readJson<{ status: string }>(stateFile(ws, 'shop.redo.json')).status, 'acted', killed.output);
  assert.ok(!existsSync(stateFile(ws, 'shop.verify')), `the redo forgot the earlier verify\n${killed.output}`);

  const second = await runCli(redo, cliEnv(src, dst), 180_000);
  assert.equal(second.code, 0, second.output);
  assert.match(second.output, /shop: --redo-db was acted on at .*; resuming that redo/, second.output);
  assert.match(second.stderr, /\[shop\] (streaming|dumping|restoring)/, second.output);
  await assertSameAfter(src, dst, 'shop', second);
  console.log(`resumed redo done at ${since(t0)}`);

  // The database is in use on the target now: the same command must not redo it again.
  await dst.query(`create table app_made (id int primary key); insert into app_made values (7)`, [], 'shop');
  const third = await runCli(redo, cliEnv(src, dst), 180_000);
  assert.equal(third.code, 0, third.output);
  assert.match(third.output, /shop: --redo-db was acted on at .*; that redo verified, so it is not repeated/, third.output);
  assert.doesNotMatch(third.stderr, /\[shop\] (streaming|dumping|restoring)/, third.output);
  assert.deepEqual(await dst.query('select id from app_made', [], 'shop'), [{ id: 7 }], `the table made on the target is still there\n${third.output}`);
  console.log(`1b done in ${since(t0)}`);
});

test('ownership by oid: a database dropped and recreated by hand after an interrupted restore is left alone (exit 1)', async () => {
  const t0 = Date.now();
  const { src, dst, ws } = await setUp('sf1c');
  await seedBig(src, 'big', 1_000_000);
  await src.query('create database other');
  await src.query('create table t (id int primary key); insert into t select generate_series(1, 50)', [], 'other');
  console.log(`seeded in ${since(t0)}`);
  const args = migrateArgs(src, dst, ws, ['--dump-jobs', '2', '--restore-jobs', '2']);

  const run = startCli(args, cliEnv(src, dst), 180_000);
  await waitDuring(
    run,
    'the restore of big to load rows on the target, with the oid of the database it created recorded',
    async () =>
      existsSync(stateFile(ws, 'big.restore_started')) && readJson<{ oid?: string }>(stateFile(ws, 'big.restore_started')).oid !== undefined
        ? copyInto(dst, 'big', 'big').catch(() => undefined)
        : undefined,
    { inconclusive: true },
  );
  const started = readJson<{ oid?: string }>(stateFile(ws, 'big.restore_started'));
  const createdOid = await scalar(dst, `select oid::text as n from pg_database where datname = 'big'`);
  const killed = await killRun(run, ws, [src, dst]);
  assert.equal(started.oid, String(createdOid), `restore_started records the oid of the database the restore created\n${killed.output}`);
  assert.ok(!existsSync(stateFile(ws, 'big.done')), killed.output);

  // The operator drops the half-restored database and makes one of the same name by hand.
  await dst.query('drop database big with (force)');
  await dst.query('create database big');
  await dst.query(`create table mine (id int primary key, note text); insert into mine values (1, 'made by hand')`, [], 'big');
  const handOid = await scalar(dst, `select oid::text as n from pg_database where datname = 'big'`);
  assert.notEqual(handOid, createdOid);

  const second = await runCli(args, cliEnv(src, dst), 180_000);
  assert.equal(second.code, 1, second.output);
  assert.match(
    second.output,
    new RegExp(`database "big" on the target is not the one this migration created \\(that had oid ${String(createdOid)}, this one has oid ${String(handOid)}`),
    second.output,
  );
  assert.match(second.output, /FAILED big/, second.output);
  assert.deepEqual(
    await dst.query('select id, note from mine', [], 'big'),
    [{ id: 1, note: 'made by hand' }],
    `the hand-made database is untouched\n${second.output}`,
  );
  assert.deepEqual(
    (await dst.query<{ relname: string }>(`select relname from pg_class where relkind = 'r' and relnamespace = 'public'::regnamespace`, [], 'big')).map(
      (r) => r.relname,
    ),
    ['mine'],
    `nothing restored into the hand-made database\n${second.output}`,
  );
  await assertSameAfter(src, dst, 'other', second);
  console.log(`1c done in ${since(t0)}`);
});

test('databases named tuning, pair, run, globals and lock: no collision with the run files; the tuning is always reverted', async () => {
  const t0 = Date.now();
  const { src, dst, ws } = await setUp('sf5');
  const names = ['tuning', 'pair', 'run', 'globals', 'lock'];
  for (const db of names) {
    await src.query(`create database ${db}`);
    await src.query(
      `create table t1 (id int primary key, v text); insert into t1 select g, '${db} ' || g from generate_series(1, 40) g;
       create table t2 (id int primary key, v text); insert into t2 select g, '${db} ' || g from generate_series(1, 25) g;`,
      [],
      db,
    );
  }
  await prepareTargetAutoConf(dst);
  const confBefore = await autoConf(dst);
  const top = ws.markers;
  const checkAfter = async (label: string, r: { output: string }) => {
    assert.deepEqual(await autoConf(dst), confBefore, `${label}: the target's postgresql.auto.conf is as before the first run\n${r.output}`);
    assert.ok(existsSync(path.join(top, 'pair.json')), `${label}: pair.json at the top of pg_migrate_state\n${r.output}`);
    assert.ok(existsSync(path.join(top, 'globals.done')), `${label}: globals.done at the top of pg_migrate_state\n${r.output}`);
    assert.ok(!existsSync(path.join(top, 'tuning.json')), `${label}: no tuning backup left\n${r.output}`);
    assert.deepEqual(readdirSync(path.join(top, 'databases')).sort(), [...names].sort(), `${label}: one state directory per database\n${r.output}`);
    for (const db of names) assert.ok(existsSync(stateFile(ws, `${db}.verify`)), `${label}: ${db} verified\n${r.output}`);
  };

  const first = await runCli(migrateArgs(src, dst, ws, ['--delay-table-data', 'tuning.t1', '--delay-table-data', 'pair.t1']), cliEnv(src, dst));
  assert.equal(first.code, 0, first.output);
  await checkAfter('first run', first);
  for (const db of names) await assertSameAfter(src, dst, db, first);

  const second = await runCli(
    migrateArgs(src, dst, ws, ['--delay-table-data', 'tuning.t2', '--delay-table-data', 'pair.t2', ...names.flatMap((n) => ['--redo-db', n])]),
    cliEnv(src, dst),
  );
  assert.equal(second.code, 0, second.output);
  for (const db of names) assert.match(second.output, new RegExp(`${db}: --redo-db: migrating it afresh`), second.output);
  await checkAfter('second run', second);
  for (const db of ['tuning', 'pair'])
    assert.deepEqual(
      readJson<{ deferred?: string[] }>(stateFile(ws, `${db}.dumped`)).deferred,
      ['"public"."t2"'],
      `${db}: the new deferred set\n${second.output}`,
    );
  for (const db of names) await assertSameAfter(src, dst, db, second);
  console.log(`5 done in ${since(t0)}`);
});

/** Moves a state directory of the current layout back into the first one (files named `<db>.<step>`; counts in pg_verify_state/). */
async function toLegacyLayout(stateDir: string): Promise<void> {
  const root = path.join(stateDir, 'pg_migrate_state');
  const countsDir = path.join(stateDir, 'pg_verify_state');
  await fs.mkdir(countsDir, { recursive: true });
  for (const db of await fs.readdir(path.join(root, 'databases'))) {
    const dir = path.join(root, 'databases', db);
    for (const name of await fs.readdir(dir)) {
      const from = path.join(dir, name);
      // Written by the new layout only.
      if (name === 'delayed_loads.json' || name === 'loads' || name === 'redo.json' || name === 'src_objects.json') continue;
      if (name === 'restore_started') {
        // The first layout recorded no oid.
        const rest = readJson<Record<string, unknown>>(from);
        delete rest.oid;
        await fs.writeFile(path.join(root, `${db}.restore_started`), JSON.stringify(rest));
      } else if (/^(src|dst)_counts/.test(name)) await fs.rename(from, path.join(countsDir, `${db}.${name}`));
      else await fs.rename(from, path.join(root, `${db}.${name}`));
    }
  }
  await fs.rm(path.join(root, 'databases'), { recursive: true });
  await fs.rm(path.join(root, 'layout.json'));
}

// The first layout is converted before preflight, which looks for restore_started in the databases'
// directories to tell this migration's databases on the target from others.
test('state in the first layout of a completed migration is converted and nothing is redone', async () => {
  const t0 = Date.now();
  const { src, dst, ws } = await setUp('sf6a');
  await seedLegacyDatabases(src);
  const args = migrateArgs(src, dst, ws, ['--delay-table-data', 'ana.events']);
  const first = await runCli(args, cliEnv(src, dst));
  assert.equal(first.code, 0, first.output);

  await toLegacyLayout(ws.stateDir);
  const legacyFiles = (await fs.readdir(ws.markers)).sort();
  for (const f of ['shop.restore_started', 'shop.verify', 'shop.done', 'ana.delayed_verify', 'ana.delayed_indexes.json', 'globals.done', 'pair.json'])
    assert.ok(legacyFiles.includes(f), `legacy state has ${f}: ${legacyFiles.join(' ')}`);
  assert.ok(existsSync(path.join(ws.stateDir, 'pg_verify_state', 'shop.src_counts.json')));
  // An application table on the target: a redo would drop it.
  await dst.query('create table app_made (id int); insert into app_made values (1)', [], 'shop');

  const second = await runCli(args, cliEnv(src, dst));
  assert.equal(second.code, 0, second.output);
  assert.doesNotMatch(second.stderr, /\[(shop|ana)\] (dumping|streaming|restoring|deferred loading|dropping indexes)/, `nothing redone\n${second.output}`);
  assert.match(second.stdout, /2 of 2 databases verified/, second.output);
  for (const f of ['shop.verify', 'shop.done', 'shop.src_counts.json', 'shop.dst_counts.json', 'ana.verify', 'ana.delayed_verify', 'ana.delayed_indexes.json'])
    assert.ok(existsSync(stateFile(ws, f)), `converted: ${f} in databases/\n${second.output}`);
  assertConverted(ws, second);
  assert.deepEqual(await dst.query('select id from app_made', [], 'shop'), [{ id: 1 }], `the target's shop was not redone\n${second.output}`);
  await assertSameAfter(src, dst, 'ana', second);
  console.log(`6a done in ${since(t0)}`);
});

test('state in the first layout of an interrupted migration (dumps finished) is converted and the dumps are used; one holding a database named globals is refused (exit 4)', async () => {
  const t0 = Date.now();
  const { src, dst, ws } = await setUp('sf6b');
  await seedLegacyDatabases(src);

  // A legacy state with a database named globals: its globals.<step> files cannot be told from the run's.
  const wsG = await workspace('sf6g');
  await fs.mkdir(wsG.markers, { recursive: true });
  await fs.writeFile(path.join(wsG.markers, 'globals.dumped'), JSON.stringify({ at: new Date().toISOString(), seconds: 1 }));
  await prepareTargetAutoConf(dst);
  const confBefore = await autoConf(dst);
  const refused = await runCli(migrateArgs(src, dst, wsG), cliEnv(src, dst));
  assert.equal(refused.code, 4, refused.output);
  assert.match(refused.output, /was written by an earlier pg-migrate and holds a database named "globals"/, refused.output);
  assert.ok(existsSync(path.join(wsG.markers, 'globals.dumped')), `nothing converted\n${refused.output}`);
  assert.ok(!existsSync(path.join(wsG.markers, 'databases', 'globals')), `nothing converted\n${refused.output}`);
  assert.deepEqual(await autoConf(dst), confBefore, `the target was not tuned\n${refused.output}`);
  assert.deepEqual(await dst.query(`select datname from pg_database where datname in ('shop', 'ana')`), [], `nothing migrated\n${refused.output}`);

  // A migration whose dumps finished and whose restores had not started, written in the first layout.
  const args = migrateArgs(src, dst, ws, ['--delay-table-data', 'ana.events', '--data-path', 'files']);
  const first = await runCli(args, cliEnv(src, dst));
  assert.equal(first.code, 0, first.output);
  for (const db of ['shop', 'ana']) {
    await dst.query(`drop database ${db} with (force)`);
    const dir = path.join(ws.markers, 'databases', db);
    for (const name of await fs.readdir(dir)) if (name !== 'dumped' && name !== 'src_counts.json') await fs.rm(path.join(dir, name), { recursive: true });
  }
  await toLegacyLayout(ws.stateDir);
  assert.deepEqual((await fs.readdir(ws.markers)).filter((f) => /^(shop|ana)\./.test(f)).sort(), ['ana.dumped', 'shop.dumped'], 'legacy markers of the dumps');

  const second = await runCli(args, cliEnv(src, dst));
  assert.equal(second.code, 0, second.output);
  assert.doesNotMatch(second.stderr, /\[(shop|ana)\] dumping/, `the finished dumps are used\n${second.output}`);
  assert.match(second.stderr, /\[shop\] restoring/, second.output);
  assert.match(second.stderr, /\[ana\] restoring/, second.output);
  for (const f of ['shop.dumped', 'shop.verify', 'ana.dumped', 'ana.verify', 'ana.delayed_verify'])
    assert.ok(existsSync(stateFile(ws, f)), `${f}\n${second.output}`);
  assertConverted(ws, second);
  assert.deepEqual(await autoConf(dst), confBefore, second.output);
  for (const db of ['shop', 'ana']) await assertSameAfter(src, dst, db, second);
  console.log(`6b done in ${since(t0)}`);
});

async function seedLegacyDatabases(src: Cluster): Promise<void> {
  await src.query('create database shop');
  await src.query('create table orders (id int primary key, v text); insert into orders select g, md5(g::text) from generate_series(1, 500) g', [], 'shop');
  await src.query('create database ana');
  await src.query(
    `create table kinds (id int primary key); insert into kinds select generate_series(0, 6);
     create table events (id int primary key, kind int not null references kinds (id), v text);
     create index events_kind on events (kind);
     insert into events select g, g % 7, 'e' || g from generate_series(1, 3000) g;`,
    [],
    'ana',
  );
}

/** The state is in the current layout: layout.json, pg_verify_state folded in, no per-database file at the top. */
function assertConverted(ws: Workspace, r: CliResult): void {
  assert.deepEqual(readJson<{ version: number }>(path.join(ws.markers, 'layout.json')), { version: 2 }, r.output);
  assert.ok(!existsSync(path.join(ws.stateDir, 'pg_verify_state')), `pg_verify_state folded in\n${r.output}`);
  const leftAtTop = readdirSync(ws.markers).filter((f) => /^(shop|ana)\./.test(f));
  assert.deepEqual(leftAtTop, [], `no per-database file left at the top\n${r.output}`);
  assert.ok(existsSync(path.join(ws.markers, 'globals.done')) && existsSync(path.join(ws.markers, 'pair.json')), r.output);
}

test('killed between the restore creating the database and the run recording its oid: the rerun proves it by transaction order and finishes', async () => {
  const t0 = Date.now();
  const { src, dst, ws } = await setUp('sf1d');
  for (const db of ['adopt', 'handmade']) {
    await src.query(`create database ${db}`);
    await src.query(`create table t (id int primary key, v text); insert into t select g, 'v' || g from generate_series(1, 500) g`, [], db);
  }
  const args = migrateArgs(src, dst, ws);
  const first = await runCli(args, cliEnv(src, dst));
  assert.equal(first.code, 0, first.output);

  // The state a kill -9 leaves in that window: restore_started with the transaction floor and no oid,
  // the database created on the target after the floor, nothing restored in it yet.
  const crashState = async (db: string, createdFirst: boolean): Promise<void> => {
    await dst.query(`drop database ${db} with (force)`);
    if (createdFirst) await dst.query(`create database ${db}`);
    const floor = await scalar(dst, 'select (txid_current() % 4294967296)::text as n');
    if (!createdFirst) await dst.query(`create database ${db}`);
    for (const m of ['done', 'verify', 'dst_counts.json', 'dst_counts.fast.json']) await fs.rm(stateFile(ws, `${db}.${m}`), { force: true });
    await fs.writeFile(stateFile(ws, `${db}.restore_started`), JSON.stringify({ at: new Date().toISOString(), xidFloor: String(floor) }));
  };
  await crashState('adopt', false);
  await crashState('handmade', true);
  await dst.query(`create table mine (id int primary key); insert into mine values (1)`, [], 'handmade');

  const second = await runCli(args, cliEnv(src, dst));
  assert.equal(second.code, 1, second.output);
  assert.match(second.output, /adopt: the database was created by this migration's interrupted restore/, second.output);
  await assertSameAfter(src, dst, 'adopt', second);
  assert.match(
    second.output,
    /database "handmade" exists on the target; this migration started restoring it but could not record that it created it/,
    second.output,
  );
  assert.deepEqual(
    await dst.query('select id from mine', [], 'handmade'),
    [{ id: 1 }],
    `a database that existed before the restore began is left alone\n${second.output}`,
  );
  console.log(`1d done in ${since(t0)}`);
});
