/**
 * Online mode end to end: `pg-migrate --online` copies while applications keep writing, the
 * target replicates, and `pg-migrate cutover` stops the writes, catches up and hands over. Each test
 * starts its own source (wal_level = logical) and target.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { Cluster } from '../harness/cluster.ts';
import { cliEnv, migrateArgs, runCli, serverFlags, startCli, type CliResult, type Workspace } from './delayed-helpers.ts';
import { copyInto, killRun, waitDuring } from './safety-helpers.ts';
import {
  assertLastChangeOnTarget,
  assertSameDatabase,
  createWriterTables,
  cutoverArgs,
  onlineFixtures,
  onlineJson,
  publications,
  readOnly,
  replicateShop,
  replicationMonitor,
  reportedWriteStop,
  slots,
  subscriptions,
  until,
  type Writer,
  type WriterResult,
} from './online-helpers.ts';

const { setUp, writer } = onlineFixtures();

/** Commits the writer acknowledged between two moments. */
const commitsBetween = (w: { commitTimes: readonly number[] }, from: number, to: number): number => w.commitTimes.filter((t) => t >= from && t <= to).length;

/** Waits until the target's `progress` of `db` reached what the writer committed by now: replication applies. */
async function targetCatchesUp(dst: Cluster, w: Writer): Promise<void> {
  const wanted = w.commits;
  await until(`the target's ${w.db} to apply the writer's transaction ${String(wanted)}`, async () => {
    const [r] = await dst.query<{ n: string }>('select n::text as n from progress', [], w.db);
    return Number(r!.n) >= wanted;
  });
}

/**
 * The whole online migration with writers running, from before the copy until the cutover's fence
 * stops them; then every table, sequence and the writers' last commits are checked on the target,
 * and the replication is gone from both servers. Returns the cutover's output and the writers' results.
 */
async function migrateWithWriters(
  src: Cluster,
  dst: Cluster,
  ws: Workspace,
  dbs: string[],
  bulkRows: number,
  t: { diagnostic: (m: string) => void },
  cutoverFlags: string[] = [],
): Promise<{ cutover: CliResult; results: WriterResult[] }> {
  const writers = dbs.map((db) => writer(src, db, { bulkRows }));
  await until('the writers to commit', () => writers.every((w) => w.commits >= 5));
  const t0 = Date.now();
  const m = await runCli(migrateArgs(src, dst, ws, ['--online']), cliEnv(src, dst));
  const t1 = Date.now();
  assert.equal(m.code, 0, m.output);
  for (const db of dbs) assert.match(m.stdout, new RegExp(`${db} .* verified`), m.output);
  for (const w of writers) assert.ok(commitsBetween(w, t0, t1) > 0, `${w.db}: the writer committed during the copy`);
  // The online phase: the target applies what the source commits.
  for (const w of writers) await targetCatchesUp(dst, w);
  const tCut = Date.now();
  const monitor = replicationMonitor(src);
  const cutover = await runCli(cutoverArgs(src, dst, ws, ['--grace-seconds', '1', ...cutoverFlags]), cliEnv(src, dst));
  const tEnd = Date.now();
  const samples = await monitor.stop();
  assert.equal(cutover.code, 0, cutover.output);
  if (reportedWriteStop(cutover) >= 3) t.diagnostic(`the cutover took long; replication meanwhile:\n${samples.join('\n')}\n${cutover.output}`);
  const results = await Promise.all(writers.map((w) => w.done));
  for (const r of results) {
    assert.equal(r.endedBy, 'read-only', `${r.db}: the fence stopped the writer`);
    assert.ok(r.terminated >= 1, `${r.db}: the writer's open session was ended after the grace period`);
    assert.ok(commitsBetween(r, tCut, tEnd) > 0, `${r.db}: the writer was still writing when the cutover started`);
    t.diagnostic(
      `${r.db}: ${String(r.commits)} commits (${String(commitsBetween(r, t0, t1))} during the copy), last ${String(r.lastCommitted)}, in doubt ${JSON.stringify(r.inDoubt)}; ` +
        `its last commit ${((tEnd - r.lastCommitAt) / 1000).toFixed(1)} s before the cutover ended (its session was ended after the 1 s grace)`,
    );
  }
  for (const db of dbs) await assertSameDatabase(src, dst, db, cutover);
  for (const r of results) await assertLastChangeOnTarget(src, dst, r);
  // The replication is gone; the source stays read-only.
  assert.deepEqual(await slots(src), [], 'no slot left on the source');
  assert.deepEqual(await subscriptions(dst), [], 'no subscription left on the target');
  for (const db of dbs) {
    assert.deepEqual(await publications(src, db), [], `no publication left in the source's ${db}`);
    assert.deepEqual(await publications(dst, db), [], `no publication of pg-migrate copied into the target's ${db}`);
    assert.equal(await readOnly(src, db), true, `the source's ${db} stays read-only`);
    assert.equal(await readOnly(dst, db), false, `the target's ${db} takes writes`);
  }
  return { cutover, results };
}

