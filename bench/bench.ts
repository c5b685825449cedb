/**
 * pg-migrate benchmark: pg-migrate beside `pg_dumpall | psql`, a hand-written pg_dump/pg_restore
 * loop and pgcopydb, on the same data, in the same run. See bench/README.md.
 *
 *   npm run bench -- --scale 1 --shape standard --rounds 3
 *   node dist/bench/bench.js --shape many-dbs --rounds 3 --out bench/results/many-dbs.json
 *   node dist/bench/bench.js --memory-check --scale 1
 */
import { existsSync, readFileSync } from 'node:fs';
import * as fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { CLI, CONTENDERS, REPO, benchEnv, traceWrapper, type Contender, type RunContext } from './contenders.ts';
import { runMeasured } from './measure.ts';
import { floorOf, median, renderTable, summarize, type Floor, type PgMigrateFigures, type RunRecord, type ContenderSummary } from './report.ts';
import { allCounts, compareCounts, reopenSource, resetForRun, serverCpuSeconds, allStats, sh, startServers, type BenchServers } from './servers.ts';
import { BenchWriter, WRITER_DBS, createWriterTables, removeWriterTables } from './writer.ts';
import { SHAPES, generate, type Shape, type WorkloadInfo } from './workload.ts';

const USAGE = `usage: node dist/bench/bench.js [options]
  --scale S              workload scale (default 1: about 1.2 GB over 6 databases)
  --shape LIST           standard | many-dbs | many-tables, comma list, or all (default standard)
  --rounds N             rounds; each round runs every contender once, interleaved (default 3)
  --contenders LIST      comma list (default all): ${CONTENDERS.map((c) => c.name).join(', ')}
  --out FILE             JSON results (default bench/results/latest.json)
  --memory-check         run pg-migrate only, at --scale S and 2S, and compare its peak RSS
  --keep                 keep the servers running at the end (prints how to reach them)
  -h, --help`;

const t00 = performance.now();
function log(msg: string): void {
  const s = ((performance.now() - t00) / 1000).toFixed(0).padStart(5);
  process.stdout.write(`[bench +${s}s] ${msg}\n`);
}

interface ShapeResult {
  shape: Shape;
  scale: number;
  workload: WorkloadInfo;
  contenders: { name: string; command: string }[];
  unavailable: Record<string, string>;
  runs: RunRecord[];
  summary: ContenderSummary[];
  floor?: Floor;
  perDatabaseOverhead?: unknown;
}

async function machineInfo(): Promise<Record<string, unknown>> {
  const lscpu = await sh('sh', ['-c', 'lscpu | head -20']);
  const model = /Model name:\s*(.*)/.exec(lscpu.stdout)?.[1]?.trim();
  const pgv = await sh('/usr/lib/postgresql/15/bin/postgres', ['--version']);
  const copydb = await sh('sh', ['-c', 'pgcopydb --version 2>/dev/null | head -1']);
  return {
    date: new Date().toISOString(),
    cores: os.availableParallelism(),
    cpuModel: model ?? os.cpus()[0]?.model,
    memoryGiB: +(os.totalmem() / 2 ** 30).toFixed(1),
    kernel: os.release(),
    postgres: pgv.stdout.trim(),
    pgcopydb: copydb.stdout.trim() || null,
    node: process.version,
  };
}

/** pgcopydb from Debian, installed on demand. Returns undefined when usable, else why not. */
async function ensurePgcopydb(): Promise<string | undefined> {
  const has = async (): Promise<boolean> => (await sh('sh', ['-c', 'command -v pgcopydb'])).code === 0;
  if (!(await has())) {
    log('pgcopydb missing: apt-get install -y pgcopydb');
    const r = await sh(
      'sh',
      ['-c', 'DEBIAN_FRONTEND=noninteractive apt-get install -y pgcopydb || (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y pgcopydb)'],
      { timeoutMs: 600_000 },
    );
    if (r.code !== 0 || !(await has())) return `could not install pgcopydb: ${r.stderr.trim().split('\n').slice(-2).join(' ')}`;
  }
  const v = await sh('pgcopydb', ['--version']);
  if (v.code !== 0) return `pgcopydb does not run: ${v.stderr.trim()}`;
  return undefined;
}

