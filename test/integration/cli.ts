/**
 * Shared helpers for the end-to-end tests: run the compiled CLI as a subprocess, build its
 * connection arguments for two harness clusters, temp dirs, process and server probes, and the
 * database comparison every migration test needs.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import * as fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Cluster } from '../harness/cluster.ts';
import { dumpRows, tableCounts } from '../harness/seed.ts';

/** dist/test/integration/cli.js → the repository root is three levels up. */
export const REPO_ROOT = fileURLToPath(new URL('../../../', import.meta.url));
export const NODE = path.join(REPO_ROOT, 'node_modules', '.bin', 'node');
export const CLI = path.join(REPO_ROOT, 'dist', 'src', 'cli.js');
/** Client programs of the installed PostgreSQL 15. */
export const PG15_BIN = process.env.PGM_TEST_CLIENT_BIN ?? '/usr/lib/postgresql/15/bin';

export interface CliResult {
  exitCode: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  ms: number;
}

export interface CliOptions {
  /** Extra environment (on top of a cleaned copy of process.env). */
  env?: Record<string, string>;
  timeoutMs?: number;
}

/** process.env without anything that would steer the CLI or libpq behind the test's back. */
function cleanEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (k.startsWith('PG_MIGRATE_') || /^PG[A-Z]+$/.test(k)) continue;
    env[k] = v;
  }
  return { ...env, ...extra };
}

function withProgress(args: string[]): string[] {
  return args.some((a) => a === '--progress' || a.startsWith('--progress=')) ? args : [...args, '--progress', 'plain'];
}

/** Starts the CLI (with --progress plain) and returns the child; stdout/stderr are piped. */
export function startCli(args: string[], opts: CliOptions = {}): ChildProcess {
  return spawn(NODE, [CLI, ...withProgress(args)], { cwd: REPO_ROOT, env: cleanEnv(opts.env), stdio: ['ignore', 'pipe', 'pipe'] });
}

/** Collects a started CLI's output and waits for it to exit. */
export function waitCli(child: ChildProcess, timeoutMs = 180_000): Promise<CliResult> {
  const t0 = performance.now();
  let stdout = '';
  let stderr = '';
  child.stdout?.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  child.stderr?.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`pg-migrate did not finish within ${timeoutMs} ms\n--- stdout ---\n${stdout}\n--- stderr ---\n${stderr}`));
    }, timeoutMs);
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ exitCode: code, signal, stdout, stderr, ms: Math.round(performance.now() - t0) });
    });
  });
}

/** Runs the CLI to completion. */
export function runCli(args: string[], opts: CliOptions = {}): Promise<CliResult> {
  return waitCli(startCli(args, opts), opts.timeoutMs);
}

/** Everything a failed assertion should show about a run. */
export function describeRun(r: CliResult): string {
  return `exit ${r.exitCode}${r.signal ? ` (signal ${r.signal})` : ''} after ${r.ms} ms\n--- stdout ---\n${r.stdout}\n--- stderr ---\n${r.stderr}`;
}

export interface Dirs {
  root: string;
  stateDir: string;
  dumpRoot: string;
}

/** Fresh temp dirs for one run's state and dumps (the dump root is not created: the tool does). */
export async function makeDirs(label = 'cli'): Promise<Dirs> {
  const root = await fs.mkdtemp(path.join(os.tmpdir(), `pgm-it-${label}-`));
  const stateDir = path.join(root, 'state');
  await fs.mkdir(stateDir);
  return { root, stateDir, dumpRoot: path.join(root, 'dumps') };
}

export async function removeDirs(dirs: Dirs | undefined): Promise<void> {
  if (dirs) await fs.rm(dirs.root, { recursive: true, force: true });
}

export const markersDir = (dirs: Dirs): string => path.join(dirs.stateDir, 'pg_migrate_state');

/** A file of one database's state: pg_migrate_state/databases/<db>/<name> (the test databases have ordinary names). */
export const dbStateFile = (stateDir: string, db: string, name: string): string => path.join(stateDir, 'pg_migrate_state', 'databases', db, name);

export interface BaseArgsOptions {
  /** 'flags' (default): --from-pass/--to-pass; 'env': none here, pass passwordEnv() as env. */
  passwords?: 'flags' | 'env';
  pgBinDir?: string;
}

/** Connection, state, dump and client-program arguments for migrating src onto dst. */
export function baseArgs(src: Cluster, dst: Cluster, dirs: Dirs, opts: BaseArgsOptions = {}): string[] {
  const args = ['--from-host', '127.0.0.1', '--from-port', String(src.port)];
  if (opts.passwords !== 'env') args.push('--from-pass', src.password);
  args.push('--to-host', '127.0.0.1', '--to-port', String(dst.port));
  if (opts.passwords !== 'env') args.push('--to-pass', dst.password);
  args.push('--state-dir', dirs.stateDir, '--dump-root', dirs.dumpRoot, '--pg-bin-dir', opts.pgBinDir ?? PG15_BIN);
  return args;
}