test('writers in two databases throughout an online migration: after cutover the target equals the source, the last commits are there, writes stopped < 5 s', async (t) => {
  const { src, dst, ws } = await setUp('onl-writer');
  const bulkRows = 300_000;
  for (const db of ['app1', 'app2']) {
    await src.query(`create database ${db}`);
    await createWriterTables(src, db, { bulkRows });
  }
  // The cutover compares content too (--verify checksum): equal across 12 → 18 once caught up.
  const { cutover } = await migrateWithWriters(src, dst, ws, ['app1', 'app2'], bulkRows, t, ['--verify', 'checksum']);
  for (const db of ['app1', 'app2'])
    assert.match(cutover.stdout, new RegExp(`${db}: .* rows compared, [1-9]\\d* tables' content compared by checksum`), cutover.output);
  const stop = reportedWriteStop(cutover);
  t.diagnostic(`cutover reported: writes were stopped for ${String(stop)} s`);
  assert.ok(stop < 5, `writes were stopped for ${String(stop)} s:\n${cutover.output}`);
  // The tables without a key were copied at cutover.
  assert.match(cutover.stdout, /app1: \d+ sequences set, 1 tables copied/, cutover.output);
  assert.match(cutover.stdout, /app2: \d+ sequences set, 1 tables copied/, cutover.output);
});

test('a table without a primary key: UPDATE and DELETE on the source keep working during the online phase; after cutover it is equal', async () => {
  const { src, dst, ws } = await setUp('onl-nopk');
  await replicateShop(
    src,
    dst,
    ws,
    `create table items (id int primary key, v text);
     insert into items select g, md5(g::text) from generate_series(1, 1000) g;
     create table log (at int, what text);
     insert into log select g, 'row ' || g from generate_series(1, 1000) g;`,
  );
  const rec = await onlineJson(ws, 'shop');
  assert.deepEqual(
    rec?.notReplicated.map((x) => `${x.schema}.${x.name}`),
    ['public.log'],
    JSON.stringify(rec),
  );
  const published = await src.query<{ t: string }>('select tablename as t from pg_publication_tables where pubname = $1 order by 1', [rec.publication], 'shop');
  assert.deepEqual(
    published.map((r) => r.t),
    ['items'],
    'only the table with a key is published',
  );
  // The application's statements on the table without a key work as before (no "does not have a replica identity").
  await src.query(`update log set what = what || ' updated' where at % 10 = 0`, [], 'shop');
  await src.query('delete from log where at % 7 = 0', [], 'shop');
  await src.query(`insert into log values (5000, 'new')`, [], 'shop');
  await src.query(`update items set v = 'changed' where id <= 10`, [], 'shop');
  await src.query('delete from items where id > 990', [], 'shop');
  const [before] = await dst.query<{ n: string }>('select count(*)::text as n from log', [], 'shop');
  assert.equal(before!.n, '0', 'the table without a key is copied at cutover, not before');
  const c = await runCli(cutoverArgs(src, dst, ws, ['--grace-seconds', '0']), cliEnv(src, dst));
  assert.equal(c.code, 0, c.output);
  assert.match(c.stdout, /shop: \d+ sequences set, 1 tables copied/, c.output);
  await assertSameDatabase(src, dst, 'shop', c);
});