function tail(file: string, lines = 8): string {
  try {
    return readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).join(' | ');
  } catch {
    return '';
  }
}

async function readPgMigrateReport(file: string): Promise<PgMigrateFigures | undefined> {
  try {
    const r = JSON.parse(await fs.readFile(file, 'utf8')) as {
      elapsedSeconds: number;
      regularElapsedSeconds: number;
      parallelism: unknown;
      compression: unknown;
      databases: PgMigrateFigures['databases'];
    };
    const sum = (k: 'dumpSeconds' | 'restoreSeconds' | 'verifySeconds'): number => r.databases.reduce((a, d) => a + (d[k] ?? 0), 0);
    return {
      elapsedSeconds: r.elapsedSeconds,
      regularElapsedSeconds: r.regularElapsedSeconds,
      parallelism: r.parallelism,
      compression: r.compression,
      dumpSecondsSum: sum('dumpSeconds'),
      restoreSecondsSum: sum('restoreSeconds'),
      verifySecondsSum: sum('verifySeconds'),
      databases: r.databases.map((d) => ({
        name: d.name,
        status: d.status,
        dumpSeconds: d.dumpSeconds,
        restoreSeconds: d.restoreSeconds,
        verifySeconds: d.verifySeconds,
        regularSeconds: d.regularSeconds,
        totalSeconds: d.totalSeconds,
        rows: d.rows,
      })),
    };
  } catch {
    return undefined;
  }
}

interface OneRun {
  record: RunRecord;
  startedNs: bigint;
  endedNs: bigint;
}

