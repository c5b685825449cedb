/**
 * Across major versions: a PostgreSQL 12 source onto a PostgreSQL 18 target, driven by the
 * installed PostgreSQL 15 client programs.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs/promises';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { startCluster, type Cluster } from '../harness/cluster.ts';
import { seedSample, type SeedResult } from '../harness/seed.ts';
import type { RunSummary } from '../../src/events.ts';
import {
  assertSameData,
  autoConf,
  baseArgs,
  describeRun,
  makeDirs,
  migrateSessions,
  prepareTargetAutoConf,
  removeDirs,
  runCli,
  stopAll,
  userDatabases,
  type Dirs,
} from './cli.ts';

let src: Cluster | undefined;
let dst: Cluster | undefined;
let dirs: Dirs | undefined;
let seed: SeedResult;

before(async () => {
  [src, dst, dirs] = await Promise.all([startCluster({ version: '12', name: 'xv-src12' }), startCluster({ version: '18', name: 'xv-dst18' }), makeDirs('xv')]);
  assert.equal(src.major, 12);
  assert.equal(dst.major, 18);
  seed = await seedSample(src);
  await prepareTargetAutoConf(dst);
});

after(async () => {
  await stopAll([src, dst]);
  await removeDirs(dirs);
});

test('12 → 18 with the 15 client programs: exit 0, every table equal', async () => {
  const confBefore = await autoConf(dst!);
  // Two jobs per database: the stream path restores post-data with -j from a file; ranges are asked
  // for every table but need a 14+ source, so none is copied in ranges.
  const reportFile = path.join(dirs!.stateDir, 'report.json');
  const r = await runCli([
    ...baseArgs(src!, dst!, dirs!),
    '--exclude-db',
    'noconn',
    '--dump-jobs',
    '2',
    '--restore-jobs',
    '2',
    '--split-table-size',
    '8kB',
    '--report',
    reportFile,
  ]);
  assert.equal(r.exitCode, 0, describeRun(r));
  assert.match(r.stderr, /client programs 15\./, describeRun(r));
  assert.match(r.stdout, new RegExp(`${seed.databases.length} of ${seed.databases.length} databases verified; globals: done`), describeRun(r));

  const onTarget = await userDatabases(dst!);
  for (const db of seed.databases) {
    assert.ok(onTarget.includes(db), `${db} on the target`);
    const counts = await assertSameData(src!, dst!, db);
    for (const [table, n] of Object.entries(seed.expectedCounts[db] ?? {})) assert.equal(counts.get(table), n, `${db}.${table}`);
  }
  assert.ok(!onTarget.includes('noconn'));
  const report = JSON.parse(await fs.readFile(reportFile, 'utf8')) as RunSummary;
  assert.deepEqual(
    report.databases.filter((d) => d.splitTables !== undefined),
    [],
    'no ranges from a 12 source',
  );

  const ownersSql = `select d.datname, r.rolname from pg_database d join pg_roles r on r.oid = d.datdba where d.datname = any($1) order by 1`;
  assert.deepEqual(await dst!.query(ownersSql, [seed.databases]), await src!.query(ownersSql, [seed.databases]));
  const roles = await dst!.query<{ rolname: string }>(`select rolname from pg_roles where rolname = any($1) order by 1`, [seed.roles]);
  assert.deepEqual(
    roles.map((x) => x.rolname),
    [...seed.roles].sort(),
  );
  assert.deepEqual(await autoConf(dst!), confBefore, 'tuning reverted');
  assert.deepEqual(await migrateSessions(dst!), []);
});