test('--replica-identity-full: the table without a key replicates, UPDATE on the source keeps working, and its replica identity is put back at cutover', async () => {
  const { src, dst, ws } = await setUp('onl-ridfull');
  await replicateShop(
    src,
    dst,
    ws,
    `create table items (id int primary key, v text);
     insert into items select g, md5(g::text) from generate_series(1, 1000) g;
     create table log (at int, what text);
     insert into log select g, 'row ' || g from generate_series(1, 1000) g;`,
    ['--replica-identity-full'],
  );
  const rec = await onlineJson(ws, 'shop');
  assert.deepEqual(rec?.notReplicated, [], JSON.stringify(rec));
  const ident = async (): Promise<string> =>
    (await src.query<{ r: string }>("select relreplident::text as r from pg_class where oid = 'log'::regclass", [], 'shop'))[0]!.r;
  assert.equal(await ident(), 'f');
  await src.query(`update log set what = what || ' updated' where at % 10 = 0`, [], 'shop');
  await src.query('delete from log where at % 7 = 0', [], 'shop');
  // Replicated during the online phase.
  await until('the update of log to reach the target', async () => {
    const [r] = await dst.query<{ n: string }>("select count(*)::text as n from log where what like '%updated'", [], 'shop');
    return r!.n === '86';
  });
  const c = await runCli(cutoverArgs(src, dst, ws, ['--grace-seconds', '0']), cliEnv(src, dst));
  assert.equal(c.code, 0, c.output);
  assert.match(c.stdout, /shop: \d+ sequences set, 0 tables copied/, c.output);
  assert.match(c.stdout, /put back the replica identity of "public"\."log" in shop/, c.output);
  assert.equal(await ident(), 'd', 'the replica identity is the default again');
  await assertSameDatabase(src, dst, 'shop', c);
});

/** Whether `db` on the source is fenced: default_transaction_read_only = on set for the database (asked in postgres, which the fence leaves alone). */
async function fenced(src: Cluster, db: string): Promise<boolean> {
  const r = await src.query<{ s: string[] | null }>(
    `select setconfig as s from pg_db_role_setting where setrole = 0 and setdatabase = (select oid from pg_database where datname = $1)`,
    [db],
  );
  return (r[0]?.s ?? []).includes('default_transaction_read_only=on');
}

test("kill -9 during the copy (another database replicating), rerun, kill -9 during the cutover, cutover again: equal; the operator's own slot and publication are left alone", async (t) => {
  const { src, dst, ws } = await setUp('onl-kill');
  const bigRows = 800_000;
  await src.query('create database big');
  await src.query('create database small');
  await Promise.all([createWriterTables(src, 'big', { bulkRows: bigRows }), createWriterTables(src, 'small')]);
  // Replication objects of the operator's own, on the source.
  await src.query("select pg_create_logical_replication_slot('other_slot', 'pgoutput')");
  await src.query('create publication my_pub for table bulk', [], 'big');
  const writers = [writer(src, 'big', { bulkRows: bigRows }), writer(src, 'small')];
  await until('the writers to commit', () => writers.every((w) => w.commits >= 5));

  // 1. kill -9 while big is being copied and small already replicates.
  const args = migrateArgs(src, dst, ws, ['--online']);
  const first = startCli(args, cliEnv(src, dst));
  await waitDuring(
    first,
    'small to replicate while big is being copied',
    async () =>
      (await onlineJson(ws, 'small'))?.subscribedAt !== undefined &&
      ((await copyInto(dst, 'big', 'bulk').catch(() => undefined)) ?? 0) > 0 &&
      (await onlineJson(ws, 'big'))?.subscribedAt === undefined,
    { inconclusive: true },
  );
  await killRun(first, ws, [src, dst]);
  const killedBig = (await onlineJson(ws, 'big'))!;
  const smallRec = (await onlineJson(ws, 'small'))!;
  assert.equal(killedBig.subscribedAt, undefined);
  assert.ok((await slots(src)).includes(killedBig.slot), 'the killed copy left its slot on the source');

  // 2. The rerun copies big afresh from a new slot (the old one dropped) and leaves small replicating.
  const second = await runCli(args, cliEnv(src, dst));
  assert.equal(second.code, 0, second.output);
  const big = (await onlineJson(ws, 'big'))!;
  assert.ok(big.subscribedAt !== undefined, JSON.stringify(big));
  assert.notEqual(big.consistentPoint, killedBig.consistentPoint, "big's copy read the snapshot of a new slot");
  assert.equal((await onlineJson(ws, 'small'))!.subscribedAt, smallRec.subscribedAt, 'small was not copied again');
  assert.deepEqual(await slots(src), [big.slot, smallRec.slot, 'other_slot'].sort(), 'one slot per database, no slot of the killed copy left');
  assert.deepEqual(await subscriptions(dst), [big.subscription, smallRec.subscription].sort());

  // 3. kill -9 of a cutover during its grace period: the source is left fenced; the next cutover opens it first, then cuts over.
  const cut = startCli(cutoverArgs(src, dst, ws, ['--grace-seconds', '30']), cliEnv(src, dst));
  await waitDuring(cut, 'the cutover to fence the source', async () => (await fenced(src, 'big')) && fenced(src, 'small'));
  await killRun(cut, ws, [src, dst]);
  assert.equal(await fenced(src, 'big'), true, 'the killed cutover left the source fenced');
  const commits = writers.map((w) => w.commits);
  await until('the writers to go on in their open sessions', () => writers.every((w, i) => w.commits > commits[i]! + 3));
  const cutover = await runCli(cutoverArgs(src, dst, ws, ['--grace-seconds', '1']), cliEnv(src, dst));
  assert.equal(cutover.code, 0, cutover.output);
  assert.match(cutover.stdout, /made the source writable again after a cutover that was interrupted/, cutover.output);
  const results = await Promise.all(writers.map((w) => w.done));
  for (const r of results) assert.equal(r.endedBy, 'read-only', `${r.db}: the fence stopped the writer`);
  t.diagnostic(`cutover after the kill: writes were stopped for ${String(reportedWriteStop(cutover))} s`);
  for (const db of ['big', 'small']) await assertSameDatabase(src, dst, db, cutover);
  for (const r of results) await assertLastChangeOnTarget(src, dst, r);

  // 4. cleanup has nothing of the migration's left to drop, and leaves the operator's objects alone.
  const clean = await runCli(['cleanup', ...serverFlags(src, dst), '--state-dir', ws.stateDir], cliEnv(src, dst));
  assert.equal(clean.code, 0, clean.output);
  assert.doesNotMatch(clean.stdout, /dropped/, clean.output);
  assert.deepEqual(await slots(src), ['other_slot'], 'only the slot of the operator is left');
  assert.deepEqual(await publications(src, 'big'), ['my_pub'], "the operator's publication is left");
  assert.deepEqual(await publications(src, 'small'), []);
  assert.deepEqual(await subscriptions(dst), []);
  assert.deepEqual(await publications(dst, 'big'), ['my_pub'], "the target has the operator's publication, as copied, and none of pg-migrate");
});

