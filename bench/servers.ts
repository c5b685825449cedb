/**
 * The two throw-away servers of a benchmark run (PostgreSQL 15 via test/harness/cluster.ts),
 * their CPU accounting, and the "empty the target / go cold" step between contenders.
 */
import { execFile } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import * as fs from 'node:fs/promises';
import path from 'node:path';
import { startCluster, type Cluster } from '../test/harness/cluster.ts';

/** Realistic settings (the harness defaults are tuned for tests: fsync off, 64MB shared_buffers). */
export const BENCH_SETTINGS: Record<string, string | number | boolean> = {
  listen_addresses: '127.0.0.1',
  fsync: true,
  synchronous_commit: true,
  full_page_writes: true,
  shared_buffers: '1GB',
  max_wal_size: '4GB',
  max_connections: 200,
  log_min_messages: 'warning',
};

/**
 * The source is ready for logical replication (pg-migrate-online): wal_level = logical costs the
 * offline contenders nothing, since they only read the source. The target gets room for one apply
 * worker per database; it keeps wal_level = replica, as an ordinary target has.
 */
export const SOURCE_SETTINGS: Record<string, string | number | boolean> = {
  ...BENCH_SETTINGS,
  wal_level: 'logical',
  max_replication_slots: 20,
  max_wal_senders: 20,
};
export const TARGET_SETTINGS: Record<string, string | number | boolean> = {
  ...BENCH_SETTINGS,
  max_logical_replication_workers: 8,
  max_worker_processes: 16,
};

export const CLK_TCK = 100;

export interface BenchServers {
  source: Cluster;
  target: Cluster;
  password: string;
  /** postgresql.auto.conf of each server right after start: what "ALTER SYSTEM reset" goes back to. */
  baseline: { source: string; target: string };
}

export async function startServers(label: string): Promise<BenchServers> {
  const password = `bench-${Math.random().toString(36).slice(2, 10)}`;
  const [source, target] = await Promise.all([
    startCluster({ version: 'system', password, settings: SOURCE_SETTINGS, name: `bench-src-${label}` }),
    startCluster({ version: 'system', password, settings: TARGET_SETTINGS, name: `bench-dst-${label}` }),
  ]);
  const baseline = {
    source: await fs.readFile(path.join(source.dataDir, 'postgresql.auto.conf'), 'utf8'),
    target: await fs.readFile(path.join(target.dataDir, 'postgresql.auto.conf'), 'utf8'),
  };
  return { source, target, password, baseline };
}

export function sh(cmd: string, args: string[], opts: { timeoutMs?: number } = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(cmd, args, { timeout: opts.timeoutMs ?? 300_000, maxBuffer: 64 * 1024 * 1024, cwd: '/tmp' }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : 1) : 0;
      resolve({ code, stdout, stderr: stderr || (err ? err.message : '') });
    });
  });
}

export function postmasterPid(c: Cluster): number {
  return Number(readFileSync(path.join(c.dataDir, 'postmaster.pid'), 'utf8').split('\n')[0]);
}

interface ProcStat {
  pid: number;
  ppid: number;
  /** utime + stime, ticks */
  own: number;
  /** cutime + cstime (reaped children), ticks */
  children: number;
}

function readStat(pid: number): ProcStat | undefined {
  try {
    const s = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const rest = s.slice(s.lastIndexOf(')') + 2).split(' ');
    // rest[0] = state (field 3), rest[1] = ppid (4), rest[11..14] = utime stime cutime cstime (14..17)
    return { pid, ppid: Number(rest[1]), own: Number(rest[11]) + Number(rest[12]), children: Number(rest[13]) + Number(rest[14]) };
  } catch {
    return undefined;
  }
}

export function allStats(): ProcStat[] {
  const out: ProcStat[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const st = readStat(Number(name));
    if (st) out.push(st);
  }
  return out;
}

/**
 * CPU seconds a server has used so far: the postmaster's own and reaped children's time
 * (backends that exited were reaped by the postmaster, so their CPU is in its cutime/cstime)
 * plus the time of children still alive (checkpointer, walwriter, live backends).
 */
export function serverCpuSeconds(c: Cluster, stats = allStats()): number {
  const pm = postmasterPid(c);
  let ticks = 0;
  for (const st of stats) {
    if (st.pid === pm) ticks += st.own + st.children;
    else if (st.ppid === pm) ticks += st.own + st.children;
  }
  return ticks / CLK_TCK;
}

async function restart(c: Cluster): Promise<void> {
  const r = await sh('runuser', [
    '-u',
    'postgres',
    '--',
    path.join(c.binDir, 'pg_ctl'),
    '-D',
    c.dataDir,
    '-l',
    c.logFile,
    '-m',
    'fast',
    '-w',
    '-t',
    '120',
    'restart',
  ]);
  if (r.code !== 0) throw new Error(`pg_ctl restart failed: ${r.stderr}${r.stdout}`);
}

async function writeAutoConf(c: Cluster, text: string): Promise<void> {
  const file = path.join(c.dataDir, 'postgresql.auto.conf');
  await fs.writeFile(file, text);
  await sh('chown', ['postgres:', file]);
}

