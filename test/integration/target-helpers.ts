/**
 * Helpers for the end-to-end tests of #12 (target*.test.ts): servers of any version and workspaces
 * with their cleanup, the passfile directories a run makes, waiting for a restore that is loading
 * rows, and checks that the target's postgresql.auto.conf is as the operator had it and that no
 * secret reached the CLI's output.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import * as fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach } from 'node:test';
import { startCluster, type Cluster, type StartClusterOptions } from '../harness/cluster.ts';
import { autoConf, CLI, NODE, REPO_ROOT } from './cli.ts';
import { killAll, makeWorkspace, processesMentioning, sleep, stateFile, type CliResult, type RunningCli, type Workspace } from './delayed-helpers.ts';
import { copyInto, scalar, waitDuring } from './safety-helpers.ts';

export interface TargetFixtures {
  /** A server (stopped after the test). */
  cluster: (opts: StartClusterOptions) => Promise<Cluster>;
  /** State and dump directories (removed after the test, with whatever a killed run left under them). */
  workspace: (label: string) => Promise<Workspace>;
  /** A CLI that is killed (with its parent, for startCliUnreaped) and whose passfile directories are removed after the test. */
  track: <R extends RunningCli & { pid?: number }>(run: R) => R;
}

/**
 * Registers an afterEach that kills what a run left under the test's dump roots (the CLI itself
 * included: its command line names the dump root), stops the servers, removes the directories and
 * the passfile directories of the tracked runs; returns what creates them.
 */
export function targetFixtures(): TargetFixtures {
  const clusters: Cluster[] = [];
  const workspaces: Workspace[] = [];
  const pids: number[] = [];
  const runs: RunningCli[] = [];
  afterEach(async () => {
    for (const ws of workspaces) killAll(processesMentioning(ws.dumpRoot).map((p) => p.pid));
    for (const run of runs.splice(0)) if (run.child.exitCode === null && run.child.signalCode === null) run.child.kill('SIGKILL');
    await Promise.all(clusters.splice(0).map((c) => c.stop()));
    for (const pid of pids.splice(0)) for (const dir of passfileDirs(pid)) await fs.rm(dir, { recursive: true, force: true });
    await Promise.all(workspaces.splice(0).map((ws) => fs.rm(ws.dir, { recursive: true, force: true })));
  });
  return {
    async cluster(opts) {
      const c = await startCluster(opts);
      clusters.push(c);
      return c;
    },
    async workspace(label) {
      const ws = await makeWorkspace(label);
      workspaces.push(ws);
      return ws;
    },
    track(run) {
      const pid = run.pid ?? run.child.pid;
      if (pid !== undefined) pids.push(pid);
      runs.push(run);
      return run;
    },
  };
}

/** The private passfile directories a run with this pid made: <tmpdir>/pg-migrate-<pid>-*. */
export function passfileDirs(pid: number): string[] {
  const prefix = `pg-migrate-${String(pid)}-`;
  return readdirSync(os.tmpdir())
    .filter((name) => name.startsWith(prefix))
    .map((name) => path.join(os.tmpdir(), name));
}

/**
 * Waits until the restore of `db` is loading rows into `table` on the target (its restore_started
 * marker written, a COPY of the run into the table with rows processed) and every database of
 * `verified` has verified. A run that ends first is a timing miss of the test (inconclusive), not a
 * failure of the tool.
 *
 * (`verified`: a kill -9 in the moment between pg_restore --create making a database and the run
 * recording its oid leaves that database unknown to the next run, which then refuses it, as
 * documented; the tests here kill while the small database is long done.)
 */
export async function restoreLoading(run: RunningCli, ws: Workspace, dst: Cluster, db = 'big', table = 't', verified: string[] = []): Promise<number> {
  return waitDuring(
    run,
    `the restore of ${db} to load rows into ${table} on the target${verified.length > 0 ? `, ${verified.join(', ')} verified` : ''}`,
    async () =>
      existsSync(stateFile(ws, `${db}.restore_started`)) && verified.every((v) => existsSync(stateFile(ws, `${v}.verify`)))
        ? copyInto(dst, db, table).catch(() => undefined)
        : undefined,
    { inconclusive: true, intervalMs: 10, timeoutMs: 150_000 },
  );
}