test('cutover refused when a column was added on the source meanwhile; the source takes writes again; with the column added on the target too the cutover goes through', async () => {
  const { src, dst, ws } = await setUp('onl-ddl');
  await replicateShop(
    src,
    dst,
    ws,
    `create table items (id int primary key, v text);
     insert into items select g, md5(g::text) from generate_series(1, 1000) g;
     create table notes (id serial primary key, t text);
     create table nokey (n int);
     insert into nokey select generate_series(1, 10);`,
  );
  const rec = (await onlineJson(ws, 'shop'))!;

  // A column added on the source: refused before anything changes.
  await src.query('alter table items add column extra int', [], 'shop');
  const refused = await runCli(cutoverArgs(src, dst, ws, ['--grace-seconds', '0']), cliEnv(src, dst));
  assert.equal(refused.code, 1, refused.output);
  assert.match(refused.stderr, /schema changed since the copy/, refused.output);
  assert.match(refused.stderr, /shop: public\.items was changed on the source since the copy/, refused.output);
  assert.doesNotMatch(refused.stdout, /stopped writes/, refused.output);
  assert.equal(await fenced(src, 'shop'), false);
  await src.query(`insert into notes (t) values ('written after the refusal')`, [], 'shop');
  assert.deepEqual(await subscriptions(dst), [rec.subscription], 'the replication goes on');

  // The operator makes the same change on the target: the schema check passes.
  // A failure after the fence (the target's copy of an unreplicated table holds a row): the source is opened again.
  await dst.query('alter table items add column extra int', [], 'shop');
  await dst.query('insert into nokey values (-1)', [], 'shop');
  const failed = await runCli(cutoverArgs(src, dst, ws, ['--grace-seconds', '0']), cliEnv(src, dst));
  assert.equal(failed.code, 1, failed.output);
  assert.match(failed.stdout, /stopped writes on the source/, failed.output);
  assert.match(failed.stderr, /public\.nokey on the target holds rows written since the copy/, failed.output);
  assert.match(failed.stdout, /the source takes writes again; the subscriptions go on/, failed.output);
  assert.equal(await fenced(src, 'shop'), false, 'the fence was lifted');
  assert.equal(await readOnly(src, 'shop'), false);
  await src.query(`insert into notes (t) values ('written after the failed cutover')`, [], 'shop');
  assert.deepEqual(await subscriptions(dst), [rec.subscription], 'the replication goes on');

  await dst.query('delete from nokey', [], 'shop');
  const c = await runCli(cutoverArgs(src, dst, ws, ['--grace-seconds', '0']), cliEnv(src, dst));
  assert.equal(c.code, 0, c.output);
  await assertSameDatabase(src, dst, 'shop', c);
  const notes = await dst.query<{ t: string }>('select t from notes order by id', [], 'shop');
  assert.deepEqual(
    notes.map((r) => r.t),
    ['written after the refusal', 'written after the failed cutover'],
  );
});

