/**
 * Helpers for the online-mode end-to-end tests (online.test.ts): fixtures with a source ready for
 * logical replication, an application-like writer that keeps writing through the migration until the
 * cutover's fence stops it, and probes of the replication objects on both servers.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs/promises';
import path from 'node:path';
import { afterEach } from 'node:test';
import pg from 'pg';
import { startCluster, type Cluster, type ServerVersion } from '../harness/cluster.ts';
import { assertSameData } from './cli.ts';
import { cliEnv, killAll, makeWorkspace, migrateArgs, processesMentioning, runCli, sleep, type CliResult, type Workspace } from './delayed-helpers.ts';

export interface OnlineFixture {
  src: Cluster;
  dst: Cluster;
  ws: Workspace;
}

/**
 * Registers an afterEach that stops the writers, kills what a killed run left under the tests' dump
 * roots, stops the clusters and removes the temp dirs; returns what creates them.
 */
export function onlineFixtures(): {
  setUp: (label: string, opts?: { source?: ServerVersion; target?: ServerVersion; logical?: boolean }) => Promise<OnlineFixture>;
  writer: (c: Cluster, db: string, opts?: WriterOptions) => Writer;
  track: (client: pg.Client) => pg.Client;
} {
  const clusters: Cluster[] = [];
  const workspaces: Workspace[] = [];
  const writers: Writer[] = [];
  const clients: pg.Client[] = [];
  afterEach(async () => {
    await Promise.all(writers.splice(0).map((w) => w.stop().catch(() => undefined)));
    await Promise.all(clients.splice(0).map((c) => c.end().catch(() => undefined)));
    for (const ws of workspaces) killAll(processesMentioning(ws.dumpRoot).map((p) => p.pid));
    await Promise.all(clusters.splice(0).map((c) => c.stop()));
    await Promise.all(workspaces.splice(0).map((ws) => fs.rm(ws.dir, { recursive: true, force: true })));
  });
  return {
    async setUp(label, opts = {}) {
      const [src, dst, ws] = await Promise.all([
        startCluster({ version: opts.source ?? 'system', name: `${label}-src`, logical: opts.logical ?? true }),
        startCluster({ version: opts.target ?? 'system', name: `${label}-dst` }),
        makeWorkspace(label),
      ]);
      clusters.push(src, dst);
      workspaces.push(ws);
      return { src, dst, ws };
    },
    writer(c, db, opts) {
      const w = new Writer(c, db, opts);
      writers.push(w);
      return w;
    },
    track(client) {
      client.on('error', () => undefined);
      clients.push(client);
      return client;
    },
  };
}

/**
 * The writer's tables: `w` (bigserial key; inserted, updated and deleted), `w_ident` (identity
 * column), `progress` (one row holding the number of the writer's last transaction), the sequence
 * `tick` (advanced by every transaction) and, unless `keyless` is false, `nokey` (no primary key, so
 * not replicated: copied at cutover; the writer inserts into it and updates it).
 */
export async function createWriterTables(c: Cluster, db: string, opts: { keyless?: boolean; bulkRows?: number } = {}): Promise<void> {
  await c.query(
    `create table w (id bigserial primary key, n bigint not null, v text not null, touched int not null default 0);
     create table w_ident (id int generated always as identity primary key, n bigint not null);
     create table progress (k int primary key, n bigint not null);
     insert into progress values (1, 0);
     create sequence tick;
     ${opts.keyless === false ? '' : 'create table nokey (n bigint, v text);'}
     create table bulk (id int primary key, v text not null);
     insert into bulk select g, md5(g::text) from generate_series(1, ${String(opts.bulkRows ?? 1000)}) g;
     insert into w (n, v) select 0, md5(g::text) from generate_series(1, 50) g;`,
    [],
    db,
  );
}

export interface WriterOptions {
  /** Pause between transactions (ms); default 10. */
  pauseMs?: number;
  /** Rows of `bulk` (its updates cycle through them). */
  bulkRows?: number;
  /** Whether the database has the table `nokey`. */
  keyless?: boolean;
}