async function runOne(
  servers: BenchServers,
  c: Contender,
  round: number,
  shape: Shape,
  srcCounts: Record<string, Record<string, number>>,
  logDir: string,
  extraPathFirst?: string,
  label = c.name,
): Promise<OneRun> {
  const cold = await resetForRun(servers);
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), `pgm-bench-${c.name}-`));
  const ctx: RunContext = { servers, dir, cores: os.availableParallelism(), shape };
  const logFile = path.join(logDir, `${shape}-${label}-r${round}.log`);
  await fs.rm(logFile, { force: true });
  await fs.rm(`${logFile}.time`, { force: true });
  // An online contender runs with applications writing: a writer per WRITER_DBS database, from before the run until the fence.
  let writers: BenchWriter[] = [];
  if (c.online) {
    await createWriterTables(servers.source);
    writers = WRITER_DBS.map((db) => new BenchWriter(servers.source, db));
    await new Promise((r) => setTimeout(r, 500));
  }
  const st0 = allStats();
  const src0 = serverCpuSeconds(servers.source, st0);
  const dst0 = serverCpuSeconds(servers.target, st0);
  let startedNs = 0n;
  const m = await runMeasured({ argv: c.argv(ctx), env: benchEnv(servers, extraPathFirst), logFile, cwd: dir }, () => {
    startedNs = BigInt(Date.now()) * 1_000_000n;
  });
  const endedNs = BigInt(Date.now()) * 1_000_000n;
  const endedAt = Date.now();
  await new Promise((r) => setTimeout(r, 300)); // let the last backends exit and be reaped
  const st1 = allStats();
  const record: RunRecord = {
    contender: label,
    round,
    status: 'ok',
    wallSeconds: m.wallSeconds,
    srcCpuSeconds: serverCpuSeconds(servers.source, st1) - src0,
    dstCpuSeconds: serverCpuSeconds(servers.target, st1) - dst0,
    clientCpuSeconds: m.clientCpuSeconds,
    toolPeakRssMB: m.toolPeakRssMB,
    largestClientRssMB: m.largestClientRssMB,
    droppedCaches: cold.droppedCaches,
  };
  if (c.reportFile) record.pgMigrate = await readPgMigrateReport(c.reportFile(ctx));
  // The time applications may not write: the whole run, or for an online contender the cutover's write stop.
  record.writeStopSeconds = m.wallSeconds;
  let expected = srcCounts;
  if (c.online) {
    const figures = await Promise.all(writers.map((w) => Promise.race([w.done, new Promise((r) => setTimeout(r, 5000)).then(() => w.stop())])));
    const stop = /writes were stopped for ([\d.]+) s/.exec(readFileSync(logFile, 'utf8'));
    if (stop) record.writeStopSeconds = Number(stop[1]);
    else delete record.writeStopSeconds;
    record.writers = figures.map((f) => ({
      db: f.db,
      commits: f.commits,
      endedBy: f.endedBy,
      // What the application saw: from its last commit on the source to the end of the cutover.
      gapSeconds: f.lastCommitAt > 0 ? (endedAt - f.lastCommitAt) / 1000 : null,
      ...(f.error === undefined ? {} : { error: f.error }),
    }));
    const gaps = record.writers.map((w) => w.gapSeconds).filter((g): g is number => g !== null);
    if (gaps.length > 0) record.writerGapSeconds = Math.max(...gaps);
    // The target holds what the writers committed: compare with the source as the cutover left it.
    expected = await allCounts(servers.source);
    const wrong = figures.filter((f) => f.error !== undefined || f.endedBy !== 'read-only' || f.commits === 0);
    if (m.exitCode === 0 && wrong.length > 0) {
      record.status = 'failed';
      record.error = `writers: ${wrong.map((f) => `${f.db}: ${f.error ?? `${String(f.commits)} commits, ended by ${f.endedBy}`}`).join('; ')}`;
    }
  }
  if (m.exitCode !== 0) {
    record.status = 'failed';
    record.error = `exit code ${m.exitCode}: ${tail(logFile)}`;
  } else if (record.status === 'ok') {
    const problems = compareCounts(expected, await allCounts(servers.target));
    if (problems) {
      record.status = 'failed';
      record.error = `check failed: ${problems}`;
    }
  }
  if (c.online) {
    await reopenSource(servers.source);
    await removeWriterTables(servers.source);
  }
  await fs.rm(dir, { recursive: true, force: true });
  const cpu = `cpu src ${record.srcCpuSeconds!.toFixed(1)} dst ${record.dstCpuSeconds!.toFixed(1)} client ${record.clientCpuSeconds!.toFixed(1)}`;
  const rss = `tool RSS ${m.toolPeakRssMB.toFixed(0)} MB, largest client ${m.largestClientRssMB.toFixed(0)} MB`;
  const stopText =
    record.writeStopSeconds === undefined
      ? ''
      : c.online
        ? `; writes stopped ${record.writeStopSeconds.toFixed(1)} s (the writers saw no commit for the last ${record.writerGapSeconds?.toFixed(1) ?? '-'} s; ${record.writers?.map((w) => `${w.db} ${String(w.commits)} commits`).join(', ') ?? ''})`
        : `; writes stopped ${record.writeStopSeconds.toFixed(1)} s (the whole run)`;
  if (record.status === 'ok') log(`  ${label} round ${round}: ${m.wallSeconds.toFixed(1)} s (${cpu}; ${rss}${stopText})`);
  else log(`  ${label} round ${round}: FAILED (${m.wallSeconds.toFixed(1)} s): ${record.error}`);
  if (record.pgMigrate) {
    const p = record.pgMigrate;
    log(
      `    pg-migrate report: elapsed ${p.elapsedSeconds.toFixed(1)} s, Σdump ${p.dumpSecondsSum.toFixed(1)} s, Σrestore ${p.restoreSecondsSum.toFixed(1)} s, Σverify ${p.verifySecondsSum.toFixed(1)} s, parallelism ${JSON.stringify(p.parallelism)}, compression ${String(p.compression)}`,
    );
  }
  return { record, startedNs, endedNs };
}

