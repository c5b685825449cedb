/**
 * `pg-migrate verify` and `migrate --verify checksum` (deferred tables too) against real servers: a migrated pair is equal;
 * one value changed on the target (same row count), a sequence advanced on the source and a large
 * object changed are each named; checksums agree across 12 → 18, 15 → 18 and 10 → 18 for every built-in type
 * the fixtures use.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs/promises';
import path from 'node:path';
import { after, test } from 'node:test';
import { startCluster, type Cluster } from '../harness/cluster.ts';
import { seedSample } from '../harness/seed.ts';
import type { RunSummary } from '../../src/events.ts';
import type { ServerComparison } from '../../src/pipeline/compare.ts';
import pg from 'pg';
import { addChecksums, formatChecksum, runChecksum } from '../../src/pipeline/checksum.ts';
import { pageRanges } from '../../src/transfer/ranges.ts';
import { stopAll } from './cli.ts';
import { cliEnv, makeWorkspace, migrateArgs, runCli, serverFlags, type Workspace } from './delayed-helpers.ts';

const clusters: Cluster[] = [];
const workspaces: Workspace[] = [];
after(async () => {
  await stopAll(clusters);
  await Promise.all(workspaces.map((w) => fs.rm(w.dir, { recursive: true, force: true })));
});

async function workspace(label: string): Promise<Workspace> {
  const ws = await makeWorkspace(label);
  workspaces.push(ws);
  return ws;
}

/** Connection arguments of `verify` (it takes no state or dump options). */
const verifyArgs = (src: Cluster, dst: Cluster, extra: string[] = []): string[] => ['verify', ...serverFlags(src, dst), ...extra];