/** Whether a postgresql.auto.conf (autoConf lines) carries pg-migrate's tuning (the harness's own fsync=off is reset by prepareTargetAutoConf). */
export function tuned(conf: string[]): boolean {
  return conf.includes('fsync=off');
}

/** Asserts the target's postgresql.auto.conf is exactly as before the first run: no tuning value, no pg_migrate.tuning record. */
export async function assertConfAsBefore(dst: Cluster, before: string[], label: string, r: CliResult): Promise<void> {
  const now = await autoConf(dst);
  assert.ok(!now.some((l) => l.startsWith('pg_migrate.tuning=')), `${label}: no pg_migrate.tuning record left on the target: ${now.join(', ')}\n${r.output}`);
  assert.deepEqual(now, before, `${label}: the target's postgresql.auto.conf is as before the first run\n${r.output}`);
}

/** One number from a query, with the CLI's output in the message when the query fails. */
export async function scalarAfter(c: Cluster, sql: string, r: CliResult, db?: string): Promise<number> {
  try {
    return await scalar(c, sql, [], db);
  } catch (err) {
    return assert.fail(`${sql}: ${(err as Error).message}\n${r.output}`);
  }
}

/** Rows of a query, with the CLI's output in the message when the query fails. */
export async function rowsAfter<T = any>(c: Cluster, sql: string, r: CliResult, db?: string): Promise<T[]> {
  try {
    return await c.query<T>(sql, [], db);
  } catch (err) {
    return assert.fail(`${sql}: ${(err as Error).message}\n${r.output}`);
  }
}

/** The environment of a running process, by name (undefined when it is gone). */
export function environOf(pid: number): Map<string, string> | undefined {
  let raw: string;
  try {
    raw = readFileSync(`/proc/${String(pid)}/environ`, 'utf8');
  } catch {
    return undefined;
  }
  return new Map(
    raw
      .split('\0')
      .filter((kv) => kv.includes('='))
      .map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)] as [string, string]),
  );
}

/** Whether a process is a zombie: exited, not yet reaped by its parent. */
export function zombie(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${String(pid)}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) === 'Z';
  } catch {
    return false;
  }
}

export interface UnreapedCli extends RunningCli {
  /** The CLI's pid (its parent is `child`, a shell turned into `sleep`, which never reaps it). */
  pid: number;
}

/**
 * Starts the CLI (with --progress plain, in a cleaned environment like cli.ts's startCli) as the child
 * of a process that never waits for its children (`sh` that execs `sleep`): once killed, the CLI stays
 * a zombie until `child` is killed, as under a supervisor or a container entrypoint that does not reap.
 */
export async function startCliUnreaped(args: string[], env: Record<string, string>): Promise<UnreapedCli> {
  const clean: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) if (v !== undefined && !k.startsWith('PG_MIGRATE_') && !/^PG[A-Z]+$/.test(k)) clean[k] = v;
  const child = spawn('sh', ['-c', '"$@" & echo "cli-pid:$!"; exec sleep 600', 'sh', NODE, CLI, ...args, '--progress', 'plain'], {
    cwd: REPO_ROOT,
    env: { ...clean, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const output = (): string => `${stdout}\n--- stderr ---\n${stderr}`;
  const done = new Promise<CliResult>((resolve) =>
    child.on('close', (code, signal) => {
      resolve({ code, signal, stdout, stderr, output: output(), ms: 0 });
    }),
  );
  const deadline = Date.now() + 10_000;
  for (;;) {
    const m = /^cli-pid:(\d+)$/m.exec(stdout);
    if (m) return { child, done, output, pid: Number(m[1]) };
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      return assert.fail(`the CLI was not started\n${output()}`);
    }
    await sleep(10);
  }
}

/** Asserts none of `secrets` appears in `text` (the CLI's output, a report), naming which one did. */
export function assertNoSecrets(text: string, secrets: string[], where: string, shown: string): void {
  for (const s of secrets) assert.ok(!text.includes(s), `${JSON.stringify(s)} appears in ${where}\n${shown}`);
}