/** Sum of the union of intervals [a, b] (ns), clipped to [lo, hi]. */
function unionLength(intervals: [bigint, bigint][], lo: bigint, hi: bigint): bigint {
  const xs = intervals
    .map(([a, b]): [bigint, bigint] => [a < lo ? lo : a, b > hi ? hi : b])
    .filter(([a, b]) => b > a)
    .sort((p, q) => (p[0] < q[0] ? -1 : p[0] > q[0] ? 1 : 0));
  let total = 0n;
  let cur: [bigint, bigint] | undefined;
  for (const iv of xs) {
    if (!cur || iv[0] > cur[1]) {
      if (cur) total += cur[1] - cur[0];
      cur = [iv[0], iv[1]];
    } else if (iv[1] > cur[1]) cur[1] = iv[1];
  }
  if (cur) total += cur[1] - cur[0];
  return total;
}

/**
 * Extra, untimed pg-migrate run with pg_dump/pg_restore/pg_dumpall/psql wrappers first in PATH
 * that log each call's start and end. Overhead = wall time during which none of those tools was
 * running (startup, preflight, tuning, createdb, counting, verification, bookkeeping), per database.
 */
async function tracedOverhead(
  servers: BenchServers,
  shape: Shape,
  srcCounts: Record<string, Record<string, number>>,
  logDir: string,
  ndb: number,
): Promise<Record<string, unknown>> {
  const traceDir = await fs.mkdtemp(path.join(os.tmpdir(), 'pgm-bench-trace-'));
  const traceLog = path.join(traceDir, 'calls.log');
  for (const tool of ['pg_dump', 'pg_restore', 'pg_dumpall', 'psql']) {
    await fs.writeFile(path.join(traceDir, tool), traceWrapper(tool, traceLog), { mode: 0o755 });
  }
  const pgm = CONTENDERS.find((c) => c.name === 'pg-migrate')!;
  const run = await runOne(servers, pgm, 1, shape, srcCounts, logDir, traceDir, 'pg-migrate-traced');
  const calls = (existsSync(traceLog) ? readFileSync(traceLog, 'utf8') : '')
    .trim()
    .split('\n')
    .filter(Boolean)
    .map((l) => l.split(' '))
    .map(([tool, a, b]) => ({ tool: tool!, start: BigInt(a!), end: BigInt(b!) }));
  await fs.rm(traceDir, { recursive: true, force: true });
  const wallNs = run.endedNs - run.startedNs;
  const busy = unionLength(
    calls.map((c) => [c.start, c.end]),
    run.startedNs,
    run.endedNs,
  );
  const dumpRestore = calls.filter((c) => c.tool === 'pg_dump' || c.tool === 'pg_restore');
  const firstStart = calls.length ? calls.reduce((m, c) => (c.start < m ? c.start : m), calls[0]!.start) : run.endedNs;
  const lastEnd = calls.length ? calls.reduce((m, c) => (c.end > m ? c.end : m), calls[0]!.end) : run.startedNs;
  const s = (ns: bigint): number => Number(ns) / 1e9;
  const overhead = s(wallNs - busy);
  const result = {
    method:
      'one extra pg-migrate run (defaults) with logging wrappers for pg_dump, pg_restore, pg_dumpall and psql first in PATH; ' +
      'overhead = wall time during which none of these tools was running, divided by the number of databases',
    status: run.record.status,
    wallSeconds: run.record.wallSeconds,
    toolBusySeconds: s(busy),
    calls: { total: calls.length, pgDump: calls.filter((c) => c.tool === 'pg_dump').length, pgRestore: calls.filter((c) => c.tool === 'pg_restore').length },
    dumpRestoreCpuPathSeconds: s(
      unionLength(
        dumpRestore.map((c) => [c.start, c.end]),
        run.startedNs,
        run.endedNs,
      ),
    ),
    beforeFirstToolSeconds: s(firstStart - run.startedNs),
    afterLastToolSeconds: s(run.endedNs - lastEnd),
    overheadSeconds: overhead,
    databases: ndb,
    overheadMsPerDatabase: (overhead * 1000) / ndb,
    overheadMsPerDatabaseExcludingStartAndEnd: ((overhead - s(firstStart - run.startedNs) - s(run.endedNs - lastEnd)) * 1000) / ndb,
  };
  log(
    `  per-database overhead (traced run): wall ${result.wallSeconds!.toFixed(1)} s, tools busy ${result.toolBusySeconds.toFixed(1)} s, ` +
      `idle-of-tools ${overhead.toFixed(1)} s (start ${result.beforeFirstToolSeconds.toFixed(1)} s, end ${result.afterLastToolSeconds.toFixed(1)} s) ` +
      `→ ${result.overheadMsPerDatabase.toFixed(0)} ms/db (${result.overheadMsPerDatabaseExcludingStartAndEnd.toFixed(0)} ms/db without start-up and finish)`,
  );
  return result;
}