export interface WriterResult {
  db: string;
  /** Transactions whose COMMIT the server acknowledged. */
  commits: number;
  /** The number of the last acknowledged transaction (`progress.n` after it). */
  lastCommitted: number;
  /** When it was acknowledged (Date.now()). */
  lastCommitAt: number;
  /** A transaction cut off by a terminated connection: it may or may not have committed. */
  inDoubt: number[];
  /** Why the writer stopped: the fence's read-only error, or stop() was called. */
  endedBy: 'read-only' | 'stopped';
  /** Sessions the server ended under the writer (it reconnected each time). */
  terminated: number;
  /** (Date.now(), n) of every acknowledged commit, for "was it writing during …" questions. */
  commitTimes: number[];
}

const isTermination = (err: unknown): boolean => {
  const e = err as { code?: string; message?: string };
  return (
    e.code === '57P01' || // admin_shutdown: pg_terminate_backend
    /Connection terminated|terminating connection|ECONNRESET|EPIPE|Client has encountered a connection error|not queryable/i.test(e.message ?? '')
  );
};

/**
 * An application writing into one database: each transaction inserts into `w` and `w_ident`, updates
 * and deletes rows of `w`, updates a row of `bulk`, advances the sequence `tick`, writes `nokey` (if
 * there) and sets `progress.n` to its own number. A session the server ends is replaced by a new one
 * (as a connection pool does); the writer stops at the first "read-only transaction" error (the
 * cutover's fence) or when stop() is called. Any other error fails it.
 */
export class Writer {
  readonly db: string;
  private readonly cluster: Cluster;
  private readonly opts: Required<WriterOptions>;
  private stopping = false;
  private client: pg.Client | undefined;
  private readonly result: WriterResult;
  readonly done: Promise<WriterResult>;

  constructor(cluster: Cluster, db: string, opts: WriterOptions = {}) {
    this.cluster = cluster;
    this.db = db;
    this.opts = { pauseMs: opts.pauseMs ?? 10, bulkRows: opts.bulkRows ?? 1000, keyless: opts.keyless ?? true };
    this.result = { db, commits: 0, lastCommitted: 0, lastCommitAt: 0, inDoubt: [], endedBy: 'stopped', terminated: 0, commitTimes: [] };
    this.done = this.loop();
    // A failure is reported where the test awaits it; never as an unhandled rejection.
    this.done.catch(() => undefined);
  }

  private async connect(): Promise<pg.Client> {
    const c = new pg.Client({ ...this.cluster.connectionConfig(this.db), application_name: 'test-writer' });
    c.on('error', () => undefined);
    await c.connect();
    return c;
  }

  private sql(n: number): string {
    const b = (n % this.opts.bulkRows) + 1;
    return `begin;
      insert into w (n, v) values (${n}, md5('${n}'));
      update w set touched = touched + 1, v = md5(v) where id = (select max(id) - 5 from w);
      ${n % 3 === 0 ? 'delete from w where id = (select max(id) - 10 from w);' : ''}
      insert into w_ident (n) values (${n});
      update bulk set v = md5(v || '${n}') where id = ${b};
      select nextval('tick');
      ${this.opts.keyless ? `insert into nokey values (${n}, 'x${n}'); update nokey set v = v || '.' where n = ${n - 1};` : ''}
      update progress set n = ${n} where k = 1;
      commit;`;
  }

  /** Read through a method: the loop's condition must not narrow it for the code after an await. */
  private stopped(): boolean {
    return this.stopping;
  }

  private async loop(): Promise<WriterResult> {
    let n = 0;
    this.client = await this.connect();
    for (let reconnects = 0; !this.stopped();) {
      n++;
      try {
        await this.client.query(this.sql(n));
        this.result.commits++;
        this.result.lastCommitted = n;
        this.result.lastCommitAt = Date.now();
        this.result.commitTimes.push(this.result.lastCommitAt);
      } catch (err) {
        const e = err as { code?: string; message?: string };
        if (e.code === '25006') {
          // read_only_sql_transaction: the fence. The transaction did not commit.
          this.result.endedBy = 'read-only';
          break;
        }
        if (this.stopped()) break;
        if (!isTermination(err)) throw new Error(`the writer in ${this.db} failed at transaction ${String(n)}: ${e.message ?? String(err)}`, { cause: err });
        // The session was ended: its last transaction may or may not have committed.
        this.result.inDoubt.push(n);
        this.result.terminated++;
        await this.client.end().catch(() => undefined);
        if (++reconnects > 20) throw new Error(`the writer in ${this.db} lost its session ${String(reconnects)} times`, { cause: err });
        this.client = await this.connect();
        continue;
      }
      if (this.opts.pauseMs > 0) await sleep(this.opts.pauseMs);
    }
    await this.client.end().catch(() => undefined);
    return this.result;
  }

