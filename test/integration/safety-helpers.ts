/**
 * Helpers for the safety end-to-end tests (safety*.test.ts): fixtures with their cleanup, waiting on
 * a running CLI, killing it and what it left, and holding a database's deferred phase back so that
 * the test can write into the target the way an application would, between the two phases.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import * as fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterEach } from 'node:test';
import pg from 'pg';
import type { Cluster } from '../harness/cluster.ts';
import { assertSameData, migrateSessions } from './cli.ts';
import {
  killAll,
  makeWorkspace,
  markerExists,
  processesMentioning,
  sleep,
  startPair,
  type CliResult,
  type RunningCli,
  type Workspace,
} from './delayed-helpers.ts';

export interface Fixture {
  src: Cluster;
  dst: Cluster;
  ws: Workspace;
}

/**
 * Registers an afterEach that kills what a killed run left under the tests' dump roots, stops the
 * clusters, closes open clients and removes the temp dirs; returns what creates them.
 */
export function fixtures(): {
  setUp: (label: string) => Promise<Fixture>;
  workspace: (label: string) => Promise<Workspace>;
  tempDir: (label: string, owner?: 'postgres') => Promise<string>;
  track: (client: pg.Client) => pg.Client;
} {
  const clusters: Cluster[] = [];
  const workspaces: Workspace[] = [];
  const dirs: string[] = [];
  const clients: pg.Client[] = [];
  afterEach(async () => {
    for (const ws of workspaces) killAll(processesMentioning(ws.dumpRoot).map((p) => p.pid));
    await Promise.all(clients.splice(0).map((c) => c.end().catch(() => undefined)));
    await Promise.all(clusters.splice(0).map((c) => c.stop()));
    await Promise.all([...workspaces.splice(0).map((ws) => ws.dir), ...dirs.splice(0)].map((d) => fs.rm(d, { recursive: true, force: true })));
  });
  const workspace = async (label: string): Promise<Workspace> => {
    const ws = await makeWorkspace(label);
    workspaces.push(ws);
    return ws;
  };
  return {
    async setUp(label) {
      const [[src, dst], ws] = await Promise.all([startPair(label), workspace(label)]);
      clusters.push(src, dst);
      return { src, dst, ws };
    },
    workspace,
    async tempDir(label, owner) {
      const dir = await fs.mkdtemp(path.join(os.tmpdir(), `pgm-safety-${label}-`));
      dirs.push(dir);
      if (owner === 'postgres' && process.getuid?.() === 0) {
        await promisify(execFile)('chown', ['postgres:', dir]);
      }
      return dir;
    },
    track(client) {
      // A server stopped under an open client must not crash the test process.
      client.on('error', () => undefined);
      clients.push(client);
      return client;
    },
  };
}

/** Whether the CLI process has exited. */
const exited = (run: RunningCli): boolean => run.child.exitCode !== null || run.child.signalCode !== null;

/**
 * Polls `fn` while the CLI runs, until it returns a truthy value. Fails (showing the CLI's output) when
 * the run ends first or after timeoutMs; `inconclusive` marks the first case as a timing miss of the
 * test rather than a failure of the tool.
 */
export async function waitDuring<T>(
  run: RunningCli,
  what: string,
  fn: () => Promise<T | undefined | null | false> | T | undefined | null | false,
  opts: { timeoutMs?: number; intervalMs?: number; inconclusive?: boolean } = {},
): Promise<T> {
  const deadline = Date.now() + (opts.timeoutMs ?? 120_000);
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (exited(run)) {
      const r = await run.done;
      assert.fail(`${opts.inconclusive ? 'inconclusive: ' : ''}the run ended (exit ${String(r.code)}) before ${what}:\n${r.output}`);
    }
    if (Date.now() > deadline) assert.fail(`timed out after ${String(opts.timeoutMs ?? 120_000)} ms waiting for ${what}:\n${run.output()}`);
    await sleep(opts.intervalMs ?? 20);
  }
}

/**
 * kill -9 of the CLI process only, then of the client programs it left running (psql range copies,
 * pg_restore, pg_dump: their command line or working directory is in the dump root); waits until no
 * session of the run is left on either server.
 */