async function runShape(
  shape: Shape,
  scale: number,
  wanted: Contender[],
  rounds: number,
  unavailable: Record<string, string>,
  keep: boolean,
  logDir: string,
): Promise<ShapeResult> {
  log(`shape ${shape}, scale ${scale}: starting source and target (PostgreSQL 15, shared_buffers 1GB, max_wal_size 4GB, max_connections 200, fsync on)`);
  const servers = await startServers(shape);
  log(`  source 127.0.0.1:${servers.source.port} (${servers.source.dataDir}), target 127.0.0.1:${servers.target.port}`);
  try {
    log('  generating the workload on the source');
    const workload = await generate(servers.source, shape, scale, log);
    log(
      `  workload: ${workload.databases.length} database(s), ${(workload.totalBytes / 2 ** 30).toFixed(2)} GiB, generated in ${workload.seconds.toFixed(0)} s`,
    );
    const srcCounts = await allCounts(servers.source);
    const contenders = wanted.filter((c) => !c.shapes || c.shapes.includes(shape));
    const runs: RunRecord[] = [];
    for (let round = 1; round <= rounds; round++) {
      log(`  round ${round}/${rounds}`);
      for (const c of contenders) {
        if (unavailable[c.name]) {
          runs.push({ contender: c.name, round, status: 'unavailable', error: unavailable[c.name] });
          continue;
        }
        runs.push((await runOne(servers, c, round, shape, srcCounts, logDir)).record);
      }
    }
    const cores = os.availableParallelism();
    const summary = summarize(
      runs,
      contenders.map((c) => c.name),
    );
    const floor = floorOf(runs, cores);
    const result: ShapeResult = {
      shape,
      scale,
      workload,
      contenders: contenders.map((c) => ({ name: c.name, command: c.describe(cores) })),
      unavailable,
      runs,
      summary,
    };
    if (floor) result.floor = floor;
    if (shape === 'many-dbs' && contenders.some((c) => c.name === 'pg-migrate')) {
      const traced = await tracedOverhead(servers, shape, srcCounts, logDir, workload.databases.length);
      const pgm = summary.find((s) => s.contender === 'pg-migrate')?.medianWall;
      const loop = summary.find((s) => s.contender === 'dump-restore-loop')?.medianWall;
      result.perDatabaseOverhead = {
        traced,
        versusDumpRestoreLoopMsPerDatabase: pgm !== undefined && loop !== undefined ? ((pgm - loop) * 1000) / workload.databases.length : null,
      };
    }
    printShape(result);
    return result;
  } finally {
    if (keep) {
      log(
        `  --keep: servers left running: source port ${servers.source.port}, target port ${servers.target.port}, password ${servers.password}, data in ${servers.source.baseDir} and ${servers.target.baseDir}`,
      );
      // The harness stops servers at exit: stay alive until interrupted (a pending promise alone does
      // not keep Node's event loop alive; a timer does).
      await new Promise(() => setInterval(() => undefined, 1 << 30));
    }
    await Promise.all([servers.source.stop(), servers.target.stop()]);
  }
}