test('preflight on a source with wal_level = replica: exit 3 naming wal_level and the restart; nothing changed', async () => {
  const { src, dst, ws } = await setUp('onl-walrep', { logical: false });
  await src.query('create database shop');
  await src.query('create table items (id int primary key); insert into items select generate_series(1, 10)', [], 'shop');
  const r = await runCli(migrateArgs(src, dst, ws, ['--online']), cliEnv(src, dst));
  assert.equal(r.code, 3, r.output);
  assert.match(r.output, /the source runs with wal_level = replica; online mode needs wal_level = logical, which takes a restart of the source/, r.output);
  assert.match(r.output, /ALTER SYSTEM SET wal_level = logical; then restart the source server/, r.output);
  assert.deepEqual(await slots(src), []);
  assert.deepEqual(await publications(src, 'shop'), []);
  assert.deepEqual((await dst.query('select datname from pg_database where datname = $1', ['shop'])).length, 0, 'nothing created on the target');
});

test('PostgreSQL 12 → 18: writers throughout an online migration; after cutover (with --verify checksum) the target equals the source', async (t) => {
  const { src, dst, ws } = await setUp('onl-xv', { source: '12', target: '18' });
  assert.equal(src.major, 12);
  assert.equal(dst.major, 18);
  const bulkRows = 50_000;
  for (const db of ['app1', 'app2']) {
    await src.query(`create database ${db}`);
    await createWriterTables(src, db, { bulkRows });
  }
  const { cutover } = await migrateWithWriters(src, dst, ws, ['app1', 'app2'], bulkRows, t);
  const stop = reportedWriteStop(cutover);
  t.diagnostic(`cutover reported: writes were stopped for ${String(stop)} s`);
  assert.ok(stop < 5, `writes were stopped for ${String(stop)} s:\n${cutover.output}`);
});