export async function killRun(run: RunningCli, ws: Workspace, servers: Cluster[]): Promise<CliResult> {
  run.child.kill('SIGKILL');
  const killed = await run.done;
  assert.equal(killed.signal, 'SIGKILL', killed.output);
  await killLeftovers(ws, servers);
  return killed;
}

/** Kills (by pid) every client program a killed run left under the dump root and waits for their sessions to end. */
export async function killLeftovers(ws: Workspace, servers: Cluster[]): Promise<void> {
  for (let i = 0; ; i++) {
    const left = processesMentioning(ws.dumpRoot);
    if (left.length === 0) break;
    if (i > 200) assert.fail(`client programs still running: ${JSON.stringify(left)}`);
    killAll(left.map((p) => p.pid));
    await sleep(50);
  }
  for (const c of servers) {
    for (let i = 0; ; i++) {
      const sessions = await migrateSessions(c);
      if (sessions.length === 0) break;
      if (i > 200) assert.fail(`sessions of the killed run still open on port ${String(c.port)}: ${sessions.join(', ')}`);
      await sleep(50);
    }
  }
}

/** Rows a COPY FROM of this run (pg-migrate/...) into `table` of `db` has processed so far on `c`, or undefined when none runs. */
export async function copyInto(c: Cluster, db: string, table: string): Promise<number | undefined> {
  const rows = await c.query<{ n: string }>(
    `select p.tuples_processed::text as n from pg_stat_progress_copy p join pg_stat_activity a on a.pid = p.pid
      where a.application_name like 'pg-migrate/%' and p.command = 'COPY FROM'
        and p.datid = (select oid from pg_database where datname = current_database()) and p.relid = $1::regclass`,
    [table],
    db,
  );
  return rows.length > 0 ? Number(rows[0]!.n) : undefined;
}

/**
 * Holds the deferred phase of `db` back. As soon as its regular restore is done (marker `done`), a
 * transaction on the target locks the given tables IN EXCLUSIVE MODE: reads go on (the regular
 * verify's count(*)), while the deferred phase's index drops and loads wait for it. Then waits for the
 * regular verify (marker `verify`) and returns the client with its transaction open: the caller writes
 * what an application would, then commits, which lets the deferred phase go on.
 */
export async function holdDeferredPhase(
  run: RunningCli,
  ws: Workspace,
  dst: Cluster,
  db: string,
  tables: string[],
  track: (c: pg.Client) => pg.Client,
): Promise<pg.Client> {
  await waitDuring(run, `${db} on the target`, async () => (await dst.query('select 1 from pg_database where datname = $1', [db])).length > 0);
  const client = track(new pg.Client(dst.connectionConfig(db)));
  await client.connect();
  await waitDuring(run, `the regular restore of ${db} (marker done)`, () => markerExists(ws, `${db}.done`), { intervalMs: 5 });
  await client.query('begin');
  await client.query(`lock table ${tables.join(', ')} in exclusive mode`);
  assert.ok(
    !markerExists(ws, `${db}.delayed_indexes_dropped`),
    `inconclusive: the deferred phase of ${db} had started before the test could hold it back:\n${run.output()}`,
  );
  await waitDuring(run, `the regular verify of ${db} (marker verify)`, () => markerExists(ws, `${db}.verify`), { intervalMs: 10 });
  return client;
}

/** assertSameData, with the CLI's output in the message when it fails. */
export async function assertSameAfter(src: Cluster, dst: Cluster, db: string, r: CliResult): Promise<void> {
  try {
    await assertSameData(src, dst, db);
  } catch (err) {
    assert.fail(`${db} differs between source and target: ${(err as Error).message}\n${r.output}`);
  }
}

/** One number from a query. */
export async function scalar(c: Cluster | pg.Client, sql: string, params: unknown[] = [], db?: string): Promise<number> {
  const rows = 'withClient' in c ? await c.query<{ n: string }>(sql, params, db) : (await c.query<{ n: string }>(sql, params)).rows;
  return Number(rows[0]!.n);
}
