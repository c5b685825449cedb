/**
 * Helpers for the deferred-table (--delay-table-data) end-to-end tests: a small CLI spawner, temp
 * dirs, catalog snapshots of indexes / foreign keys / counts, and a sweep for client programs a
 * killed run left behind.
 */
import type { ChildProcess } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, readlinkSync } from 'node:fs';
import * as fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { startCluster, type Cluster } from '../harness/cluster.ts';
import { PG15_BIN, startCli as spawnCli, waitCli } from './cli.ts';

export const PG_BIN = PG15_BIN;

export interface CliResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  /** stdout + stderr, for messages. */
  output: string;
  ms: number;
}

export interface RunningCli {
  child: ChildProcess;
  done: Promise<CliResult>;
  /** What was written so far. */
  output(): string;
}

/** Starts the CLI through cli.ts's spawner, keeping what it wrote readable while it runs. */
export function startCli(args: string[], env: Record<string, string> = {}, timeoutMs = 120_000): RunningCli {
  const child = spawnCli(args, { env });
  let stdout = '';
  let stderr = '';
  child.stdout!.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const done = waitCli(child, timeoutMs).then((r) => ({
    code: r.exitCode,
    signal: r.signal,
    stdout: r.stdout,
    stderr: r.stderr,
    output: `${r.stdout}\n--- stderr ---\n${r.stderr}`,
    ms: r.ms,
  }));
  return { child, done, output: () => `${stdout}\n--- stderr ---\n${stderr}` };
}

/** Runs the CLI to its end; fails after timeoutMs (the child is killed). */
export function runCli(args: string[], env: Record<string, string> = {}, timeoutMs = 120_000): Promise<CliResult> {
  return startCli(args, env, timeoutMs).done;
}

export interface Workspace {
  dir: string;
  stateDir: string;
  dumpRoot: string;
  markers: string;
}

export async function makeWorkspace(label: string): Promise<Workspace> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), `pgm-delayed-${label}-`));
  const stateDir = path.join(dir, 'state');
  const dumpRoot = path.join(dir, 'dumps');
  await fs.mkdir(stateDir);
  await fs.mkdir(dumpRoot);
  return { dir, stateDir, dumpRoot, markers: path.join(stateDir, 'pg_migrate_state') };
}

/** Connection flags of both servers (passwords travel in the environment: see cliEnv). */
export const serverFlags = (src: Cluster, dst: Cluster): string[] => [
  '--from-host',
  src.host,
  '--from-port',
  String(src.port),
  '--to-host',
  dst.host,
  '--to-port',
  String(dst.port),
];

/** Arguments of a migration from `src` to `dst` (passwords travel in the environment: see cliEnv). */
export function migrateArgs(src: Cluster, dst: Cluster, ws: Workspace, extra: string[] = []): string[] {
  return [...serverFlags(src, dst), '--state-dir', ws.stateDir, '--dump-root', ws.dumpRoot, '--pg-bin-dir', PG_BIN, '--progress', 'plain', ...extra];
}

export function cliEnv(src: Cluster, dst: Cluster): Record<string, string> {
  return { PG_MIGRATE_FROM_PASS: src.password, PG_MIGRATE_TO_PASS: dst.password };
}

/** A source and a target server, both PostgreSQL 15 from the system. */
export async function startPair(label: string): Promise<[Cluster, Cluster]> {
  const [src, dst] = await Promise.all([startCluster({ version: 'system', name: `${label}-src` }), startCluster({ version: 'system', name: `${label}-dst` })]);
  return [src, dst];
}

export function readJson<T = any>(file: string): T {
  const value: T = JSON.parse(readFileSync(file, 'utf8'));
  return value;
}

export interface IndexRow {
  name: string;
  def: string;
  valid: boolean;
  ready: boolean;
  replident: boolean;
  clustered: boolean;
  comment: string | null;
}

