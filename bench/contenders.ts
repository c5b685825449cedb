/**
 * The contenders: pg-migrate (defaults, with --verify checksum, with --delay-table-data analytics.events, ...), and what
 * users already have: `pg_dumpall | psql`, a hand-written pg_dump -Fd -j / pg_restore -j loop,
 * and pgcopydb (one database per run).
 */
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { BenchServers } from './servers.ts';
import type { Shape } from './workload.ts';

export const PG_BIN = '/usr/lib/postgresql/15/bin';
export const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const CLI = path.join(REPO, 'dist', 'src', 'cli.js');

export interface RunContext {
  servers: BenchServers;
  /** Fresh empty directory for this run (dumps, state, work dirs). */
  dir: string;
  cores: number;
  shape: Shape;
}

export interface Contender {
  name: string;
  /** One line for the report: what exactly runs. */
  describe: (cores: number) => string;
  shapes?: Shape[];
  /** argv run under /usr/bin/time */
  argv: (ctx: RunContext) => string[];
  /** The tool's JSON report, when it writes one. */
  reportFile?: (ctx: RunContext) => string;
  /**
   * An online contender: applications may write during its run (a writer runs, bench/writer.ts), and
   * the time during which they may not is the cutover's write stop, read from its output. For every
   * other contender it is the whole run.
   */
  online?: boolean;
}

/**
 * PATH for every contender: PostgreSQL 15's own bin dir first, so that no contender goes through
 * Debian's perl pg_wrapper in /usr/bin (≈ 30 ms per call, which would blur per-database figures).
 */
export function benchEnv(s: BenchServers, extraPathFirst?: string): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) if (v !== undefined && !k.startsWith('PG')) env[k] = v;
  env.PATH = [extraPathFirst, PG_BIN, process.env.PATH ?? '/usr/bin:/bin'].filter(Boolean).join(':');
  env.PGPASSWORD = s.password; // both servers share the password
  env.PGUSER = 'postgres';
  env.PGHOST = '127.0.0.1';
  env.LC_ALL = 'C.UTF-8';
  return env;
}

function pgMigrateArgs(ctx: RunContext, extra: string[]): string[] {
  const { source, target, password } = ctx.servers;
  return [
    process.execPath,
    CLI,
    '--from-host',
    '127.0.0.1',
    '--from-port',
    String(source.port),
    '--from-pass',
    password,
    '--to-host',
    '127.0.0.1',
    '--to-port',
    String(target.port),
    '--to-pass',
    password,
    '--state-dir',
    path.join(ctx.dir, 'state'),
    '--dump-root',
    path.join(ctx.dir, 'dumps'),
    '--progress',
    'plain',
    '--report',
    path.join(ctx.dir, 'report.json'),
    ...extra,
  ];
}

/** A word for bash -c, single-quoted. */
const shq = (s: string): string => `'${s.replaceAll("'", "'\\''")}'`;

/** Exits 0 when every database replicates, applying, less than 1 MiB behind (`pg-migrate status --json` on stdin). */
const CAUGHT_UP_CHECK =
  "const s = JSON.parse(require('fs').readFileSync(0, 'utf8')); const r = s.databases.map((d) => d.replication).filter(Boolean); " +
  "process.exit(r.length > 0 && r.every((x) => x.state === 'replicating' && x.applying === true && x.lagBytes !== null && x.lagBytes < 1048576) ? 0 : 1)";

/**
 * pg-migrate --online; then the online phase, as an operator would run it: `pg-migrate status` once a
 * second until every database replicates less than 1 MiB behind (at most 120 s); then pg-migrate
 * cutover (defaults: 3 s grace, then the sessions still open on the source are ended), with the same
 * servers and state. One bash command, so that the wall time and the CPU figures cover all of it.
 */
function onlineScript(ctx: RunContext): string {
  const { source, target, password } = ctx.servers;
  const conn = ['--from-host', '127.0.0.1', '--from-port', String(source.port), '--from-pass', password];
  conn.push('--to-host', '127.0.0.1', '--to-port', String(target.port), '--to-pass', password);
  const state = ['--state-dir', path.join(ctx.dir, 'state')];
  const migrate = pgMigrateArgs(ctx, ['--online']);
  const status = [process.execPath, CLI, 'status', ...conn, ...state, '--json'];
  const cutover = [process.execPath, CLI, 'cutover', ...conn, ...state, '--dump-root', path.join(ctx.dir, 'dumps'), '--progress', 'plain'];
  return [
    'set -eo pipefail',
    migrate.map(shq).join(' '),
    'for i in $(seq 1 120); do',
    `  if ${status.map(shq).join(' ')} 2>/dev/null | ${shq(process.execPath)} -e ${shq(CAUGHT_UP_CHECK)}; then echo "online phase: caught up after $i status checks"; break; fi`,
    '  sleep 1',
    'done',
    cutover.map(shq).join(' '),
  ].join('\n');
}

/** Databases of the source, as a shell loop would list them. */
const LIST_DBS = (srcPort: number): string =>
  `psql -X -A -t -p ${srcPort} -d postgres -c "select datname from pg_database where not datistemplate and datname <> 'postgres' order by 1"`;

/** Roles and tablespaces first, as every per-database tool needs them. ON_ERROR_STOP off: "role postgres already exists" is expected. */
const GLOBALS = (srcPort: number, dstPort: number): string => `pg_dumpall -p ${srcPort} --globals-only | psql -X -q -p ${dstPort} -d postgres >/dev/null`;