test('verify --checksum after migrate --verify checksum: equal, then a changed value, a sequence and a large object are named; migrate fails a database whose content differs', async () => {
  const [src, dst] = await Promise.all([startCluster({ name: 'vfy-src' }), startCluster({ name: 'vfy-dst' })]);
  clusters.push(src, dst);
  await seedSample(src);
  const loid = (await src.query<{ o: number }>("select lo_from_bytea(0, 'large object content') as o", [], 'shop'))[0]!.o;
  const ws = await workspace('vfy');
  const report = path.join(ws.dir, 'report.json');
  const env = cliEnv(src, dst);

  // analytics.events deferred: its partitions are hashed in the deferred phase (on the target, the rows its load committed).
  const m = await runCli(
    migrateArgs(src, dst, ws, ['--exclude-db', 'noconn', '--verify', 'checksum', '--delay-table-data', 'analytics.events', '--report', report]),
    env,
  );
  assert.equal(m.code, 0, m.output);
  const deferred = JSON.parse(
    await fs.readFile(path.join(ws.stateDir, 'pg_migrate_state', 'databases', 'analytics', 'src_checksums.delayed.json'), 'utf8'),
  ) as Record<string, string>;
  assert.deepEqual(Object.keys(deferred).sort(), [
    '"public"."events_2024_01"',
    '"public"."events_2024_02"',
    '"public"."events_2024_03"',
    '"public"."events_default"',
  ]);
  assert.equal(
    Object.values(deferred).reduce((n, c) => n + Number(c.split(':')[0]), 0),
    3000,
  );
  const summary = JSON.parse(await fs.readFile(report, 'utf8')) as RunSummary;
  const shop = summary.databases.find((d) => d.name === 'shop');
  assert.equal(shop?.verify?.mode, 'checksum', JSON.stringify(shop));
  assert.equal(shop.verify.checksummedTables, 2, JSON.stringify(shop));
  assert.equal(shop.verify.largeObjects, 1, JSON.stringify(shop));
  assert.equal(shop.verify.sequences, 2, JSON.stringify(shop));

  const args = verifyArgs(src, dst, ['--exclude-db', 'noconn', '--checksum']);
  const equal = await runCli(args, env);
  assert.equal(equal.code, 0, equal.output);
  assert.match(equal.stdout, /written to during the comparison will differ/, equal.output);
  assert.match(equal.stdout, /equal: \d+ database\(s\) compared/, equal.output);
  // A database that allows no connections cannot be compared: named, and not called equal (exit 1).
  const withNoconn = await runCli(verifyArgs(src, dst), env);
  assert.equal(withNoconn.code, 1, withNoconn.output);
  assert.match(withNoconn.stdout, /noconn/, withNoconn.output);

  // One value changed on the target, the row count unchanged: counts see nothing, checksums do.
  const before = (await dst.query<{ note: string | null }>('select note from orders where id = 7', [], 'shop'))[0]!.note;
  await dst.query("update orders set note = 'changed' where id = 7", [], 'shop');
  const counted = await runCli(verifyArgs(src, dst, ['--exclude-db', 'noconn']), env);
  assert.equal(counted.code, 0, counted.output);
  const changed = await runCli([...args, '--json'], env);
  assert.equal(changed.code, 1, changed.output);
  const cmp = JSON.parse(changed.stdout) as ServerComparison;
  assert.deepEqual(
    cmp.differences.map((d) => [d.database, d.difference]),
    [['shop', 'table "public"."orders": same row count (2000) but different content (checksums differ)']],
  );
  assert.match(cmp.notes.join(' '), /written to during the comparison/);
  await dst.query('update orders set note = $1 where id = 7', [before], 'shop');

  // The sum over page ranges (how a big table is hashed in parallel) is the whole table's, and the
  // target's rows in another physical order (row 7 moved by the updates) hash the same.
  const hashes = async (c: Cluster): Promise<{ whole: string; ranged: string }> => {
    const client = new pg.Client({ host: c.host, port: c.port, user: c.user, password: c.password, database: 'shop' });
    await client.connect();
    try {
      const whole = await runChecksum(client, '"public"."orders"', true, null, { floatDigits: 3 });
      const pages = Number((await client.query<{ p: string }>("select (pg_relation_size('public.orders') / 8192)::text as p")).rows[0]!.p);
      const parts = [];
      for (const range of pageRanges(pages, 3)) parts.push(await runChecksum(client, '"public"."orders"', true, range, { floatDigits: 3 }));
      assert.equal(parts.length, 3);
      return { whole: formatChecksum(whole), ranged: formatChecksum(addChecksums(parts)) };
    } finally {
      await client.end();
    }
  };
  const [hs, hd] = [await hashes(src), await hashes(dst)];
  assert.equal(hs.ranged, hs.whole);
  assert.equal(hd.ranged, hd.whole);
  assert.equal(hd.whole, hs.whole);
  assert.match(hs.whole, /^2000:/);

  // A sequence advanced on the source.
  await src.query("select nextval('order_id_seq')", [], 'shop');
  const seq = await runCli(args, env);
  assert.equal(seq.code, 1, seq.output);
  assert.match(seq.stdout, /shop: sequence "public"."order_id_seq": 2001 on the source, 2000 on the target/, seq.output);
  await dst.query("select setval('order_id_seq', 2001)", [], 'shop');

  // A large object changed on the target (same size).
  await dst.query("select lo_put($1::oid, 0, 'L')", [loid], 'shop');
  const lo = await runCli(args, env);
  assert.equal(lo.code, 1, lo.output);
  assert.match(lo.stdout, /shop: large objects: the same number \(1\) but different content/, lo.output);
  assert.doesNotMatch(lo.stdout, /order_id_seq|orders/, lo.output);

  // migrate --verify checksum fails a database whose content differs with equal counts: a generated
  // column through a function wrongly declared IMMUTABLE that reads a setting is recomputed on the
  // target (application_name: the restore's). Counting alone calls it verified.
  await src.query('create database gen');
  await src.query(
    `create function app() returns text immutable language sql as $$ select current_setting('application_name') $$;
     create table g (id int primary key, a text generated always as (app()) stored);
     insert into g (id) select generate_series(1, 10)`,
    [],
    'gen',
  );
  const genWs = await workspace('vfy-gen');
  const failed = await runCli(migrateArgs(src, dst, genWs, ['--include-db', 'gen', '--no-migrate-globals', '--verify', 'checksum']), env);
  assert.equal(failed.code, 1, failed.output);
  assert.match(failed.stdout, /table "public"."g": same row count \(10\) but different content/, failed.output);
  const countedOnly = await runCli(migrateArgs(src, dst, genWs, ['--include-db', 'gen', '--no-migrate-globals']), env);
  assert.equal(countedOnly.code, 0, countedOnly.output);

  // A database missing on the target, and an unreachable server: exit 3.
  await src.query('create database only_src');
  const missing = await runCli(verifyArgs(src, dst, ['--include-db', 'only_src']), env);
  assert.equal(missing.code, 1, missing.output);
  assert.match(missing.stdout, /only_src: database is missing on the target/, missing.output);
  const down = await runCli(['verify', '--from-host', src.host, '--from-port', String(src.port), '--to-host', dst.host, '--to-port', '1'], env);
  assert.equal(down.code, 3, down.output);
});

