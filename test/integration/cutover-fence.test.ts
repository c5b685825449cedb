/**
 * What the cutover's fence cannot stop by itself (real servers, the CLI as a subprocess): a session it
 * leaves open that writes, a prepared transaction, a role whose own settings turn the fence off. The
 * cutover refuses to drop the replication while such a write could still come, names it, and opens the
 * source again; once it is settled the cutover goes through and the write is on the target. And the
 * fence returns only when the sessions it ended are gone (pg_terminate_backend only signals them).
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import pg from 'pg';
import { resolveEndpoint } from '../../src/pg/endpoint.ts';
import { fence, fenceRecord, unfence } from '../../src/pipeline/cutover-fence.ts';
import { cliEnv, runCli } from './delayed-helpers.ts';
import { cutoverArgs, onlineFixtures, readOnly, replicateShop, subscriptions, until } from './online-helpers.ts';

const { setUp, track } = onlineFixtures();

test('a write the fence leaves open (a session of another role, a prepared transaction) refuses the cutover, naming it; settled, the cutover carries it to the target', async () => {
  const { src, dst, ws } = await setUp('onl-fence');
  await src.query('alter system set max_prepared_transactions = 4');
  await src.restart();
  await src.query('create role app login; create role reporter');
  await src.query('alter role reporter set default_transaction_read_only = off');
  await replicateShop(src, dst, ws);
  const [sub] = await subscriptions(dst);

  // A session of postgres (not among --fence-roles, so the fence leaves it open) with an uncommitted write.
  const open = track(new pg.Client({ ...src.connectionConfig('shop'), application_name: 'open-writer' }));
  await open.connect();
  await open.query(`begin; insert into items values (1001, 'open')`);
  const refused = await runCli(cutoverArgs(src, dst, ws, ['--grace-seconds', '0', '--fence-roles', 'app']), cliEnv(src, dst));
  assert.equal(refused.code, 1, refused.output);
  assert.match(refused.stdout, /warning: the settings of reporter turn default_transaction_read_only off/, refused.output);
  assert.match(
    refused.stderr,
    /shop: session \d+ of postgres \(application open-writer\) has a transaction that writes \(idle in transaction\)/,
    refused.output,
  );
  assert.match(refused.stdout, /the source takes writes again; the subscriptions go on/, refused.output);
  assert.equal(await readOnly(src, 'shop'), false, 'the fence was lifted');
  assert.deepEqual(await subscriptions(dst), [sub], 'nothing was dropped');
  await open.query('commit');
  await open.end();

  // A prepared transaction: it can be committed whenever, so it refuses the cutover too.
  await src.withClient(async (c) => {
    await c.query(`begin; insert into items values (1002, 'prepared'); prepare transaction 'pgm-test-1002'`);
  }, 'shop');
  const prepared = await runCli(cutoverArgs(src, dst, ws, ['--grace-seconds', '0']), cliEnv(src, dst));
  assert.equal(prepared.code, 1, prepared.output);
  assert.match(prepared.stderr, /shop: prepared transaction pgm-test-1002 of postgres can still be committed/, prepared.output);
  assert.match(prepared.stderr, /COMMIT PREPARED or ROLLBACK PREPARED/, prepared.output);
  assert.equal(await readOnly(src, 'shop'), false, 'the fence was lifted');
  await src.query(`commit prepared 'pgm-test-1002'`, [], 'shop');

  // Settled: the cutover goes through, and both writes are on the target.
  const c = await runCli(cutoverArgs(src, dst, ws, ['--grace-seconds', '0']), cliEnv(src, dst));
  assert.equal(c.code, 0, c.output);
  const rows = await dst.query<{ v: string }>('select v from items where id > 1000 order by id', [], 'shop');
  assert.deepEqual(
    rows.map((r) => r.v),
    ['open', 'prepared'],
  );
  assert.deepEqual(await subscriptions(dst), []);
});

test('a session the fence leaves open that keeps writing (short transactions, idle in between) refuses the cutover, named; stopped, the cutover carries every row', async () => {
  const { src, dst, ws } = await setUp('onl-fence-open');
  await src.query('create role app login');
  await replicateShop(src, dst, ws, 'create table items (id serial primary key, v text); create sequence tick');

  // postgres is not among --fence-roles: its session, begun before the fence, stays writable.
  const open = track(new pg.Client({ ...src.connectionConfig('shop'), application_name: 'outside-writer' }));
  await open.connect();
  const flag = { stop: false };
  let written = 0;
  const loop = (async () => {
    while (!flag.stop) {
      await open.query(`insert into items (v) values ('w'); select nextval('tick')`);
      written++;
      await new Promise((r) => setTimeout(r, 20));
    }
  })();
  await until('the writer to write', () => written > 5);
  const refused = await runCli(cutoverArgs(src, dst, ws, ['--grace-seconds', '0', '--fence-roles', 'app']), cliEnv(src, dst));
  flag.stop = true;
  await loop;
  await open.end();
  assert.equal(refused.code, 1, refused.output);
  assert.match(
    refused.stderr,
    /shop: session \d+ of postgres \(application outside-writer\) can write \(the fence left it open\) and ran a statement after the catch-up/,
    refused.output,
  );
  assert.equal(await readOnly(src, 'shop'), false, 'the fence was lifted');

  const c = await runCli(cutoverArgs(src, dst, ws, ['--grace-seconds', '0', '--fence-roles', 'app']), cliEnv(src, dst));
  assert.equal(c.code, 0, c.output);
  const [n] = await dst.query<{ n: string }>('select count(*)::text as n from items', [], 'shop');
  assert.equal(n!.n, String(written), 'every row the open session wrote is on the target');
  const [t] = await dst.query<{ v: string }>('select last_value::text as v from tick', [], 'shop');
  assert.equal(t!.v, String(written), 'and the sequence it advanced');
});

test('the fence returns only when the sessions it ended have exited', async () => {
  const { src } = await setUp('onl-fence-exit', { logical: false });
  await src.query('create database shop');
  const endpoint = resolveEndpoint(
    'source',
    { host: src.host, port: src.port, user: src.user, password: src.password },
    { HOME: '/nonexistent' },
    true,
  ).endpoint;
  assert.ok(endpoint);
  const server = { side: 'source' as const, endpoint, appName: 'pg-migrate/test-fence' };
  // Sessions busy in a statement when they are ended, as an application's are.
  const clients = await Promise.all(
    Array.from({ length: 12 }, async () => {
      const c = track(new pg.Client({ ...src.connectionConfig('shop'), application_name: 'busy' }));
      await c.connect();
      return c;
    }),
  );
  const pids = await Promise.all(clients.map(async (c) => (await c.query<{ p: number }>('select pg_backend_pid() as p')).rows[0]!.p));
  for (const c of clients) c.query('select count(*) from generate_series(1, 100000000)').catch(() => undefined);
  await until(
    'the sessions to be busy',
    async () => (await src.query(`select 1 from pg_stat_activity where application_name = 'busy' and state = 'active'`)).length === 12,
  );
  const record = await fenceRecord(server, ['shop']);
  const { ended } = await fence(server, record, 0, undefined);
  const left = await src.query<{ pid: number }>('select pid from pg_stat_activity where pid = any($1::int[])', [pids]);
  assert.equal(ended, 12);
  assert.deepEqual(left, [], 'every ended session is gone when the fence returns');
  await unfence(server, record);
  assert.equal(await readOnly(src, 'shop'), false);
});
