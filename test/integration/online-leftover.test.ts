/**
 * A replication slot of this pair that the state does not record (its state was removed): never
 * dropped by the tool, and named with what to do; a foreign key that a TRUNCATE would turn against the
 * replication, named before it happens (real servers, the CLI as a subprocess).
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs/promises';
import path from 'node:path';
import { test } from 'node:test';
import { cliEnv, migrateArgs, runCli } from './delayed-helpers.ts';
import { onlineFixtures, replicateShop, slots, subscriptions } from './online-helpers.ts';

const { setUp } = onlineFixtures();

test('a slot left by an online migration whose state was removed: the new run names it and how to drop it, and leaves it', async () => {
  const { src, dst, ws } = await setUp('onl-leftover');
  await replicateShop(src, dst, ws, 'create table items (id int primary key); insert into items select generate_series(1, 10)');
  const [slot] = await slots(src);
  assert.ok(slot);
  // The operator gives up by hand on the target (the subscription detached from its slot, the database
  // dropped) and removes the state; the slot stays on the source.
  const [sub] = await subscriptions(dst);
  await dst.query(`alter subscription "${sub!}" disable`, [], 'shop');
  await dst.query(`alter subscription "${sub!}" set (slot_name = none)`, [], 'shop');
  await dst.query(`drop subscription "${sub!}"`, [], 'shop');
  await dst.query('drop database shop');
  await fs.rm(path.join(ws.stateDir, 'pg_migrate_state'), { recursive: true, force: true });

  const again = await runCli(migrateArgs(src, dst, ws, ['--online']), cliEnv(src, dst));
  assert.equal(again.code, 1, again.output);
  assert.match(again.output, new RegExp(`the source already has a replication slot ${slot}, which this state does not record`), again.output);
  assert.match(again.output, new RegExp(`SELECT pg_drop_replication_slot\\('${slot}'\\)`), again.output);
  assert.deepEqual(await slots(src), [slot], 'the slot is left to the operator');
});

test('a table left out of the publication that references a published one: the run warns that a TRUNCATE of the published table would stop the replication', async () => {
  const { src, dst, ws } = await setUp('onl-fkwarn');
  const m = await replicateShop(
    src,
    dst,
    ws,
    'create table parent (id int primary key); create table child (p int references parent); insert into parent values (1); insert into child values (1)',
  );
  assert.match(
    m.stdout,
    /warning shop: public\.child is not replicated \(no primary key or replica identity; copied at cutover\) but references public\.parent/,
    m.output,
  );
});
