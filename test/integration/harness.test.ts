import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { after, test } from 'node:test';
import pg from 'pg';
import { startCluster, type Cluster } from '../harness/cluster.ts';
import { dumpRows, seedSample, tableCounts } from '../harness/seed.ts';

const started: Cluster[] = [];
after(async () => {
  await Promise.all(started.map((c) => c.stop()));
});

test('harness: start system/12/18 clusters, seed, auth, stop', async () => {
  const t0 = Date.now();
  const [sys, v12, v18] = await Promise.all([
    startCluster({ version: 'system', name: 'hsys' }),
    startCluster({ version: '12', name: 'h12', password: 'p12 with spaces/&' }),
    startCluster({ version: '18', name: 'h18' }),
  ]);
  started.push(sys, v12, v18);
  console.log(`3 clusters started in ${Date.now() - t0} ms`);

  assert.equal(sys.major, 15);
  assert.equal(v12.major, 12);
  assert.equal(v18.major, 18);
  for (const c of [sys, v12, v18]) {
    const [row] = await c.query<{ v: string }>('select current_setting($$server_version_num$$) as v');
    assert.equal(Math.floor(Number(row!.v) / 10000), c.major);
    assert.match(c.systemIdentifier, /^\d+$/);
    const [enc] = await c.query<{ e: string }>("select pg_encoding_to_char(encoding) as e from pg_database where datname = 'template1'");
    assert.equal(enc!.e, 'UTF8');
    assert.equal(new Set([sys.port, v12.port, v18.port]).size, 3);
  }
  assert.notEqual(sys.systemIdentifier, v12.systemIdentifier);

  // Seeding works on the system server (and on the oldest supported one).
  const t1 = Date.now();
  const seed = await seedSample(sys);
  console.log(`seeded in ${Date.now() - t1} ms`);
  assert.deepEqual(seed.noConnectDatabases, ['noconn']);
  const dbs = await sys.query<{ datname: string; datallowconn: boolean }>('select datname, datallowconn from pg_database');
  for (const d of seed.databases)
    assert.ok(
      dbs.some((r) => r.datname === d && r.datallowconn),
      d,
    );
  assert.ok(dbs.some((r) => r.datname === 'noconn' && !r.datallowconn));

  for (const db of seed.databases) {
    const counts = await tableCounts(sys, db);
    for (const [table, n] of Object.entries(seed.expectedCounts[db] ?? {})) {
      assert.equal(counts.get(table), n, `${db} ${table}`);
      assert.ok(n > 0);
    }
    if (db === 'empty_db') assert.equal(counts.size, 0);
  }
  const analytics = await tableCounts(sys, 'analytics');
  for (const part of ['events_2024_01', 'events_2024_02', 'events_2024_03', 'events_default']) {
    assert.ok((analytics.get(`public.${part}`) ?? 0) > 0, part);
  }
  assert.ok([...(await tableCounts(sys, 'My "Odd".DB/ñ')).keys()].includes('"Sch.ema"."Tab le"'));

  // Same seed on PG 12 gives identical row hashes.
  await seedSample(v12);
  for (const [db, table] of [
    ['shop', 'public.orders'],
    ['analytics', 'public.events'],
    ['My "Odd".DB/ñ', '"Sch.ema"."Tab le"'],
  ] as const) {
    assert.equal(await dumpRows(sys, db, table), await dumpRows(v12, db, table), `${db} ${table}`);
  }

  // app_owner can log in with its password.
  const [who] = await sys.withClient(async (c) => (await c.query('select current_user as u')).rows, 'shop');
  assert.equal(who.u, 'postgres');
  const app = new pg.Client({ ...sys.connectionConfig('shop'), user: 'app_owner', password: seed.appOwnerPassword });
  await app.connect();
  await app.end();

  // Wrong passwords are rejected.
  for (const c of [sys, v12, v18]) {
    const bad = new pg.Client({ ...c.connectionConfig(), password: 'wrong' });
    await assert.rejects(bad.connect(), /password authentication failed/);
    await bad.end().catch(() => undefined);
  }
  assert.equal(v12.psqlEnv().PGPASSWORD, 'p12 with spaces/&');
  const viaUrl = new pg.Client({ connectionString: v12.url() });
  await viaUrl.connect();
  await viaUrl.end();

  // Stop: data dirs are gone, stop is idempotent.
  const t2 = Date.now();
  await Promise.all([sys.stop(), v12.stop(), v18.stop()]);
  console.log(`stopped in ${Date.now() - t2} ms`);
  await sys.stop();
  for (const c of [sys, v12, v18]) {
    assert.equal(existsSync(c.dataDir), false);
    assert.equal(existsSync(c.baseDir), false);
    assert.equal(c.running, false);
  }
});
