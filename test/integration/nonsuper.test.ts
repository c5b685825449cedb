/**
 * Servers where the tool is not superuser (managed services): a target user with CREATEDB and
 * CREATEROLE only, a source user granted pg_read_all_data; and the preflight problems that name the
 * privilege missing.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import * as fs from 'node:fs/promises';
import { startCluster, type Cluster } from '../harness/cluster.ts';
import { assertSameData, autoConf, prepareTargetAutoConf, userDatabases } from './cli.ts';
import { makeWorkspace, migrateArgs, runCli, startCli } from './delayed-helpers.ts';
import { fixtures, killRun, waitDuring } from './safety-helpers.ts';

const { setUp } = fixtures();

const READER_PASS = 'reader-secret-1';
const MIGRATOR_PASS = 'migrator-secret-2';

/** The source as a managed service has it: roles, a database owned by an application role, a reader. */
async function seedSource(src: Cluster): Promise<void> {
  await src.query(`create role app login password 'app-pass'`);
  await src.query(`create role ops login replication bypassrls password 'ops-pass'`);
  await src.query(`create role analyst nologin`);
  await src.query(`grant analyst to ops`);
  await src.query(`create role reader login password '${READER_PASS}'`);
  await src.query(`grant pg_read_all_data to reader`);
  await src.query(`create database shop owner app connection limit 50`);
  await src.query(`alter database shop set work_mem = '8MB'`);
  await src.query(`comment on database shop is 'the shop'`);
  await src.query(
    `set role app;
     create table customers (id int primary key, name text not null);
     create table orders (id int primary key, customer int references customers, total numeric);
     create index on orders (customer);
     create function touch() returns trigger language plpgsql as $$ begin new.total = coalesce(new.total, 0); return new; end $$;
     create trigger orders_touch before insert on orders for each row execute function touch();
     insert into customers select g, 'c' || g from generate_series(1, 500) g;
     insert into orders select g, 1 + g % 500, g * 1.5 from generate_series(1, 3000) g;
     grant select on customers to analyst;`,
    [],
    'shop',
  );
}

/** The target as a managed service has it: an admin user with CREATEDB and CREATEROLE, member of a provider role. */
async function seedTarget(dst: Cluster, attributes = 'createdb createrole'): Promise<void> {
  await dst.query(`create role provider_admin nologin`);
  await dst.query(`create role migrator login ${attributes} password '${MIGRATOR_PASS}' in role provider_admin`);
}

const users = ['--from-user', 'reader', '--to-user', 'migrator'];
const env = { PG_MIGRATE_FROM_PASS: READER_PASS, PG_MIGRATE_TO_PASS: MIGRATOR_PASS };

/** A role's attributes, password (set or not) and memberships on a server, read as its superuser. */
async function roleOn(
  c: Cluster,
  name: string,
): Promise<{ login: boolean; replication: boolean; bypassrls: boolean; password: boolean; memberOf: string[] } | undefined> {
  const [row] = await c.query<{ login: boolean; replication: boolean; bypassrls: boolean; password: boolean; member_of: string[] }>(
    `select rolcanlogin as login, rolreplication as replication, rolbypassrls as bypassrls, rolpassword is not null as password,
            array(select b.rolname::text from pg_auth_members m join pg_roles b on b.oid = m.roleid where m.member = a.oid order by 1) as member_of
       from pg_authid a where rolname = $1`,
    [name],
  );
  return row && { login: row.login, replication: row.replication, bypassrls: row.bypassrls, password: row.password, memberOf: row.member_of };
}

