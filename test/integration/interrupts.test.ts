/**
 * Sessions of the tool ended under it (pg_terminate_backend, a server restart, the run's own
 * interruption ending its sessions), against a real server: the broken session surfaces as an error
 * of the step that used it, never as an unhandled 'error' event that kills the process before the
 * target's tuning is put back.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { authenticate, createPool } from '../../src/pg/connect.ts';
import { resolveEndpoint } from '../../src/pg/endpoint.ts';
import { targetFixtures } from './target-helpers.ts';

const { cluster } = targetFixtures();

test('a pooled session ended while checked out between two queries fails its next query and does not crash the process', async () => {
  const c = await cluster({ name: 'int-pool' });
  const endpoint = resolveEndpoint('target', { host: c.host, port: c.port, user: c.user, password: c.password }, { HOME: '/nonexistent' }, true).endpoint;
  assert.ok(endpoint);
  const server = { side: 'target' as const, endpoint, appName: 'pg-migrate/test-pool' };
  await authenticate(server); // pins the host and TLS choice, as a run's first session does
  const pool = createPool(server, 'postgres', 2);
  const uncaught: unknown[] = [];
  const onUncaught = (err: unknown): void => {
    uncaught.push(err);
  };
  process.on('uncaughtException', onUncaught);
  try {
    // As countTables holds its first session: checked out, idle between the queries of its snapshot.
    const client = await pool.connect();
    const pid = (await client.query<{ p: number }>('select pg_backend_pid() as p')).rows[0]?.p;
    assert.ok(pid);
    const ended = new Promise<void>((resolve, reject) => {
      client.once('end', () => {
        resolve();
      });
      setTimeout(() => {
        reject(new Error('the ended session did not end its client within 10 s'));
      }, 10_000).unref();
    });
    await c.query('select pg_terminate_backend($1)', [pid]);
    await ended;
    await new Promise((resolve) => setTimeout(resolve, 200));
    assert.deepEqual(uncaught, [], 'no unhandled error event');
    await assert.rejects(client.query('select 1'));
    client.release(true);
    // The pool still serves new sessions.
    assert.equal((await pool.query<{ n: number }>('select 1 as n')).rows[0]?.n, 1);
  } finally {
    process.off('uncaughtException', onUncaught);
    await pool.end().catch(() => undefined);
  }
});