/** Every index of the given tables (qualified names), by name. */
export async function indexesOf(c: Cluster, db: string, tables: string[]): Promise<IndexRow[]> {
  return c.query<IndexRow>(
    `select i.indexrelid::regclass::text as name, pg_get_indexdef(i.indexrelid) as def, i.indisvalid as valid, i.indisready as ready,
            i.indisreplident as replident, i.indisclustered as clustered, obj_description(i.indexrelid, 'pg_class') as comment
       from pg_index i
      where i.indrelid = any(select t::regclass from unnest($1::text[]) t)
      order by 1`,
    [tables],
    db,
  );
}

export interface FkRow {
  table: string;
  name: string;
  def: string;
  validated: boolean;
}

/** Every foreign key from or to the given tables. */
export async function foreignKeysOf(c: Cluster, db: string, tables: string[]): Promise<FkRow[]> {
  return c.query<FkRow>(
    `select conrelid::regclass::text as "table", conname as name, pg_get_constraintdef(oid) as def, convalidated as validated
       from pg_constraint
      where contype = 'f' and (conrelid = any(select t::regclass from unnest($1::text[]) t) or confrelid = any(select t::regclass from unnest($1::text[]) t))
      order by 1, 2`,
    [tables],
    db,
  );
}

/** Exact count(*) of every table, partition and populated materialized view in user schemas. */
export async function exactCounts(c: Cluster, db: string): Promise<Record<string, number>> {
  return c.withClient(async (client) => {
    const rels = (
      await client.query<{ q: string; kind: string }>(
        `select format('%I.%I', n.nspname, c.relname) as q, c.relkind::text as kind from pg_class c join pg_namespace n on n.oid = c.relnamespace
          where c.relkind in ('r', 'p', 'm') and (c.relkind <> 'm' or c.relispopulated)
            and n.nspname not in ('pg_catalog', 'information_schema') and n.nspname !~ '^pg_'
          order by 1`,
      )
    ).rows;
    const out: Record<string, number> = {};
    // A partitioned table counts its partitions' rows (as the tool does); anything else only its own.
    for (const { q, kind } of rels)
      out[q] = Number((await client.query<{ n: string }>(`select count(*)::text as n from ${kind === 'p' ? '' : 'only '}${q}`)).rows[0]!.n);
    return out;
  }, db);
}

/** Rows of a query as sorted JSON lines (order-independent comparison). */
export async function rowsOf(c: Cluster, db: string, sql: string): Promise<string[]> {
  return (await c.query(sql, [], db)).map((r) => JSON.stringify(r)).sort();
}

/** Processes whose command line or working directory mentions `needle` (e.g. this test's dump root): client programs a killed run left behind. */
export function processesMentioning(needle: string): { pid: number; cmd: string }[] {
  const out: { pid: number; cmd: string }[] = [];
  for (const ent of readdirSync('/proc')) {
    if (!/^\d+$/.test(ent)) continue;
    const pid = Number(ent);
    if (pid === process.pid) continue;
    try {
      const cmd = readFileSync(`/proc/${ent}/cmdline`, 'utf8').split('\0').join(' ');
      let cwd = '';
      try {
        cwd = readlinkSync(`/proc/${ent}/cwd`);
      } catch {
        // not ours to read
      }
      if (cmd.includes(needle) || cwd.includes(needle)) out.push({ pid, cmd });
    } catch {
      // gone
    }
  }
  return out;
}

export function killAll(pids: number[]): void {
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // gone
    }
  }
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** A file of one database's state, named as `<db>.<file>` (the test databases have ordinary names). */
export function stateFile(ws: Workspace, name: string): string {
  const dot = name.indexOf('.');
  return path.join(ws.markers, 'databases', name.slice(0, dot), name.slice(dot + 1));
}

export function markerExists(ws: Workspace, name: string): boolean {
  return existsSync(stateFile(ws, name));
}

/** Seconds since t0, for log lines. */
export const since = (t0: number): string => `${((Date.now() - t0) / 1000).toFixed(1)} s`;