  /** Commits so far. */
  get commits(): number {
    return this.result.commits;
  }

  /** When each commit so far was acknowledged. */
  get commitTimes(): readonly number[] {
    return this.result.commitTimes;
  }

  /** Stops the writer (if the fence has not) and returns what it did. */
  async stop(): Promise<WriterResult> {
    this.stopping = true;
    return this.done;
  }
}

/**
 * After the cutover: the writer's last acknowledged transaction is on the target (its `progress` row,
 * its row in `w` and `w_ident`); `progress.n` is that one or a transaction cut off in doubt, and the
 * same on both sides.
 */
export async function assertLastChangeOnTarget(src: Cluster, dst: Cluster, r: WriterResult): Promise<void> {
  assert.ok(r.commits > 0, `the writer in ${r.db} committed nothing`);
  const [s] = await src.query<{ n: string }>('select n::text as n from progress', [], r.db);
  const [d] = await dst.query<{ n: string }>('select n::text as n from progress', [], r.db);
  assert.equal(d!.n, s!.n, `progress of ${r.db} on both sides`);
  const n = Number(d!.n);
  assert.ok(
    n === r.lastCommitted || r.inDoubt.includes(n),
    `${r.db}: the target's progress is ${String(n)}, the writer's last commit ${String(r.lastCommitted)}`,
  );
  const [w] = await dst.query<{ c: string }>('select count(*)::text as c from w where n = $1', [r.lastCommitted], r.db);
  assert.equal(w!.c, '1', `${r.db}: the row of the last committed transaction ${String(r.lastCommitted)} is in w on the target`);
  const [wi] = await dst.query<{ c: string }>('select count(*)::text as c from w_ident where n = $1', [r.lastCommitted], r.db);
  assert.equal(wi!.c, '1', `${r.db}: the row of the last committed transaction is in w_ident on the target`);
}

/** last_value and is_called of every sequence of a database, read from each sequence itself. */
export async function sequenceValues(c: Cluster, db: string): Promise<Record<string, string>> {
  return c.withClient(async (client) => {
    const seqs = await client.query<{ q: string }>(
      `select format('%I.%I', n.nspname, c.relname) as q from pg_class c join pg_namespace n on n.oid = c.relnamespace
        where c.relkind = 'S' and n.nspname not in ('pg_catalog', 'information_schema') order by 1`,
    );
    const out: Record<string, string> = {};
    for (const { q } of seqs.rows) {
      const r = await client.query<{ l: string; c: boolean }>(`select last_value::text as l, is_called as c from ${q}`);
      out[q] = `${r.rows[0]!.l}/${String(r.rows[0]!.c)}`;
    }
    return out;
  }, db);
}

/** Every table equal (counts and rows) and every sequence at the same point on both sides. */
export async function assertSameDatabase(src: Cluster, dst: Cluster, db: string, r?: CliResult): Promise<void> {
  try {
    await assertSameData(src, dst, db);
    assert.deepEqual(await sequenceValues(dst, db), await sequenceValues(src, db), `sequences of ${db}`);
  } catch (err) {
    assert.fail(`${db} differs between source and target: ${(err as Error).message}${r ? `\n${r.output}` : ''}`);
  }
}

/** The names of the replication slots on a server. */
export async function slots(c: Cluster): Promise<string[]> {
  return (await c.query<{ s: string }>('select slot_name as s from pg_replication_slots order by 1')).map((r) => r.s);
}

/** The publications of a database. */
export async function publications(c: Cluster, db: string): Promise<string[]> {
  return (await c.query<{ p: string }>('select pubname as p from pg_publication order by 1', [], db)).map((r) => r.p);
}