/** Drops every database but postgres and the templates, and every role but postgres. */
export async function emptyServer(c: Cluster): Promise<void> {
  const dbs = await c.query<{ datname: string }>(`select datname from pg_database where not datistemplate and datname <> 'postgres'`);
  // A database with a subscription cannot be dropped: detach each one left by a failed online run (its slot is the source's business).
  const subs = await c.query<{ subname: string; db: string }>(
    `select s.subname, d.datname as db from pg_subscription s join pg_database d on d.oid = s.subdbid`,
  );
  for (const { subname, db } of subs) {
    await c.withClient(async (client) => {
      await client.query(`alter subscription ${qi(subname)} disable`);
      await client.query(`alter subscription ${qi(subname)} set (slot_name = none)`);
      await client.query(`drop subscription ${qi(subname)}`);
    }, db);
  }
  for (const { datname } of dbs) await c.query(`drop database ${qi(datname)} with (force)`);
  const roles = await c.query<{ rolname: string }>(`select rolname from pg_roles where rolname !~ '^pg_' and rolname <> 'postgres'`);
  for (const { rolname } of roles) {
    await c.query(`drop owned by ${qi(rolname)} cascade`);
    await c.query(`drop role ${qi(rolname)}`);
  }
}

/**
 * After an online contender: the source as the other contenders find it. Its databases writable again
 * (the cutover leaves them read-only), and what a failed run may have left dropped: pg-migrate's
 * replication slots and publications.
 */
export async function reopenSource(c: Cluster): Promise<void> {
  const dbs = await c.query<{ datname: string }>(`select datname from pg_database where not datistemplate and datname <> 'postgres'`);
  for (const { datname } of dbs) await c.query(`alter database ${qi(datname)} reset default_transaction_read_only`);
  await c.query(`select pg_terminate_backend(active_pid) from pg_replication_slots where slot_name like 'pg\\_migrate\\_%' and active_pid is not null`);
  await new Promise((r) => setTimeout(r, 200));
  await c.query(`select pg_drop_replication_slot(slot_name) from pg_replication_slots where slot_name like 'pg\\_migrate\\_%' and not active`);
  for (const { datname } of dbs) {
    const pubs = await c.query<{ pubname: string }>(`select pubname from pg_publication where pubname like 'pg\\_migrate\\_%'`, [], datname);
    for (const { pubname } of pubs) await c.query(`drop publication ${qi(pubname)}`, [], datname);
  }
}

export interface ColdStartInfo {
  droppedCaches: boolean;
}

/**
 * Between contenders: empty the target (databases, roles, ALTER SYSTEM settings back to the
 * baseline postgresql.auto.conf), restart both servers (cold shared_buffers, settings applied),
 * CHECKPOINT, sync and drop the OS page cache when permitted.
 */
export async function resetForRun(s: BenchServers): Promise<ColdStartInfo> {
  await emptyServer(s.target);
  await writeAutoConf(s.target, s.baseline.target);
  await writeAutoConf(s.source, s.baseline.source);
  await Promise.all([restart(s.source), restart(s.target)]);
  await Promise.all([s.source.query('checkpoint'), s.target.query('checkpoint')]);
  const r = await sh('sh', ['-c', 'sync && echo 3 > /proc/sys/vm/drop_caches']);
  return { droppedCaches: r.code === 0 };
}

export function qi(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}

/** Exact row counts of every table of every non-template database except postgres. */
export async function allCounts(c: Cluster): Promise<Record<string, Record<string, number>>> {
  const dbs = await c.query<{ datname: string }>(`select datname from pg_database where not datistemplate and datname <> 'postgres' order by 1`);
  const out: Record<string, Record<string, number>> = {};
  // Two databases at a time (the machine has few cores and the counts are I/O + CPU).
  const queue = dbs.map((d) => d.datname);
  const worker = async (): Promise<void> => {
    for (;;) {
      const db = queue.shift();
      if (db === undefined) return;
      const rows = await c.query<{ t: string; n: string }>(
        `select quote_ident(n.nspname) || '.' || quote_ident(r.relname) as t,
                (xpath('/row/c/text()', query_to_xml(format('select count(*) as c from %I.%I', n.nspname, r.relname), false, true, '')))[1]::text as n
           from pg_class r join pg_namespace n on n.oid = r.relnamespace
          where r.relkind in ('r', 'p') and n.nspname not in ('pg_catalog', 'information_schema') and n.nspname !~ '^pg_toast'
            and not r.relispartition`,
        [],
        db,
      );
      out[db] = Object.fromEntries(rows.map((r) => [r.t, Number(r.n)]));
    }
  };
  await Promise.all([worker(), worker()]);
  return out;
}

/** Empty string when the target has every source database and table with the same row count. */
export function compareCounts(src: Record<string, Record<string, number>>, dst: Record<string, Record<string, number>>): string {
  const problems: string[] = [];
  for (const [db, tables] of Object.entries(src)) {
    const d = dst[db];
    if (!d) {
      problems.push(`database ${db} missing`);
      continue;
    }
    for (const [t, n] of Object.entries(tables)) {
      if (d[t] === undefined) problems.push(`${db}: table ${t} missing`);
      else if (d[t] !== n) problems.push(`${db}: ${t} has ${d[t]} rows, source ${n}`);
    }
  }
  if (problems.length === 0) return '';
  return `${problems.length} problem(s): ${problems.slice(0, 5).join('; ')}${problems.length > 5 ? '; ...' : ''}`;
}