test('status in the online phase shows replicating and the lag; cutover --dry-run changes nothing; cleanup drops only the replication of the migration', async () => {
  const { src, dst, ws } = await setUp('onl-status');
  await src.query('create database shop');
  await createWriterTables(src, 'shop');
  await src.query("select pg_create_logical_replication_slot('other_slot', 'pgoutput')");
  await src.query('create publication my_pub for table bulk', [], 'shop');
  const w = writer(src, 'shop');
  const m = await runCli(migrateArgs(src, dst, ws, ['--online']), cliEnv(src, dst));
  assert.equal(m.code, 0, m.output);
  const rec = (await onlineJson(ws, 'shop'))!;

  // status, with the servers asked for the lag.
  const statusArgs = ['status', ...serverFlags(src, dst), '--state-dir', ws.stateDir];
  const json = await runCli([...statusArgs, '--json'], cliEnv(src, dst));
  assert.equal(json.code, 0, json.output);
  const st = JSON.parse(json.stdout) as {
    databases: { name: string; replication?: { state: string; slot: string; subscription: string; lagBytes?: number | null; applying?: boolean } }[];
  };
  const shop = st.databases.find((d) => d.name === 'shop')?.replication;
  assert.equal(shop?.state, 'replicating', json.stdout);
  assert.equal(shop.slot, rec.slot);
  assert.equal(shop.applying, true, json.stdout);
  assert.equal(typeof shop.lagBytes, 'number', json.stdout);
  const text = await runCli(statusArgs, cliEnv(src, dst));
  assert.equal(text.code, 0, text.output);
  assert.match(
    text.stdout,
    new RegExp(`shop: replicating \\(subscription ${rec.subscription}, slot ${rec.slot}\\); applying, [\\d.]+ (B|kB|MB) behind`),
    text.output,
  );
  // Without the servers, the state alone.
  const offline = await runCli(['status', '--state-dir', ws.stateDir]);
  assert.match(offline.stdout, /shop: replicating \(subscription /, offline.output);

  // cutover --dry-run: what it would do, and nothing done.
  const settingsBefore = await src.query('select setdatabase, setrole, setconfig from pg_db_role_setting order by 1, 2');
  const dry = await runCli(cutoverArgs(src, dst, ws, ['--dry-run']), cliEnv(src, dst));
  assert.equal(dry.code, 0, dry.output);
  assert.match(
    dry.stdout,
    new RegExp(`shop: stop writes, wait for ${rec.subscription} to catch up, set the sequences, copy 1 unreplicated tables \\(public\\.nokey\\)`),
    dry.output,
  );
  assert.doesNotMatch(dry.stdout, /writes were stopped|dropped/, dry.output);
  assert.deepEqual(await src.query('select setdatabase, setrole, setconfig from pg_db_role_setting order by 1, 2'), settingsBefore);
  assert.equal(await readOnly(src, 'shop'), false);
  const before = w.commits;
  await until('the writer to go on', () => w.commits > before + 5);
  assert.deepEqual(await subscriptions(dst), [rec.subscription]);
  assert.deepEqual(await slots(src), ['other_slot', rec.slot].sort());
  assert.equal((await onlineJson(ws, 'shop'))?.cutoverAt, undefined);

  // cleanup: the migration's subscription, slot and publication go; the operator's stay; the source still takes writes.
  const clean = await runCli(['cleanup', ...serverFlags(src, dst), '--state-dir', ws.stateDir], cliEnv(src, dst));
  assert.equal(clean.code, 0, clean.output);
  assert.match(clean.stdout, new RegExp(`dropped the subscription ${rec.subscription} of shop on the target`), clean.output);
  assert.match(clean.stdout, new RegExp(`dropped the publication ${rec.publication} of shop on the source`), clean.output);
  assert.deepEqual(await subscriptions(dst), []);
  assert.deepEqual(await slots(src), ['other_slot']);
  assert.deepEqual(await publications(src, 'shop'), ['my_pub']);
  const after = w.commits;
  await until('the writer to go on after the cleanup', () => w.commits > after + 5);

  // Without its replication the copy misses what the writer committed since: migrate --online again
  // refuses it (a slot made now would only carry what comes next) and says how to redo it.
  const again = await runCli(migrateArgs(src, dst, ws, ['--online']), cliEnv(src, dst));
  assert.equal(again.code, 1, again.output);
  assert.match(again.output, /shop was copied without replication .*--redo-db/, again.output);
  assert.deepEqual(await slots(src), ['other_slot'], 'no slot made for a copy that cannot be caught up');
  assert.deepEqual(await subscriptions(dst), []);
  // --redo-db copies it afresh online: one new slot, subscribed, applying the writer's commits.
  const redo = await runCli(migrateArgs(src, dst, ws, ['--online', '--redo-db', 'shop']), cliEnv(src, dst));
  assert.equal(redo.code, 0, redo.output);
  const rec2 = (await onlineJson(ws, 'shop'))!;
  assert.notEqual(rec2.slot, undefined);
  assert.deepEqual(await slots(src), ['other_slot', rec2.slot].sort());
  assert.deepEqual(await subscriptions(dst), [rec2.subscription]);
  await targetCatchesUp(dst, w);
  // --redo-db once more (its earlier redo verified, so a run without it, then with it): the live
  // replication is dropped before the target copy, so no slot is left behind and the drop succeeds.
  assert.equal((await runCli(migrateArgs(src, dst, ws, ['--online']), cliEnv(src, dst))).code, 0);
  const redo2 = await runCli(migrateArgs(src, dst, ws, ['--online', '--redo-db', 'shop']), cliEnv(src, dst));
  assert.equal(redo2.code, 0, redo2.output);
  const rec3 = (await onlineJson(ws, 'shop'))!;
  assert.deepEqual(await slots(src), ['other_slot', rec3.slot].sort(), 'the earlier slot was dropped, one new slot');
  assert.deepEqual(await subscriptions(dst), [rec3.subscription]);
  await targetCatchesUp(dst, w);
  const r = await w.stop();
  assert.equal(r.endedBy, 'stopped');
  assert.equal(r.terminated, 0, 'no session of the application was ended');
});
