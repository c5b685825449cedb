/**
 * A full migration of the seeded sample server (PostgreSQL 15 → 15): data, roles, grants,
 * sequences, views, partitions, each database's properties, the target's own user left alone,
 * the tuning reverted exactly, the summary, and a second run that does nothing.
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import * as fs from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import pg from 'pg';
import { startCluster, type Cluster } from '../harness/cluster.ts';
import { ODD_DB_NAME, seedSample, type SeedResult } from '../harness/seed.ts';
import {
  assertSameData,
  autoConf,
  baseArgs,
  clientPrograms,
  describeRun,
  makeDirs,
  markersDir,
  migrateSessions,
  passwordEnv,
  prepareTargetAutoConf,
  removeDirs,
  runCli,
  stopAll,
  userDatabases,
  type CliResult,
  type Dirs,
} from './cli.ts';

let src: Cluster | undefined;
let dst: Cluster | undefined;
let dirs: Dirs | undefined;
let seed: SeedResult;
let migrated: string[] = [];
let confBefore: string[] = [];
let first: CliResult;

const SHOP_COMMENT = 'the shop — "main" db';

before(async () => {
  [src, dst, dirs] = await Promise.all([startCluster({ name: 'mig-src' }), startCluster({ name: 'mig-dst' }), makeDirs('migrate')]);
  seed = await seedSample(src);
  // Database properties that pg_restore --create must carry over (step 6).
  await src.query(`
    ALTER DATABASE shop CONNECTION LIMIT 7;
    ALTER DATABASE shop SET work_mem = '8MB';
    ALTER ROLE "a b" IN DATABASE shop SET work_mem = '16MB';
    GRANT CONNECT, TEMP ON DATABASE shop TO reader;
    COMMENT ON DATABASE shop IS '${SHOP_COMMENT.replace(/'/g, "''")}';
  `);
  await src.query(`CREATE DATABASE coll_db TEMPLATE template0 ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C'`);
  await src.query(
    `CREATE TABLE words (id int PRIMARY KEY, w text NOT NULL);
     INSERT INTO words SELECT g, chr(65 + g % 26) || lower(md5(g::text)) FROM generate_series(1, 300) g;
     CREATE INDEX words_w_idx ON words (w);`,
    undefined,
    'coll_db',
  );
  migrated = [...seed.databases, 'coll_db'];

  await prepareTargetAutoConf(dst);
  confBefore = await autoConf(dst);
  assert.ok(confBefore.includes('maintenance_work_mem=77MB'), confBefore.join(', '));
  assert.ok(!confBefore.some((l) => l.startsWith('fsync=')), confBefore.join(', '));

  // Passwords from the environment this time.
  first = await runCli(baseArgs(src, dst, dirs, { passwords: 'env' }), { env: passwordEnv(src, dst) });
});

after(async () => {
  await stopAll([src, dst]);
  await removeDirs(dirs);
});

describe('full migration with a database that refuses connections', () => {
  test('exit 1 only because noconn was not migrated; every other database verified', () => {
    assert.equal(first.exitCode, 1, describeRun(first));
    assert.match(first.stderr, /not migrated: noconn/, describeRun(first));
    assert.match(first.stdout, /NOT MIGRATED noconn/, describeRun(first));
    assert.doesNotMatch(first.stdout, /FAILED|globals error/, describeRun(first));
    assert.match(first.stdout, new RegExp(`${migrated.length} of ${migrated.length + 1} databases verified; globals: done`), describeRun(first));
    const lines = first.stdout.split('\n');
    for (const db of migrated) {
      assert.ok(
        lines.some((l) => l.includes(db) && /\bverified\b/.test(l)),
        `summary row "${db} … verified"\n${first.stdout}`,
      );
    }
    assert.ok(
      lines.some((l) => l.includes('noconn') && l.includes('not migrated')),
      first.stdout,
    );
    assert.match(first.stdout, /sync/, 'fsync reminder printed');
  });

  test("the summary's Rows column counts each row once (a partitioned table's rows are not counted twice)", () => {
    const rowsOf = (db: string): string | undefined => {
      const line = first.stdout.split('\n').find((l) => l.split('│')[1]?.trim() === db);
      return line?.split('│')[6]?.trim();
    };
    const fmt = (n: number): string => n.toLocaleString('en-US');
    const expected = (db: string): number => Object.values(seed.expectedCounts[db] ?? {}).reduce((a, b) => a + b, 0);
    assert.equal(rowsOf('shop'), fmt(expected('shop')), first.stdout);
    assert.equal(rowsOf(ODD_DB_NAME), fmt(expected(ODD_DB_NAME)), first.stdout);
    // analytics holds 3,000 rows, all in the partitions of events.
    assert.equal(rowsOf('analytics'), fmt(expected('analytics')), first.stdout);
  });

  test('every migratable database is on the target, noconn is not', async () => {
    const onTarget = await userDatabases(dst!);
    for (const db of migrated) assert.ok(onTarget.includes(db), `${db} on the target (has: ${onTarget.join(', ')})`);
    assert.ok(!onTarget.includes('noconn'));
  });

  test('every table has the same count and the same rows', async () => {
    for (const db of migrated) {
      const counts = await assertSameData(src!, dst!, db);
      for (const [table, n] of Object.entries(seed.expectedCounts[db] ?? {})) assert.equal(counts.get(table), n, `${db}.${table}`);
    }
    assert.equal((await assertSameData(src!, dst!, 'coll_db')).get('public.words'), 300);
  });

  test('roles, memberships, passwords and grants came across', async () => {
    const roles = await dst!.query<{ rolname: string; rolcanlogin: boolean; rolcreatedb: boolean }>(
      `select rolname, rolcanlogin, rolcreatedb from pg_roles where rolname = any($1) order by rolname`,
      [seed.roles],
    );
    assert.deepEqual(
      roles.map((r) => r.rolname),
      [...seed.roles].sort(),
    );
    assert.ok(roles.find((r) => r.rolname === 'postgres2')!.rolcreatedb);
    const [m] = await dst!.query<{ m: boolean }>(`select pg_has_role('app_owner', 'reader', 'member') as m`);
    assert.equal(m!.m, true, 'app_owner is a member of reader');
    // Passwords of ordinary roles are copied: log in on the target with them.
    for (const [user, password] of [
      ['app_owner', seed.appOwnerPassword],
      ['postgres2', 'postgres2_pw'],
    ] as const) {
      const c = new pg.Client({ host: dst!.host, port: dst!.port, user, password, database: 'shop' });
      await c.connect();
      await c.end();
    }
    const [g] = await dst!.query<{ t: boolean; v: boolean; o: boolean }>(
      `select has_table_privilege('reader', 'public.customers', 'SELECT') as t,
              has_table_privilege('reader', 'public.customer_totals', 'SELECT') as v,
              has_table_privilege('reader', 'public.orders', 'INSERT') as o`,
      undefined,
      'shop',
    );
    assert.deepEqual(g, { t: true, v: true, o: false });
    const [og] = await dst!.query<{ s: boolean; t: boolean }>(
      `select has_schema_privilege('reader', 'Sch.ema', 'USAGE') as s, has_table_privilege('reader', '"Sch.ema"."Tab le"', 'SELECT') as t`,
      undefined,
      ODD_DB_NAME,
    );
    assert.deepEqual(og, { s: true, t: true });
  });

  test("the target's own user keeps its password", async () => {
    // dst.query logs in with the target's original password.
    const [r] = await dst!.query<{ u: string }>('select current_user as u');
    assert.equal(r!.u, 'postgres');
    const c = new pg.Client({ host: dst!.host, port: dst!.port, user: 'postgres', password: src!.password, database: 'postgres' });
    await assert.rejects(c.connect(), (err: { code?: string }) => err.code === '28P01', "the source's postgres password must not work on the target");
    await c.end().catch(() => undefined);
  });

  test('sequences, views, identity columns and partitions', async () => {
    const seqSql = `select schemaname || '.' || sequencename as s, last_value::text as v from pg_sequences order by 1`;
    const [a, b] = await Promise.all([src!.query(seqSql, undefined, 'shop'), dst!.query(seqSql, undefined, 'shop')]);
    assert.ok(a.length >= 2, JSON.stringify(a));
    assert.deepEqual(b, a);
    assert.ok(
      a.every((r: { v: string | null }) => r.v !== null && Number(r.v) > 0),
      JSON.stringify(a),
    );
    // The sequences continue where the source stopped.
    assert.equal(Number(b.find((r: { s: string }) => r.s === 'public.order_id_seq')?.v), seed.expectedCounts.shop!['public.orders']);

    const viewSql = `select viewname, definition from pg_views where schemaname = 'public' order by 1`;
    const [va, vb] = await Promise.all([src!.query(viewSql, undefined, 'shop'), dst!.query(viewSql, undefined, 'shop')]);
    assert.deepEqual(
      vb.map((v: { viewname: string }) => v.viewname),
      ['customer_totals'],
    );
    assert.deepEqual(vb, va);

    const partSql = `select c.relname, c.relkind::text, c.relispartition, coalesce(pg_get_expr(c.relpartbound, c.oid), '') as bound,
                            coalesce((select p.relname from pg_inherits i join pg_class p on p.oid = i.inhparent where i.inhrelid = c.oid), '') as parent
                     from pg_class c where c.relname like 'events%' and c.relkind in ('r', 'p') order by 1`;
    const [pa, pb] = await Promise.all([src!.query(partSql, undefined, 'analytics'), dst!.query(partSql, undefined, 'analytics')]);
    assert.deepEqual(pb, pa);
    assert.equal(pb.find((r: { relname: string }) => r.relname === 'events')?.relkind, 'p');
    assert.equal(pb.filter((r: { parent: string }) => r.parent === 'events').length, 4);
  });

  test("each database's properties: owner, encoding, locale, connection limit, ACL, settings, comment", async () => {
    const propsSql = `
      select d.datname, r.rolname as owner, pg_encoding_to_char(d.encoding) as encoding, d.datcollate, d.datctype,
             d.datlocprovider::text as provider, d.datconnlimit, d.datacl::text as acl,
             shobj_description(d.oid, 'pg_database') as comment
      from pg_database d join pg_roles r on r.oid = d.datdba
      where d.datname = any($1) order by d.datname`;
    const settingsSql = `
      select d.datname, coalesce(r.rolname, '') as role, s.setconfig::text as config
      from pg_db_role_setting s join pg_database d on d.oid = s.setdatabase left join pg_roles r on r.oid = s.setrole
      where d.datname = any($1) order by 1, 2`;
    const [pa, pb, sa, sb] = await Promise.all([
      src!.query(propsSql, [migrated]),
      dst!.query(propsSql, [migrated]),
      src!.query(settingsSql, [migrated]),
      dst!.query(settingsSql, [migrated]),
    ]);
    assert.equal(pa.length, migrated.length);
    assert.deepEqual(pb, pa);
    assert.deepEqual(sb, sa);

    const shop = pb.find((r: { datname: string }) => r.datname === 'shop');
    assert.equal(shop.owner, 'app_owner');
    assert.equal(shop.datconnlimit, 7);
    assert.match(shop.acl, /reader=Tc\//);
    assert.equal(shop.comment, SHOP_COMMENT);
    const coll = pb.find((r: { datname: string }) => r.datname === 'coll_db');
    assert.equal(coll.datcollate, 'C');
    assert.equal(coll.datctype, 'C');
    assert.equal(coll.encoding, 'UTF8');
    assert.deepEqual(
      sb.filter((r: { datname: string }) => r.datname === 'shop'),
      [
        { datname: 'shop', role: '', config: '{work_mem=8MB}' },
        { datname: 'shop', role: 'a b', config: '{work_mem=16MB}' },
      ],
    );
  });

  test('the tuning is reverted exactly and nothing of the run is left', async () => {
    // maintenance_work_mem during the run: the target's shared_buffers (64 MB) shared by the builds, at least 64 MB.
    assert.match(first.stderr, /tuning: start — .*maintenance_work_mem=64MB/, first.stdout);
    assert.deepEqual(await autoConf(dst!), confBefore);
    const [s] = await dst!.query<{ fsync: string; mwm: string }>(`select current_setting('fsync') as fsync, current_setting('maintenance_work_mem') as mwm`);
    assert.deepEqual(s, { fsync: 'on', mwm: '77MB' });
    assert.ok(!existsSync(path.join(markersDir(dirs!), 'tuning.json')));
    assert.deepEqual(await migrateSessions(src!), []);
    assert.deepEqual(await migrateSessions(dst!), []);
    assert.deepEqual(await clientPrograms(dirs!), []);
  });
});

describe('runs after a completed migration', () => {
  /** Dump files (files path) and step markers: a step redone rewrites them. */
  async function dumpMtimes(): Promise<Record<string, number>> {
    const out: Record<string, number> = {};
    for (const ent of await fs.readdir(dirs!.dumpRoot, { recursive: true })) {
      out[ent] = (await fs.stat(path.join(dirs!.dumpRoot, ent))).mtimeMs;
    }
    const markers = path.join(dirs!.stateDir, 'pg_migrate_state', 'databases');
    for (const ent of await fs.readdir(markers, { recursive: true })) {
      if (/\/(dumped|done|verify|restore_started)$/.test(ent)) out[`marker:${ent}`] = (await fs.stat(path.join(markers, ent))).mtimeMs;
    }
    return out;
  }

  test('--exclude-db noconn: exit 0 without redoing anything, noconn named as left out (passwords as flags, with a warning)', async () => {
    const before = await dumpMtimes();
    assert.ok(Object.keys(before).length > 0);
    const r = await runCli([...baseArgs(src!, dst!, dirs!), '--exclude-db', 'noconn']);
    assert.equal(r.exitCode, 0, describeRun(r));
    assert.doesNotMatch(r.stderr, /\] (dumping|streaming|restoring|counting source)/, describeRun(r));
    // Not a failure, but not skipped in silence either.
    assert.doesNotMatch(`${r.stdout}\n${r.stderr}`, /NOT MIGRATED noconn|not migrated: noconn/, describeRun(r));
    assert.match(r.stdout, /left out noconn: excluded by --exclude-db/, describeRun(r));
    // A password on the command line is visible in ps: said once per flag.
    assert.match(r.stderr, /warning: --from-pass puts a password on the command line/, describeRun(r));
    assert.match(r.stderr, /warning: --to-pass puts a password on the command line/, describeRun(r));
    assert.match(r.stdout, new RegExp(`${migrated.length} of ${migrated.length} databases verified`), describeRun(r));
    assert.deepEqual(await dumpMtimes(), before, 'the dumps were not rewritten');
    assert.deepEqual(await autoConf(dst!), confBefore);
  });

  test('the same command again is a no-op that exits 0', async () => {
    const before = await dumpMtimes();
    const r = await runCli([...baseArgs(src!, dst!, dirs!), '--exclude-db', 'noconn']);
    assert.equal(r.exitCode, 0, describeRun(r));
    assert.doesNotMatch(r.stderr, /\] (dumping|streaming|restoring)/, describeRun(r));
    assert.deepEqual(await dumpMtimes(), before);
    for (const db of migrated) await assertSameData(src!, dst!, db);
    assert.deepEqual(await autoConf(dst!), confBefore);
  });
});