/** A table with every built-in type the fixtures use, in values whose text differs between versions unless pinned. */
const TYPES_TABLE = `
  create table everything (
    id int primary key, f4 real, f8 double precision, n numeric, ts timestamptz, t0 timestamp, d date, iv interval,
    j jsonb, js json, ia int[], ta text[], fa float8[], b bytea, t text, u uuid, bo boolean
  );
  insert into everything
    select g, (g / 7.0)::real, g * 0.1::float8 + 1e-7, g / 3.0, timestamptz '2024-03-10 01:30:00+05' + g * interval '37 minutes 11.123456 seconds',
           timestamp '1999-12-31 23:59:59.5' + g * interval '1 day', date '2000-02-28' + g, g * interval '1 mon 2 days 03:04:05.678',
           jsonb_build_object('n', g, 'f', g / 3.0, 'a', jsonb_build_array(1.50, 'x', null), 's', 'ñ "q"'), json_build_object('k', g, 'sp', ' a '),
           array[g, null, -g], array['a b', 'c"d', null, 'ñ☃'], array[g * 1.1::float8, 'NaN', '-Infinity'],
           decode(md5(g::text), 'hex') || '\\x00ff'::bytea, 'text ñ ☃ 𝄞 ' || g, md5(g::text)::uuid, g % 2 = 0
      from generate_series(1, 2000) g;
  insert into everything values (0, 'NaN', '-0', 'NaN', 'infinity', '-infinity', 'epoch', '-1 year -2 mons +3 days -04:05:06', 'null', '[]',
                                 '{}', '{}', '{1e308,1e-308}', '', '', null, null);`;

test('checksums agree across versions: 12 → 18, 15 → 18 and 10 → 18 (floats rounded alike), every built-in type of the fixtures', async () => {
  const [src10, src12, src15, dst] = await Promise.all([
    startCluster({ version: '10', name: 'vfy-src10' }),
    startCluster({ version: '12', name: 'vfy-src12' }),
    startCluster({ name: 'vfy-src15' }),
    startCluster({ version: '18', name: 'vfy-dst18' }),
  ]);
  clusters.push(src10, src12, src15, dst);
  for (const [src, db] of [
    [src12, 'types12'],
    [src15, 'types15'],
    [src10, 'types10'],
  ] as const) {
    await src.query(`create database ${db}`);
    await src.query(TYPES_TABLE, [], db);
    const ws = await workspace(`vfy-${db}`);
    const env = cliEnv(src, dst);
    const m = await runCli(migrateArgs(src, dst, ws, ['--include-db', db, '--no-migrate-globals', '--verify', 'checksum']), env);
    assert.equal(m.code, 0, `${db}: ${m.output}`);
    const v = await runCli(verifyArgs(src, dst, ['--include-db', db, '--checksum', '--json']), env);
    assert.equal(v.code, 0, `${db}: ${v.output}`);
    const cmp = JSON.parse(v.stdout) as ServerComparison;
    assert.deepEqual(
      cmp.databases.map((d) => [d.name, d.checksummed, d.rows]),
      [[db, 1, 2001]],
    );
    // Not vacuous: one float changed in its last bits is seen.
    await dst.query('update everything set f8 = f8 + 1e-15 where id = 5', [], db);
    const off = await runCli(verifyArgs(src, dst, ['--include-db', db, '--checksum']), env);
    assert.equal(off.code, 1, off.output);
    assert.match(off.stdout, /table "public"."everything": same row count \(2001\) but different content/, off.output);
  }
});