export function loopScript(srcPort: number, dstPort: number, jobs: number, dir: string): string {
  return [
    'set -eo pipefail',
    `mkdir -p "${dir}"`,
    GLOBALS(srcPort, dstPort),
    `for db in $(${LIST_DBS(srcPort)}); do`,
    `  createdb -p ${dstPort} "$db"`,
    `  pg_dump -p ${srcPort} -Fd -j ${jobs} -f "${dir}/$db" "$db"`,
    `  pg_restore -p ${dstPort} -j ${jobs} -d "$db" "${dir}/$db"`,
    'done',
  ].join('\n');
}

export function pgcopydbScript(srcPort: number, dstPort: number, jobs: number, dir: string): string {
  return [
    'set -eo pipefail',
    GLOBALS(srcPort, dstPort),
    `for db in $(${LIST_DBS(srcPort)}); do`,
    `  createdb -p ${dstPort} "$db"`,
    `  pgcopydb clone --source "postgresql://postgres@127.0.0.1:${srcPort}/$db" --target "postgresql://postgres@127.0.0.1:${dstPort}/$db" --dir "${dir}/$db" --table-jobs ${jobs} --index-jobs ${jobs}`,
    'done',
  ].join('\n');
}

export function dumpallScript(srcPort: number, dstPort: number): string {
  return `pg_dumpall -p ${srcPort} | psql -X -q -p ${dstPort} -d postgres >/dev/null`;
}

export const CONTENDERS: Contender[] = [
  {
    name: 'pg-migrate',
    describe: () => 'node dist/src/cli.js --from-... --to-... --state-dir <tmp> --dump-root <tmp> --progress plain --report <tmp> (defaults otherwise)',
    argv: (ctx) => pgMigrateArgs(ctx, []),
    reportFile: (ctx) => path.join(ctx.dir, 'report.json'),
  },
  {
    name: 'pg-migrate-files',
    describe: () => 'pg-migrate as above plus --data-path files (dump files, then pg_restore -j; auto picks stream on a machine with up to 4 cores)',
    argv: (ctx) => pgMigrateArgs(ctx, ['--data-path', 'files']),
    reportFile: (ctx) => path.join(ctx.dir, 'report.json'),
  },
  {
    name: 'pg-migrate-no-split',
    shapes: ['standard'],
    describe: () => 'pg-migrate as above plus --split-table-size off (every table through pg_dump | pg_restore; post-data still with -j)',
    argv: (ctx) => pgMigrateArgs(ctx, ['--split-table-size', 'off']),
    reportFile: (ctx) => path.join(ctx.dir, 'report.json'),
  },
  {
    // Beside `pg-migrate` (row counts): the wall and CPU time a content checksum of every table adds
    // (Σverify in its report line is the verification's own share).
    name: 'pg-migrate-checksum',
    shapes: ['standard'],
    describe: () => "pg-migrate as above plus --verify checksum (every table's content hashed on both servers instead of counted)",
    argv: (ctx) => pgMigrateArgs(ctx, ['--verify', 'checksum']),
    reportFile: (ctx) => path.join(ctx.dir, 'report.json'),
  },
  {
    name: 'pg-migrate-delayed',
    shapes: ['standard'],
    describe: () => 'pg-migrate as above plus --delay-table-data analytics.events',
    argv: (ctx) => pgMigrateArgs(ctx, ['--delay-table-data', 'analytics.events']),
    reportFile: (ctx) => path.join(ctx.dir, 'report.json'),
  },
  {
    name: 'pg-migrate-online',
    shapes: ['standard'],
    online: true,
    describe: () =>
      'pg-migrate as above plus --online; pg-migrate status each second until every database replicates < 1 MiB behind; pg-migrate cutover (defaults: 3 s grace); a writer runs in app_shop and app_crm from before the run until the fence stops it',
    argv: (ctx) => ['bash', '-c', onlineScript(ctx)],
    reportFile: (ctx) => path.join(ctx.dir, 'report.json'),
  },
  {
    name: 'dumpall-psql',
    describe: () =>
      `${dumpallScript(5432, 5433).replace('5432', 'SRC').replace('5433', 'DST')}   (psql defaults: ON_ERROR_STOP off, as a naive user runs it; "role postgres already exists" is the expected error)`,
    argv: (ctx) => ['bash', '-c', dumpallScript(ctx.servers.source.port, ctx.servers.target.port)],
  },
  {
    name: 'dump-restore-loop',
    describe: (cores) =>
      `bash: set -eo pipefail; mkdir -p dir; pg_dumpall --globals-only | psql; for each db (sequentially): createdb db; pg_dump -Fd -j ${cores} -f dir/db db; pg_restore -j ${cores} -d db dir/db  (pg_dump default compression)`,
    argv: (ctx) => ['bash', '-c', loopScript(ctx.servers.source.port, ctx.servers.target.port, ctx.cores, path.join(ctx.dir, 'dumps'))],
  },
  {
    name: 'pgcopydb',
    describe: (cores) =>
      `bash: pg_dumpall --globals-only | psql; for each db (sequentially): createdb db; pgcopydb clone --source .../db --target .../db --dir dir/db --table-jobs ${cores} --index-jobs ${cores}  (pgcopydb defaults are 4/4; set to the cores)`,
    argv: (ctx) => ['bash', '-c', pgcopydbScript(ctx.servers.source.port, ctx.servers.target.port, ctx.cores, path.join(ctx.dir, 'work'))],
  },
];

/**
 * For the many-databases overhead figure: pg_dump, pg_restore, pg_dumpall and psql wrappers that
 * log start and end (ns) of every call, put first in PATH of an extra, untimed pg-migrate run.
 */
export function traceWrapper(tool: string, logFile: string): string {
  return ['#!/bin/bash', 's=$(date +%s%N)', `${PG_BIN}/${tool} "$@"`, 'rc=$?', `echo "${tool} $s $(date +%s%N)" >> ${logFile}`, 'exit $rc'].join('\n') + '\n';
}