/** The passwords as PG_MIGRATE_* variables (for baseArgs(..., { passwords: 'env' })). */
export function passwordEnv(src: Cluster, dst: Cluster): Record<string, string> {
  return { PG_MIGRATE_FROM_PASS: src.password, PG_MIGRATE_TO_PASS: dst.password };
}

// ---------------------------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------------------------

export interface ProcInfo {
  pid: number;
  cmd: string;
}

/** Processes whose command line or working directory contains `needle` (from /proc, so no pgrep quoting issues). */
export async function processesMatching(needle: string, namePattern?: RegExp): Promise<ProcInfo[]> {
  const out: ProcInfo[] = [];
  for (const ent of await fs.readdir('/proc')) {
    if (!/^\d+$/.test(ent)) continue;
    const pid = Number(ent);
    if (pid === process.pid) continue;
    let cmd: string;
    try {
      cmd = (await fs.readFile(`/proc/${ent}/cmdline`, 'utf8')).split('\0').join(' ').trim();
    } catch {
      continue;
    }
    if (namePattern && !namePattern.test(cmd)) continue;
    const cwd = await fs.readlink(`/proc/${ent}/cwd`).catch(() => '');
    if (!cmd.includes(needle) && !cwd.includes(needle)) continue;
    out.push({ pid, cmd });
  }
  return out;
}

/** pg_dump / pg_restore / pg_dumpall / psql (range copies: run in a directory of the dump root) processes working under the given dump root. */
export function clientPrograms(dirs: Dirs, which = /\b(pg_(dump|restore|dumpall)|psql)\b/): Promise<ProcInfo[]> {
  return processesMatching(dirs.dumpRoot, which);
}

/** Polls `fn` until it returns a truthy value; fails after timeoutMs. */
export async function waitFor<T>(what: string, fn: () => Promise<T | undefined | false | null>, timeoutMs = 60_000, intervalMs = 50): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

/** Whether a process exists and is not a zombie. */
export function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // "pid (comm) S ...": the state letter follows the last ')'.
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

// ---------------------------------------------------------------------------------------------
// Servers
// ---------------------------------------------------------------------------------------------

/** name=setting lines of postgresql.auto.conf as the server reads it, sorted by name. */
export async function autoConf(c: Cluster): Promise<string[]> {
  const rows = await c.query<{ name: string; setting: string }>(
    `select name, setting from pg_file_settings where sourcefile like '%postgresql.auto.conf' order by seqno`,
  );
  // The last line for a name wins, like the server itself.
  const m = new Map<string, string>();
  for (const r of rows) m.set(r.name, r.setting);
  return [...m].map(([k, v]) => `${k}=${v}`).sort();
}

/**
 * Makes the target's postgresql.auto.conf look like an ordinary server's: the harness writes fsync,
 * synchronous_commit and full_page_writes = off there, which would hide whether the tool's tuning was
 * reverted. Adds one operator setting (maintenance_work_mem = 77MB) that the tool's tuning overrides.
 */
export async function prepareTargetAutoConf(c: Cluster): Promise<void> {
  await c.query(`ALTER SYSTEM RESET fsync`);
  await c.query(`ALTER SYSTEM RESET synchronous_commit`);
  await c.query(`ALTER SYSTEM RESET full_page_writes`);
  await c.query(`ALTER SYSTEM SET maintenance_work_mem = '77MB'`);
  await c.query(`select pg_reload_conf()`);
}

export const TUNED = ['fsync', 'synchronous_commit', 'full_page_writes', 'checkpoint_completion_target'];

/** Sessions of any pg-migrate run still open on a server. */
export async function migrateSessions(c: Cluster): Promise<string[]> {
  const rows = await c.query<{ a: string }>(
    `select application_name || ' ' || coalesce(datname, '') || ' ' || state as a from pg_stat_activity where application_name like 'pg-migrate/%'`,
  );
  return rows.map((r) => r.a);
}

export async function userDatabases(c: Cluster): Promise<string[]> {
  const rows = await c.query<{ datname: string }>(`select datname from pg_database where not datistemplate and datname <> 'postgres' order by datname`);
  return rows.map((r) => r.datname);
}

/** Asserts every table of `db` has the same count and the same rows on both servers. */
export async function assertSameData(src: Cluster, dst: Cluster, db: string): Promise<Map<string, number>> {
  const [a, b] = await Promise.all([tableCounts(src, db), tableCounts(dst, db)]);
  assert.deepEqual(Object.fromEntries(b), Object.fromEntries(a), `table counts of ${db}`);
  for (const table of a.keys()) {
    const [ha, hb] = await Promise.all([dumpRows(src, db, table), dumpRows(dst, db, table)]);
    assert.equal(hb, ha, `rows of ${db}.${table}`);
  }
  return a;
}

/** Stops clusters, ignoring those never started. */
export async function stopAll(clusters: (Cluster | undefined)[]): Promise<void> {
  await Promise.all(clusters.map((c) => (c ? c.stop().catch(() => undefined) : Promise.resolve())));
}