function printShape(r: ShapeResult): void {
  const lines: string[] = [];
  lines.push('');
  lines.push(
    `== ${r.shape}, scale ${r.scale}: ${r.workload.databases.length} database(s), ${(r.workload.totalBytes / 2 ** 30).toFixed(2)} GiB; wall seconds over ${Math.max(...r.runs.map((x) => x.round))} round(s); ratio = median / pg-migrate's median`,
  );
  lines.push(renderTable(r.summary));
  if (r.floor) {
    lines.push(
      `floor: fastest run (${r.floor.contender}, round ${r.floor.round}, ${r.floor.wallSeconds.toFixed(1)} s) used ${r.floor.totalCpuSeconds.toFixed(1)} CPU s (servers + clients) ÷ ${r.floor.cores} cores = ${r.floor.floorSeconds.toFixed(1)} s`,
    );
  }
  for (const s of r.summary) if (s.status === 'unavailable') lines.push(`${s.contender}: unavailable: ${r.unavailable[s.contender] ?? ''}`);
  for (const run of r.runs) if (run.status === 'failed') lines.push(`${run.contender} round ${run.round} failed: ${run.error}`);
  const pgm = r.runs.filter((x) => x.contender.startsWith('pg-migrate') && x.pgMigrate && x.status === 'ok');
  for (const name of [...new Set(pgm.map((x) => x.contender))]) {
    const mine = pgm.filter((x) => x.contender === name);
    const p = mine[0]!.pgMigrate!;
    lines.push(
      `${name} (its report, medians): elapsed ${median(mine.map((x) => x.pgMigrate!.elapsedSeconds)).toFixed(1)} s, regular phase ${median(mine.map((x) => x.pgMigrate!.regularElapsedSeconds)).toFixed(1)} s, ` +
        `Σdump ${median(mine.map((x) => x.pgMigrate!.dumpSecondsSum)).toFixed(1)} s, Σrestore ${median(mine.map((x) => x.pgMigrate!.restoreSecondsSum)).toFixed(1)} s, Σverify ${median(mine.map((x) => x.pgMigrate!.verifySecondsSum)).toFixed(1)} s; ` +
        `parallelism ${JSON.stringify(p.parallelism)}, compression ${String(p.compression)}`,
    );
  }
  if (r.perDatabaseOverhead) {
    const o = r.perDatabaseOverhead as {
      traced: { overheadMsPerDatabase: number; overheadMsPerDatabaseExcludingStartAndEnd: number };
      versusDumpRestoreLoopMsPerDatabase: number | null;
    };
    lines.push(
      `per-database overhead of pg-migrate: ${o.traced.overheadMsPerDatabase.toFixed(0)} ms/db (wall time with no pg_dump/pg_restore/pg_dumpall/psql running, traced run; ` +
        `${o.traced.overheadMsPerDatabaseExcludingStartAndEnd.toFixed(0)} ms/db without start-up and finish)` +
        (o.versusDumpRestoreLoopMsPerDatabase === null
          ? ''
          : `; median wall vs the dump-restore loop: ${o.versusDumpRestoreLoopMsPerDatabase >= 0 ? '+' : ''}${o.versusDumpRestoreLoopMsPerDatabase.toFixed(0)} ms/db`),
    );
  }
  lines.push('commands:');
  for (const c of r.contenders) lines.push(`  ${c.name}: ${c.command}`);
  process.stdout.write(`${lines.join('\n')}\n\n`);
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      scale: { type: 'string', default: '1' },
      shape: { type: 'string', default: 'standard' },
      rounds: { type: 'string', default: '3' },
      contenders: { type: 'string' },
      out: { type: 'string', default: path.join(REPO, 'bench', 'results', 'latest.json') },
      keep: { type: 'boolean', default: false },
      'memory-check': { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
    strict: true,
  });
  if (values.help) {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  const scale = Number(values.scale);
  const rounds = Number(values.rounds);
  if (!(scale > 0) || !Number.isInteger(rounds) || rounds < 1) {
    process.stderr.write(`bench: --scale must be > 0 and --rounds a whole number >= 1\n${USAGE}\n`);
    return 2;
  }
  const shapes: Shape[] = values.shape === 'all' ? SHAPES : (values.shape.split(',').map((s) => s.trim()) as Shape[]);
  for (const s of shapes) if (!SHAPES.includes(s)) return (process.stderr.write(`bench: unknown shape ${s}\n`), 2);
  let wanted = CONTENDERS;
  if (values.contenders) {
    const names = values.contenders.split(',').map((s) => s.trim());
    for (const n of names) if (!CONTENDERS.some((c) => c.name === n)) return (process.stderr.write(`bench: unknown contender ${n}\n`), 2);
    wanted = CONTENDERS.filter((c) => names.includes(c.name));
  }
  if (values['memory-check']) wanted = CONTENDERS.filter((c) => c.name === 'pg-migrate');
  if (!existsSync(CLI)) return (process.stderr.write(`bench: ${CLI} missing: run npm run build\n`), 2);
  if (process.getuid?.() !== 0) log('warning: not root: cannot drop the page cache, and the servers must run as the postgres user');

  const out = path.resolve(values.out);
  const logDir = path.join(path.dirname(out), 'logs');
  await fs.mkdir(logDir, { recursive: true });
  const unavailable: Record<string, string> = {};
  if (wanted.some((c) => c.name === 'pgcopydb')) {
    const why = await ensurePgcopydb();
    if (why) {
      unavailable.pgcopydb = why;
      log(`pgcopydb unavailable: ${why}`);
    }
  }
  const machine = await machineInfo();
  log(`machine: ${String(machine.cores)} cores (${JSON.stringify(machine.cpuModel)}), ${String(machine.memoryGiB)} GiB, ${String(machine.postgres)}`);
  const results: Record<string, unknown> = { machine, args: values, shapes: [] as ShapeResult[] };
  const save = async (): Promise<void> => {
    await fs.mkdir(path.dirname(out), { recursive: true });
    await fs.writeFile(out, `${JSON.stringify(results, null, 2)}\n`);
  };

  if (values['memory-check']) {
    const points: { scale: number; toolPeakRssMB: number; medianWall?: number; status: string }[] = [];
    for (const s of [scale, scale * 2]) {
      const r = await runShape('standard', s, wanted, rounds, unavailable, false, logDir);
      (results.shapes as ShapeResult[]).push(r);
      const sum = r.summary.find((x) => x.contender === 'pg-migrate')!;
      points.push({ scale: s, toolPeakRssMB: sum.peakToolRssMB ?? NaN, medianWall: sum.medianWall, status: sum.status });
      await save();
    }
    const ratio = points[1]!.toolPeakRssMB / points[0]!.toolPeakRssMB;
    results.memoryCheck = { points, ratio, withinTenPercent: Math.abs(ratio - 1) <= 0.1 };
    await save();
    process.stdout.write(
      `memory check: pg-migrate peak RSS (node process, VmHWM) ${points.map((p) => `S=${p.scale}: ${p.toolPeakRssMB.toFixed(0)} MB (${p.medianWall?.toFixed(1) ?? '-'} s)`).join(', ')}; ` +
        `ratio ${ratio.toFixed(3)} → ${Math.abs(ratio - 1) <= 0.1 ? 'flat (within 10%)' : 'NOT within 10%'}\n`,
    );
  } else {
    for (const shape of shapes) {
      (results.shapes as ShapeResult[]).push(await runShape(shape, scale, wanted, rounds, unavailable, values.keep, logDir));
      await save();
    }
  }
  log(`results written to ${out} (logs in ${logDir})`);
  return 0;
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    process.stderr.write(`bench: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exitCode = 1;
  },
);
