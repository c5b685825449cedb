/**
 * The target's advisory lock (real server): a loss of its session before the run listens is kept and
 * told when it does, so that a run never goes on without the lock unawares.
 */
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { startCluster } from '../harness/cluster.ts';
import { resolveEndpoint } from '../../src/pg/endpoint.ts';
import { TargetLock } from '../../src/pipeline/lock.ts';

const cleanups: (() => Promise<void>)[] = [];
after(async () => {
  for (const c of cleanups) await c();
});

test('a loss of the lock session before onLost is registered is told when it is; the lock can be taken again', async () => {
  const dst = await startCluster({ name: 'target-lock' });
  cleanups.push(() => dst.stop());
  const endpoint = resolveEndpoint(
    'target',
    { host: dst.host, port: dst.port, user: dst.user, password: dst.password },
    { HOME: '/nonexistent' },
    true,
  ).endpoint;
  assert.ok(endpoint);
  const target = { side: 'target' as const, endpoint, appName: 'pg-migrate/test-lock' };
  const lock = await TargetLock.take(target);
  const [ended] = await dst.query<{ n: number }>(
    "select count(pg_terminate_backend(pid))::int as n from pg_stat_activity where application_name = 'pg-migrate/test-lock/lock'",
  );
  assert.equal(ended!.n, 1);
  await sleep(300); // the session's end reaches the client
  const told: string[] = [];
  lock.onLost((why) => told.push(why));
  assert.equal(told.length, 1, 'the earlier loss is told at once');
  await lock.retake(5);
  const held = await dst.query(
    "select 1 from pg_locks l join pg_stat_activity a on a.pid = l.pid where l.locktype = 'advisory' and a.application_name = 'pg-migrate/test-lock/lock'",
  );
  assert.equal(held.length, 1, 'taken again');
  await lock.release();
  await lock.retake(5); // after release: nothing, quietly
  const none = await dst.query("select 1 from pg_stat_activity where application_name = 'pg-migrate/test-lock/lock'");
  assert.equal(none.length, 0);
});