/** The subscriptions of a server (all databases). */
export async function subscriptions(c: Cluster): Promise<string[]> {
  return (await c.query<{ s: string }>('select subname as s from pg_subscription order by 1')).map((r) => r.s);
}

/** The record of a database's replication in the state. */
export interface OnlineJson {
  publication: string;
  slot: string;
  subscription: string;
  notReplicated: { schema: string; name: string }[];
  consistentPoint?: string;
  subscribedAt?: string;
  cutoverAt?: string;
}

export async function onlineJson(ws: Workspace, db: string): Promise<OnlineJson | undefined> {
  try {
    return JSON.parse(await fs.readFile(path.join(ws.markers, 'databases', db, 'online.json'), 'utf8')) as OnlineJson;
  } catch {
    return undefined;
  }
}

/** The write stop the cutover reported ("writes were stopped for X s"). */
export function reportedWriteStop(r: CliResult): number {
  const m = /writes were stopped for ([\d.]+) s/.exec(r.stdout);
  assert.ok(m, `the cutover reports how long writes were stopped:\n${r.output}`);
  return Number(m[1]);
}

/** default_transaction_read_only as a new session of `db` sees it. */
export async function readOnly(c: Cluster, db: string): Promise<boolean> {
  const [r] = await c.query<{ v: string }>("select current_setting('default_transaction_read_only') as v", [], db);
  return r!.v === 'on';
}

/** The table most cutover tests start from: `items`, 100 rows with a key. */
export const ITEMS_SQL = 'create table items (id int primary key, v text); insert into items select g, md5(g::text) from generate_series(1, 100) g';

/** Creates the database `shop` on the source from `sql`, then migrates online (exit 0 asserted). */
export async function replicateShop(src: Cluster, dst: Cluster, ws: Workspace, sql = ITEMS_SQL, flags: string[] = []): Promise<CliResult> {
  await src.query('create database shop');
  await src.query(sql, [], 'shop');
  const m = await runCli(migrateArgs(src, dst, ws, ['--online', ...flags]), cliEnv(src, dst));
  assert.equal(m.code, 0, m.output);
  return m;
}

/** The cutover's arguments: connection, state, dumps, client programs (migrate's, after the command). */
export function cutoverArgs(src: Cluster, dst: Cluster, ws: Workspace, extra: string[] = []): string[] {
  return ['cutover', ...migrateArgs(src, dst, ws, extra)];
}

/** Waits until `fn` holds (polling), or fails naming `what`. */
export async function until(what: string, fn: () => Promise<boolean> | boolean, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await fn())) {
    if (Date.now() > deadline) assert.fail(`timed out after ${String(timeoutMs)} ms waiting for ${what}`);
    await sleep(20);
  }
}

/**
 * Samples, every 250 ms until stopped, where the source's WAL is and what each migration slot and WAL
 * sender reports: shown when a cutover took longer than expected.
 */
export function replicationMonitor(src: Cluster): { stop: () => Promise<string[]> } {
  const lines: string[] = [];
  const state = { stopping: false };
  const t0 = Date.now();
  const loop = (async () => {
    while (!state.stopping) {
      try {
        const [r] = await src.query<{ l: string }>(
          `select pg_current_wal_lsn()::text || ' | ' ||
                  coalesce((select string_agg(slot_name || ' active ' || active::text || ' confirmed ' || coalesce(confirmed_flush_lsn::text, '-'), ', ') from pg_replication_slots where slot_name like 'pg_migrate%'), '') || ' | ' ||
                  coalesce((select string_agg(application_name || ' sent ' || sent_lsn || ' write ' || coalesce(write_lsn::text, '-') || ' flush ' || coalesce(flush_lsn::text, '-') || ' reply ' || coalesce(to_char(reply_time, 'HH24:MI:SS.MS'), '-'), ', ') from pg_stat_replication), '') as l`,
        );
        lines.push(`${((Date.now() - t0) / 1000).toFixed(2)} s ${new Date().toISOString().slice(11, 23)}: ${r!.l}`);
      } catch (err) {
        lines.push(`${((Date.now() - t0) / 1000).toFixed(2)} s: ${(err as Error).message}`);
      }
      await sleep(250);
    }
  })();
  return {
    async stop() {
      state.stopping = true;
      await loop;
      return lines;
    },
  };
}
