/**
 * Servers where the tool is not superuser (managed services): a target user with CREATEDB and
 * CREATEROLE only, a source user granted pg_read_all_data; and the preflight problems that name the
 * privilege missing.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { Cluster } from '../harness/cluster.ts';
import { assertSameData, autoConf, prepareTargetAutoConf, userDatabases } from './cli.ts';
import { migrateArgs, runCli } from './delayed-helpers.ts';
import { fixtures } from './safety-helpers.ts';

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
  await src.query(`create database shop owner app`);
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

test('non-superuser on both sides: migrated and verified, roles without passwords listed, no tuning, attributes not granted named', async () => {
  const { src, dst, ws } = await setUp('nonsuper');
  await Promise.all([seedSource(src), seedTarget(dst), prepareTargetAutoConf(dst)]);
  const confBefore = await autoConf(dst);

  const plan = await runCli(migrateArgs(src, dst, ws, ['plan', ...users]), env);
  assert.equal(plan.code, 0, plan.output);
  assert.match(plan.stdout, /not be tuned/, plan.output);

  const r = await runCli(migrateArgs(src, dst, ws, users), env);
  console.log(r.output);
  assert.equal(r.code, 0, r.output);
  assert.deepEqual(await userDatabases(dst), ['shop']);
  await assertSameData(src, dst, 'shop');
  assert.deepEqual(await autoConf(dst), confBefore, 'the target configuration is unchanged');
});
