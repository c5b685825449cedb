/**
 * The end of a cutover (real servers, the CLI as a subprocess): once it began dropping the replication,
 * a subscription may be gone, so the source must never take writes again: a cutover killed there is
 * finished by the next one, the source staying read-only. And a slot gone from the source is never
 * taken for a caught-up one: the cutover refuses, naming it, and opens the source again.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import pg from 'pg';
import { cliEnv, runCli, serverFlags, startCli } from './delayed-helpers.ts';
import { killLeftovers, waitDuring } from './safety-helpers.ts';
import { assertSameDatabase, cutoverArgs, onlineFixtures, onlineJson, publications, readOnly, replicateShop, slots, subscriptions } from './online-helpers.ts';

const { setUp, track } = onlineFixtures();

test('kill -9 of the cutover while it drops the replication: the source stays read-only, the next cutover finishes the drop; equal', async () => {
  const { src, dst, ws } = await setUp('onl-drop-kill');
  await replicateShop(src, dst, ws);
  const [pub] = await publications(src, 'shop');
  assert.ok(pub);

  // A session holding a lock on the publication makes the cutover wait in its last step, after the
  // subscription (and the slot with it) went: it is named like the tool's so that the fence leaves it.
  const holder = track(new pg.Client({ ...src.connectionConfig('shop'), application_name: 'pg-migrate/test-holder' }));
  await holder.connect();
  await holder.query(`begin; alter publication "${pub}" set (publish = 'insert, update, delete, truncate')`);
  const cut = startCli(cutoverArgs(src, dst, ws, ['--grace-seconds', '0']), cliEnv(src, dst));
  await waitDuring(
    cut,
    'the cutover to wait for dropping the publication',
    async () =>
      (
        await src.query<{ n: string }>(
          "select count(*)::text as n from pg_stat_activity where wait_event_type = 'Lock' and query ilike 'drop publication%' and pid <> pg_backend_pid()",
        )
      )[0]?.n === '1',
  );
  cut.child.kill('SIGKILL');
  assert.equal((await cut.done).signal, 'SIGKILL');
  await holder.query('rollback');
  await holder.end();
  await killLeftovers(ws, [src, dst]);
  assert.deepEqual(await subscriptions(dst), [], 'the killed cutover had dropped the subscription');
  assert.equal((await onlineJson(ws, 'shop'))?.cutoverAt, undefined);

  // cleanup does not open the source then (the comparison was done, a subscription is gone): it names the cutover.
  const cleaned = await runCli(['cleanup', ...serverFlags(src, dst), '--state-dir', ws.stateDir], cliEnv(src, dst));
  assert.equal(cleaned.code, 1, cleaned.output);
  assert.match(cleaned.output, /interrupted while it dropped the replication .*run pg-migrate cutover again to finish it/, cleaned.output);
  assert.equal(await readOnly(src, 'shop'), true, 'cleanup left the source read-only');
  assert.ok((await onlineJson(ws, 'shop')) !== undefined, 'cleanup left the record of the replication for the cutover');

  // While the next cutover runs, an application keeps trying to write: nothing may commit, since no
  // subscription would carry it.
  const flag = { stop: false };
  let committed = 0;
  const app = (async () => {
    while (!flag.stop) {
      const c = new pg.Client({ ...src.connectionConfig('shop'), application_name: 'app' });
      c.on('error', () => undefined);
      try {
        await c.connect();
        await c.query("update items set v = 'after the kill' where id = 1");
        committed++;
      } catch {
        // read-only: expected
      } finally {
        await c.end().catch(() => undefined);
      }
    }
  })();
  const again = await runCli(cutoverArgs(src, dst, ws, ['--grace-seconds', '0']), cliEnv(src, dst));
  flag.stop = true;
  await app;
  assert.equal(again.code, 0, again.output);
  assert.match(again.stdout, /finishing the cutover interrupted while it dropped the replication .*: shop/, again.output);
  assert.doesNotMatch(again.stdout, /made the source writable again/, again.output);
  assert.equal(committed, 0, 'no write was taken by the source after the drop began');
  assert.equal(await readOnly(src, 'shop'), true, 'the source stays read-only');
  assert.ok((await onlineJson(ws, 'shop'))?.cutoverAt !== undefined);
  assert.deepEqual(await slots(src), []);
  assert.deepEqual(await publications(src, 'shop'), []);
  await assertSameDatabase(src, dst, 'shop', again);
});

test('a slot gone from the source (its subscription dropped): the cutover refuses, naming it, and the source takes writes again', async () => {
  const { src, dst, ws } = await setUp('onl-drop-gone');
  await replicateShop(src, dst, ws);
  const [sub] = await subscriptions(dst);
  assert.ok(sub);
  // Dropping the subscription drops its slot on the source; the update after it reaches nobody.
  await dst.query(`drop subscription "${sub}"`, [], 'shop');
  await src.query("update items set v = 'lost' where id = 1", [], 'shop');
  const c = await runCli(cutoverArgs(src, dst, ws, ['--grace-seconds', '0']), cliEnv(src, dst));
  assert.equal(c.code, 1, c.output);
  assert.match(c.stderr, /the replication slots of shop \(pg_migrate_\w+\) are gone from the source/, c.output);
  assert.match(c.stderr, /--redo-db/, c.output);
  assert.equal(await readOnly(src, 'shop'), false, 'the source takes writes again');
});

test('SIGTERM of the cutover during its grace period: exit 130, the source takes writes again, the subscription goes on; the next cutover goes through', async () => {
  const { src, dst, ws } = await setUp('onl-drop-term');
  await replicateShop(src, dst, ws);
  const subs = await subscriptions(dst);
  const cut = startCli(cutoverArgs(src, dst, ws, ['--grace-seconds', '30']), cliEnv(src, dst));
  await waitDuring(cut, 'the cutover to fence the source', () => readOnly(src, 'shop'));
  cut.child.kill('SIGTERM');
  const r = await cut.done;
  assert.equal(r.code, 130, r.output);
  assert.match(r.stdout, /the source takes writes again; the subscriptions go on: cut over again when ready/, r.output);
  assert.match(r.stderr, /SIGTERM: stopping cleanly \(before dropping the replication; a fenced source is made writable again\)/, r.output);
  assert.doesNotMatch(r.stderr, /tuning/, 'the cutover tunes nothing');
  assert.equal(await readOnly(src, 'shop'), false, 'the source takes writes again');
  assert.deepEqual(await subscriptions(dst), subs, 'nothing was dropped');
  await src.query("update items set v = 'after the signal' where id = 1", [], 'shop');
  const again = await runCli(cutoverArgs(src, dst, ws, ['--grace-seconds', '0']), cliEnv(src, dst));
  assert.equal(again.code, 0, again.output);
  assert.doesNotMatch(again.stdout, /made the source writable again/, again.output);
  await assertSameDatabase(src, dst, 'shop', again);
});

test("the cutover's session on the source ended during the grace period: a named failure (exit 1, not an internal error), the source takes writes again", async () => {
  const { src, dst, ws } = await setUp('onl-drop-away');
  await replicateShop(src, dst, ws);
  const cut = startCli(cutoverArgs(src, dst, ws, ['--grace-seconds', '3']), cliEnv(src, dst));
  await waitDuring(cut, 'the cutover to fence the source', () => readOnly(src, 'shop'));
  await src.query("select pg_terminate_backend(pid) from pg_stat_activity where application_name like 'pg-migrate/%' and pid <> pg_backend_pid()");
  const r = await cut.done;
  assert.equal(r.code, 1, r.output);
  assert.match(r.stderr, /a server went away or ended a session of the cutover .*; once both servers take connections, cut over again/, r.output);
  assert.equal(await readOnly(src, 'shop'), false, 'the source takes writes again');
  const again = await runCli(cutoverArgs(src, dst, ws, ['--grace-seconds', '0']), cliEnv(src, dst));
  assert.equal(again.code, 0, again.output);
  await assertSameDatabase(src, dst, 'shop', again);
});

test('roles are not replicated: a large object of a role created since the copy refuses the cutover before the write stop, naming it; another new role is named in a warning', async () => {
  const { src, dst, ws } = await setUp('onl-drop-roles');
  await replicateShop(src, dst, ws);
  await src.query('create role lo_owner; create role late_app login');
  const [lo] = await src.query<{ oid: string }>("select lo_from_bytea(0, 'late')::text as oid", [], 'shop');
  await src.query(`alter large object ${lo!.oid} owner to lo_owner`, [], 'shop');
  const refused = await runCli(cutoverArgs(src, dst, ws, ['--grace-seconds', '0']), cliEnv(src, dst));
  assert.equal(refused.code, 1, refused.output);
  assert.match(refused.stderr, new RegExp(`shop: large object ${lo!.oid} of role lo_owner`), refused.output);
  assert.doesNotMatch(refused.stdout, /stopped writes/, 'refused before the write stop');
  assert.equal(await readOnly(src, 'shop'), false);
  await dst.query('create role lo_owner');
  const c = await runCli(cutoverArgs(src, dst, ws, ['--grace-seconds', '0']), cliEnv(src, dst));
  assert.equal(c.code, 0, c.output);
  assert.match(c.stdout, /warning: the roles late_app exist on the source but not on the target/, c.output);
  const [owner] = await dst.query<{ r: string }>(`select pg_get_userbyid(lomowner) as r from pg_largeobject_metadata where oid = ${lo!.oid}`, [], 'shop');
  assert.equal(owner?.r, 'lo_owner');
});