for (const dataPath of ['stream', 'files'] as const) {
  test(`non-superuser on both sides (${dataPath}): verified, roles without passwords listed, attributes not granted named, no tuning, owners kept`, async () => {
    const { src, dst, ws } = await setUp(`nonsuper-${dataPath}`);
    await Promise.all([seedSource(src), seedTarget(dst), prepareTargetAutoConf(dst)]);
    const confBefore = await autoConf(dst);
    const pathArgs =
      dataPath === 'stream' ? ['--data-path', 'stream', '--split-table-size', '16kB', '--dump-jobs', '2', '--restore-jobs', '2'] : ['--data-path', 'files'];

    // plan: what changes, as warnings; the run can start.
    const plan = await runCli(migrateArgs(src, dst, ws, ['plan', ...users, ...pathArgs]), env);
    assert.equal(plan.code, 0, plan.output);
    assert.match(plan.output, /the target will not be tuned for the load: the target user is not a superuser/, plan.output);
    assert.match(plan.output, /parameter group .*fsync = off, synchronous_commit = off, full_page_writes = off, maintenance_work_mem = \d+MB/, plan.output);
    assert.match(plan.output, /role ops will be created without REPLICATION, BYPASSRLS/, plan.output);
    assert.match(plan.output, /pg_restore runs without --disable-triggers/, plan.output);
    assert.match(plan.output, /grants itself membership in app for the run/, plan.output);

    const r = await runCli(migrateArgs(src, dst, ws, [...users, ...pathArgs]), env);
    assert.equal(r.code, 0, r.output);
    assert.match(r.output, /1 of 1 databases verified; globals: done/, r.output);
    assert.deepEqual(await userDatabases(dst), ['shop']);
    await assertSameData(src, dst, 'shop');
    if (dataPath === 'stream') assert.match(r.output, /"public"\."orders" in ranges/, r.output);

    // Roles: created, without passwords (listed), without the attributes only a superuser gives (named).
    assert.match(r.output, /login roles created without a password \(the source user may not read passwords\): app, ops, reader;/, r.output);
    assert.match(r.output, /role ops: not granted REPLICATION/, r.output);
    assert.match(r.output, /role ops: not granted BYPASSRLS/, r.output);
    const ops = await roleOn(dst, 'ops');
    assert.deepEqual(ops, { login: true, replication: false, bypassrls: false, password: false, memberOf: ['analyst'] });
    assert.equal((await roleOn(dst, 'app'))?.password, false);
    assert.deepEqual((await roleOn(dst, 'reader'))?.memberOf, ['pg_read_all_data']);
    // Owners as on the source; the membership the target user took for it is revoked.
    const [owners] = await dst.query<{ db: string; t: string; f: string }>(
      `select (select pg_get_userbyid(datdba) from pg_database where datname = 'shop') as db,
              (select pg_get_userbyid(relowner) from pg_class where relname = 'orders') as t,
              (select pg_get_userbyid(proowner) from pg_proc where proname = 'touch') as f`,
      [],
      'shop',
    );
    assert.deepEqual(owners, { db: 'app', t: 'app', f: 'app' });
    // The database's properties.
    const [props] = await dst.query<{ limit: number; settings: string[]; comment: string }>(
      `select datconnlimit as limit, (select setconfig from pg_db_role_setting where setdatabase = d.oid and setrole = 0) as settings,
              shobj_description(d.oid, 'pg_database') as comment
         from pg_database d where datname = 'shop'`,
    );
    assert.deepEqual(props, { limit: 50, settings: ['work_mem=8MB'], comment: 'the shop' });
    assert.deepEqual((await roleOn(dst, 'migrator'))?.memberOf, ['provider_admin'], 'the memberships granted for the run are revoked');
    assert.match(r.output, /revoked the target user's memberships granted for the run: app/, r.output);
    // Triggers and foreign keys are there and work.
    await assert.rejects(dst.query('insert into orders values (999999, 123456, 1)', [], 'shop'), /foreign key/);
    const [touched] = await dst.query<{ total: string }>('insert into orders values (999999, 1, null) returning total', [], 'shop');
    assert.equal(touched?.total, '0');
    // No tuning: the target's configuration is as it was.
    assert.deepEqual(await autoConf(dst), confBefore, 'the target configuration is unchanged');
  });
}

test('preflight (exit 3) names what a privilege lacks: a target user without CREATEDB, tables the source user cannot read, a deferred load', async () => {
  const { src, dst, ws } = await setUp('nonsuper-missing');
  await Promise.all([seedSource(src), seedTarget(dst, 'createrole')]);
  await src.query(
    `set role app;
     create table secret (id int primary key, owner_name text);
     insert into secret values (1, 'a'), (2, 'b');
     alter table secret enable row level security;
     create policy mine on secret using (owner_name = current_user);`,
    [],
    'shop',
  );
  await src.query('alter database shop set log_min_duration_statement = 1000');
  await src.query(`set role app; select lo_from_bytea(0, 'app data'::bytea)`, [], 'shop');
  await src.query(`create function no_ddl() returns event_trigger language plpgsql as $$ begin end $$`, [], 'shop');
  await src.query('create event trigger audit_ddl on ddl_command_end execute function no_ddl()', [], 'shop');
  const r = await runCli(migrateArgs(src, dst, ws, [...users, '--delay-table-data', 'shop.orders']), env);
  assert.equal(r.code, 3, r.output);
  assert.match(r.output, /the target user "migrator" has no CREATEDB privilege, which creating the databases \(shop\) needs/, r.output);
  assert.match(r.output, /the source user "reader" cannot read every table of shop.*public\.secret \(row-level security applies \(no BYPASSRLS\)\)/, r.output);
  assert.match(r.output, /--delay-table-data needs a superuser target user: the deferred load into shop \(public\.orders\)/, r.output);
  assert.match(
    r.output,
    /shop: ALTER DATABASE shop SET log_min_duration_statement is a superuser-only setting that "migrator" may not set on the target/,
    r.output,
  );
  assert.doesNotMatch(r.output, /SET work_mem/, 'a setting any user may set is not named');
  assert.match(r.output, /the source user "reader" cannot read 1 large objects of shop \(pg_read_all_data covers them only from PostgreSQL 18\)/, r.output);
  assert.match(r.output, /shop has event triggers \(audit_ddl\), which only a superuser may create/, r.output);
  assert.doesNotMatch(r.output, /customers|public\.orders \(/, 'readable tables are not named');
  assert.deepEqual(await userDatabases(dst), [], 'nothing was created');
  assert.equal(await roleOn(dst, 'app'), undefined, 'no role was created');

  // A source user with SELECT on one table only: the others are named.
  await src.query(`create role narrow login password '${READER_PASS}'`);
  await src.query(`grant select on customers to narrow`, [], 'shop');
  await dst.query('alter role migrator createdb');
  const narrow = await runCli(migrateArgs(src, dst, ws, ['--from-user', 'narrow', '--to-user', 'migrator']), env);
  assert.equal(narrow.code, 3, narrow.output);
  assert.match(
    narrow.output,
    /the source user "narrow" cannot read every table of shop, .*public\.orders \(no SELECT privilege\), public\.secret \(no SELECT privilege\)/,
    narrow.output,
  );
  assert.doesNotMatch(narrow.output, /public\.customers \(/, narrow.output);
  assert.doesNotMatch(narrow.output, /CREATEDB/, narrow.output);
  assert.deepEqual(await userDatabases(dst), []);
});

test('PostgreSQL 18 target (CREATEROLE users administer the roles they create): owners given through ADMIN, grants it may not make named', async () => {
  const [src, dst, ws] = await Promise.all([
    startCluster({ version: 'system', name: 'nonsuper18-src' }),
    startCluster({ version: '18', name: 'nonsuper18-dst' }),
    makeWorkspace('nonsuper18'),
  ]);
  try {
    await Promise.all([seedSource(src), seedTarget(dst), prepareTargetAutoConf(dst)]);
    const confBefore = await autoConf(dst);
    const r = await runCli(migrateArgs(src, dst, ws, users), env);
    assert.equal(r.code, 0, r.output);
    assert.match(r.output, /1 of 1 databases verified; globals: done/, r.output);
    await assertSameData(src, dst, 'shop');
    // 16+: a CREATEROLE user may grant only roles it has ADMIN on (those it created): pg_read_all_data is named, not granted.
    assert.match(r.output, /role reader: not granted GRANT pg_read_all_data TO reader/, r.output);
    assert.deepEqual((await roleOn(dst, 'ops'))?.memberOf, ['analyst']);
    const [owner] = await dst.query<{ o: string }>("select pg_get_userbyid(relowner) as o from pg_class where relname = 'orders'", [], 'shop');
    assert.equal(owner?.o, 'app');
    // The SET membership taken for the run is revoked; the ADMIN option CREATE ROLE gave stays as it was.
    const [m] = await dst.query<{ set: boolean; admin: boolean }>(
      "select pg_has_role('migrator', 'app', 'SET') as set, pg_has_role('migrator', 'app', 'MEMBER WITH ADMIN OPTION') as admin",
    );
    assert.deepEqual(m, { set: false, admin: true });
    assert.deepEqual(await autoConf(dst), confBefore);
  } finally {
    await Promise.all([src.stop(), dst.stop()]);
    await fs.rm(ws.dir, { recursive: true, force: true });
  }
});

test('after a kill -9, the membership the run granted the target user is revoked by cleanup, and by the next run', async () => {
  const { src, dst, ws } = await setUp('nonsuper-kill');
  await Promise.all([seedSource(src), seedTarget(dst)]);
  await src.query(
    'set role app; create table big (id int primary key, v text); insert into big select g, md5(g::text) from generate_series(1, 1500000) g',
    [],
    'shop',
  );
  const memberOfApp = async (): Promise<boolean> => ((await roleOn(dst, 'migrator'))?.memberOf ?? []).includes('app');
  const args = migrateArgs(src, dst, ws, [...users, '--data-path', 'stream']);
  const first = startCli(args, env);
  await waitDuring(first, 'the grant of app to migrator', memberOfApp, { inconclusive: true });
  await killRun(first, ws, [src, dst]);
  assert.ok(await memberOfApp(), 'the killed run left the membership');
  // cleanup without the target names the record; against another server it is refused there, and
  // that server's own membership of the same names is left alone.
  const blind = await runCli(['cleanup', '--state-dir', ws.stateDir], env);
  assert.equal(blind.code, 1, blind.output);
  assert.match(blind.stderr, /role memberships an interrupted run granted the target user .*--to-host/, blind.output);
  const other = await startCluster({ name: 'nonsuper-other' });
  try {
    await seedTarget(other);
    await other.query('create role app nologin; grant app to migrator');
    const wrong = await runCli(['cleanup', '--to-host', other.host, '--to-port', String(other.port), '--to-user', 'migrator', '--state-dir', ws.stateDir], env);
    assert.equal(wrong.code, 1, wrong.output);
    assert.match(wrong.stderr, /on another target server \(system identifier/, wrong.output);
    assert.deepEqual((await roleOn(other, 'migrator'))?.memberOf, ['app', 'provider_admin'], "the other server's membership is left alone");
  } finally {
    await other.stop();
  }
  const c = await runCli(['cleanup', '--to-host', dst.host, '--to-port', String(dst.port), '--to-user', 'migrator', '--state-dir', ws.stateDir], env);
  assert.equal(c.code, 0, c.output);
  assert.match(c.stdout, /revoked the memberships an interrupted run had granted the target user: app/, c.output);
  assert.equal(await memberOfApp(), false);

  // Killed again, the next run revokes it at its start, grants it anew and revokes it at its end.
  const second = startCli(args, env);
  await waitDuring(second, 'the grant of app to migrator', memberOfApp, { inconclusive: true });
  await killRun(second, ws, [src, dst]);
  const third = await runCli(args, env);
  assert.equal(third.code, 0, third.output);
  assert.match(third.output, /revoked the memberships an interrupted earlier run had granted the target user: app/, third.output);
  assert.match(third.stdout, /1 of 1 databases verified/, third.output);
  assert.equal(await memberOfApp(), false);
});

test("objects owned by the source's superuser: refused with what to do; --no-owner gives them to the target user", async () => {
  const { src, dst, ws } = await setUp('nonsuper-noowner');
  await Promise.all([seedTarget(dst), src.query(`create role reader login password '${READER_PASS}'`)]);
  await src.query('grant pg_read_all_data to reader');
  await src.query('create database legacy');
  await src.query('create table t (id int primary key, v text); insert into t select g, md5(g::text) from generate_series(1, 2000) g', [], 'legacy');
  await src.query('create view v as select count(*) from t', [], 'legacy');

  const refused = await runCli(migrateArgs(src, dst, ws, [...users]), env);
  assert.equal(refused.code, 3, refused.output);
  assert.match(refused.output, /role postgres owns objects in legacy on the source and is a superuser on the target/, refused.output);
  assert.match(refused.output, /--no-owner/, refused.output);
  assert.deepEqual(await userDatabases(dst), []);

  const r = await runCli(migrateArgs(src, dst, ws, [...users, '--no-owner']), env);
  assert.equal(r.code, 0, r.output);
  assert.match(r.output, /--no-owner: every object restored is owned by the target user "migrator"/, r.output);
  await assertSameData(src, dst, 'legacy');
  const [owners] = await dst.query<{ db: string; t: string; v: string }>(
    `select (select pg_get_userbyid(datdba) from pg_database where datname = 'legacy') as db,
            (select pg_get_userbyid(relowner) from pg_class where relname = 't') as t,
            (select pg_get_userbyid(relowner) from pg_class where relname = 'v') as v`,
    [],
    'legacy',
  );
  assert.deepEqual(owners, { db: 'migrator', t: 'migrator', v: 'migrator' });
});
