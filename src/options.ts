/**
 * Raw options (yargs, the environment, the library API) to one validated MigrateOptions: every
 * default and every cross-option rule in one place, each problem named with its fix. Just over 300
 * lines: one validation table is easier to read whole than split.
 */
import { statSync, type Stats } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { UsageError } from './errors.ts';
import { parseTablePattern, type TablePattern } from './patterns.ts';
import { resolveEndpoint, type Endpoint } from './pg/endpoint.ts';
import { parseConninfo } from './pg/conninfo-parse.ts';

export type { Endpoint } from './pg/endpoint.ts';

/** Fully validated options of one run. Parallelism left undefined is derived once, in the run plan (plan.ts). */
export interface MigrateOptions {
  from: Endpoint;
  /** The target; a placeholder (localhost) when the command does not need one and none was given (targetGiven false). */
  to: Endpoint;
  /** Whether the target was named (--to, --to-host, a service or PGHOST/PGHOSTADDR). */
  targetGiven: boolean;
  /** pg_dump -j per database. @default auto: min(24, cores), fitted to max_connections */
  dumpJobs: number | undefined;
  /** pg_restore -j per database. @default auto: min(12, cores), fitted to max_connections */
  restoreJobs: number | undefined;
  /** Databases in flight on each side unless the side is set. @default auto: min(6, max(2, cores)), fitted */
  maxParallel: number | undefined;
  dumpParallel: number | undefined;
  restoreParallel: number | undefined;
  /** One cap on concurrent count(*) queries over both servers. @default 16 */
  verifyConcurrency: number;
  /** @default "pg_dumps" (relative to the working directory) */
  dumpRoot: string;
  /** Parent of pg_migrate_state/ and pg_verify_state/. @default $HOME */
  stateDir: string;
  /** @default true */
  migrateGlobals: boolean;
  /** Keep each object's source owner; false: pg_restore --no-owner, everything owned by the target user. @default true */
  owner: boolean;
  /** @default false */
  disableDstOptimizations: boolean;
  includeDb: string[];
  excludeDb: string[];
  /** Discard state (markers, counts, saved index definitions) and dumps of an earlier run. @default false */
  fresh: boolean;
  /** Databases (globs) to migrate afresh: their state is discarded and the target copy recreated. */
  redoDb: string[];
  /** Directory of pg_dump, pg_dumpall, pg_restore and psql; PATH when undefined. */
  pgBinDir: string | undefined;
  /** How data travels: dump files then restore (files), pg_dump piped into pg_restore (stream), or chosen per database (auto). */
  dataPath: DataPathKind;
  /** pg_dump -Z value; chosen from the pg_dump version when undefined. */
  compression: string | undefined;
  delayTableData: TablePattern[];
  /**
   * Also drop the deferred tables' PRIMARY KEY/UNIQUE constraints and foreign keys during their load
   * (faster; nobody may write to those tables meanwhile). @default false
   */
  delayDropKeys: boolean;
  /** Apply the source's definition to roles and tablespaces that already exist on the target. @default false */
  overwriteExistingRoles: boolean;
  /** Keep the target in sync by logical replication after the copy, until `cutover`. @default false */
  online: boolean;
  /** How the target server reaches the source (libpq keyword/value string); the tool's own source connection when undefined. */
  onlineSource: string | undefined;
  /** Online: set REPLICA IDENTITY FULL on the source's tables without a usable key, so they replicate too. @default false */
  replicaIdentityFull: boolean;
  /** @default false */
  fastVerify: boolean;
  /** How each table is verified: row counts, or counts and a content checksum computed by both servers. @default "count" */
  verify: VerifyMode;
  /** Tables at least this big are copied in parallel page ranges on the stream path; null: never. @default 256 MiB */
  splitTableBytes: number | null;
  /** Remove a database's dump once it verified. @default false */
  removeDumps: boolean;
  /** Write the summary as JSON to this file. */
  report: string | undefined;
}

export type DataPathKind = 'auto' | 'files' | 'stream';
export type VerifyMode = 'count' | 'checksum';
export const VERIFY_MODES: readonly VerifyMode[] = ['count', 'checksum'];
export const DATA_PATHS: readonly DataPathKind[] = ['auto', 'files', 'stream'];

const SIZE_UNITS: Record<string, number> = { B: 1, kB: 1024, MB: 1024 ** 2, GB: 1024 ** 3, TB: 1024 ** 4 };

/**
 * A size as PostgreSQL writes memory settings: a whole number with an optional unit B, kB, MB, GB or TB
 * (powers of 1024, case as PostgreSQL spells them), e.g. `256MB`, `1GB`, `8192`; `off` gives null.
 */
export function parseSize(text: string): number | null {
  const t = text.trim();
  if (t === 'off') return null;
  const m = /^(\d+)\s*([A-Za-z]*)$/.exec(t);
  const unit = m?.[2] === '' ? 'B' : m?.[2];
  const factor = unit === undefined ? undefined : SIZE_UNITS[unit];
  if (!m || factor === undefined) {
    throw new Error(`${JSON.stringify(text)} is not a size: write a whole number with an optional unit B, kB, MB, GB or TB (e.g. 256MB), or off`);
  }
  const bytes = Number(m[1]) * factor;
  if (bytes < 1) throw new Error(`${JSON.stringify(text)} must be at least 1 byte (write off to never split tables)`);
  return bytes;
}

/** Raw values as they come from the command line / environment (yargs). */
export interface RawOptions {
  /** A URI, a keyword=value string or service=NAME for the source. */
  from?: string;
  /** The same for the target. */
  to?: string;
  fromHost?: string;
  fromPort?: number;
  fromUser?: string;
  fromPass?: string;
  fromDb?: string;
  toHost?: string;
  toPort?: number;
  toUser?: string;
  toPass?: string;
  toDb?: string;
  dumpJobs?: number;
  restoreJobs?: number;
  maxParallel?: number;
  dumpParallel?: number;
  restoreParallel?: number;
  verifyConcurrency?: number;
  dumpRoot?: string;
  stateDir?: string;
  migrateGlobals?: boolean;
  owner?: boolean;
  disableDstOptimizations?: boolean;
  includeDb?: string[];
  excludeDb?: string[];
  fresh?: boolean;
  redoDb?: string[];
  pgBinDir?: string;
  compression?: string;
  dataPath?: string;
  delayTableData?: string[];
  delayDropKeys?: boolean;
  overwriteExistingRoles?: boolean;
  online?: boolean;
  onlineSource?: string;
  replicaIdentityFull?: boolean;
  fastVerify?: boolean;
  verify?: string;
  splitTableSize?: string;
  removeDumps?: boolean;
  report?: string;
}

export const DEFAULTS = {
  verifyConcurrency: 16,
  dumpRoot: 'pg_dumps',
  migrateGlobals: true,
  owner: true,
  disableDstOptimizations: false,
  fastVerify: false,
  delayDropKeys: false,
  overwriteExistingRoles: false,
  online: false,
  replicaIdentityFull: false,
  fresh: false,
  removeDumps: false,
  dataPath: 'auto' as DataPathKind,
  verify: 'count' as VerifyMode,
  splitTableSize: '256MB',
} as const;

function checkInt(problems: string[], name: string, value: number | undefined, min: number, max: number): void {
  if (value === undefined) return;
  if (!Number.isInteger(value) || value < min || value > max) {
    // yargs turns a number option's text that is not a number into NaN: not a value to show.
    problems.push(`--${name} must be a whole number from ${min} to ${max} (got ${Number.isNaN(value) ? 'something that is not a number' : String(value)})`);
  }
}

/** A port flag for the connection (an invalid one is reported by checkInt already). */
const validPort = (p: number | undefined): number | undefined => (p !== undefined && Number.isInteger(p) && p >= 1 && p <= 65535 ? p : undefined);

function checkText(problems: string[], name: string, value: string | undefined): void {
  if (value?.trim() === '') problems.push(`--${name} must not be empty`);
}

/**
 * A path option that must be a directory (or not exist yet): a file in its place,
 * or a parent that is a file, is a usage error naming the option.
 */
function checkDirectory(problems: string[], name: string, dir: string, what: string): void {
  for (let p = path.resolve(dir); ; p = path.dirname(p)) {
    let st: Stats | undefined;
    try {
      st = statSync(p);
    } catch {
      st = undefined;
    }
    if (st?.isDirectory()) return;
    if (st !== undefined) {
      problems.push(`--${name} ${dir}: ${p} is not a directory; pass ${what}`);
      return;
    }
    if (path.dirname(p) === p) return;
  }
}

/** Whether a directory is at this path (false when nothing, or something else, is there or it cannot be read). */
function isDirectory(p: string): boolean {
  try {
    return statSync(p).isDirectory();
  } catch {
    return false;
  }
}

/** Validates raw values and applies defaults. Throws one UsageError that lists every problem. */
export function resolveOptions(raw: RawOptions, env: NodeJS.ProcessEnv = process.env, opts: { targetRequired?: boolean } = {}): MigrateOptions {
  const problems: string[] = [];
  for (const [name, v] of [
    ['from-port', raw.fromPort],
    ['to-port', raw.toPort],
  ] as const)
    checkInt(problems, name, v, 1, 65535);
  checkInt(problems, 'dump-jobs', raw.dumpJobs, 1, 256);
  checkInt(problems, 'restore-jobs', raw.restoreJobs, 1, 256);
  checkInt(problems, 'max-parallel', raw.maxParallel, 1, 256);
  checkInt(problems, 'dump-parallel', raw.dumpParallel, 1, 256);
  checkInt(problems, 'restore-parallel', raw.restoreParallel, 1, 256);
  checkInt(problems, 'verify-concurrency', raw.verifyConcurrency, 1, 1024);
  for (const [name, v] of [
    ['from-host', raw.fromHost],
    ['from-user', raw.fromUser],
    ['from-db', raw.fromDb],
    ['to-host', raw.toHost],
    ['to-user', raw.toUser],
    ['to-db', raw.toDb],
    ['dump-root', raw.dumpRoot],
    ['state-dir', raw.stateDir],
    ['pg-bin-dir', raw.pgBinDir],
    ['compression', raw.compression],
  ] as const)
    checkText(problems, name, v);

  let splitTableBytes: number | null = null;
  try {
    splitTableBytes = parseSize(raw.splitTableSize ?? DEFAULTS.splitTableSize);
  } catch (err) {
    problems.push(`--split-table-size: ${(err as Error).message}`);
  }
  if (raw.dataPath !== undefined && !DATA_PATHS.includes(raw.dataPath as DataPathKind)) {
    problems.push(`--data-path must be one of ${DATA_PATHS.join(', ')} (got ${JSON.stringify(raw.dataPath)})`);
  }
  if (raw.verify !== undefined && !VERIFY_MODES.includes(raw.verify as VerifyMode)) {
    problems.push(`--verify must be one of ${VERIFY_MODES.join(', ')} (got ${JSON.stringify(raw.verify)})`);
  }
  if (raw.verify === 'checksum' && raw.fastVerify === true) problems.push('--fast-verify (estimated counts) and --verify checksum exclude each other');
  if (raw.onlineSource !== undefined) {
    try {
      parseConninfo(raw.onlineSource);
    } catch (err) {
      problems.push(`--online-source: ${(err as Error).message}`);
    }
  }
  const delayTableData: TablePattern[] = [];
  for (const text of raw.delayTableData ?? []) {
    try {
      delayTableData.push(parseTablePattern(text));
    } catch (err) {
      problems.push(`--delay-table-data: ${(err as Error).message}`);
    }
  }
  for (const [name, globs] of [
    ['include-db', raw.includeDb],
    ['exclude-db', raw.excludeDb],
    ['redo-db', raw.redoDb],
  ] as const) {
    for (const g of globs ?? []) if (g === '') problems.push(`--${name} must not be an empty pattern`);
  }
  const home = env.HOME ?? os.homedir();
  checkDirectory(problems, 'state-dir', raw.stateDir ?? home, 'a directory for pg_migrate_state/ (it is created if missing)');
  checkDirectory(problems, 'dump-root', raw.dumpRoot ?? DEFAULTS.dumpRoot, 'a directory for the dumps (it is created if missing)');
  if (raw.report !== undefined) {
    checkDirectory(problems, 'report', path.dirname(path.resolve(raw.report)), 'a file path (its directory is created if missing)');
    // A directory there would only fail when the run has ended, and the report would be lost.
    if (isDirectory(path.resolve(raw.report)))
      problems.push(`--report ${raw.report} is a directory; pass the path of the file to write, e.g. ${path.join(raw.report, 'report.json')}`);
  }
  const targetRequired = opts.targetRequired ?? true;
  const from = resolveEndpoint(
    'source',
    { conninfo: raw.from, host: raw.fromHost, port: validPort(raw.fromPort), user: raw.fromUser, password: raw.fromPass, dbname: raw.fromDb },
    env,
    true,
  );
  const toInput = { conninfo: raw.to, host: raw.toHost, port: validPort(raw.toPort), user: raw.toUser, password: raw.toPass, dbname: raw.toDb };
  const to = resolveEndpoint('target', toInput, env, targetRequired);
  for (const p of [...from.problems, ...to.problems]) if (!problems.includes(p)) problems.push(p);
  if (problems.length > 0 || from.endpoint === undefined) throw new UsageError(problems);
  // A command that can do without the target gets a placeholder it never connects to (targetGiven false).
  const target = to.endpoint ?? resolveEndpoint('target', { ...toInput, host: 'localhost' }, env, false).endpoint;
  if (target === undefined) throw new UsageError(['the target server could not be resolved']);

  return {
    from: from.endpoint,
    to: target,
    targetGiven: to.endpoint !== undefined,
    dumpJobs: raw.dumpJobs,
    restoreJobs: raw.restoreJobs,
    maxParallel: raw.maxParallel,
    dumpParallel: raw.dumpParallel,
    restoreParallel: raw.restoreParallel,
    verifyConcurrency: raw.verifyConcurrency ?? DEFAULTS.verifyConcurrency,
    dumpRoot: path.resolve(raw.dumpRoot ?? DEFAULTS.dumpRoot),
    stateDir: path.resolve(raw.stateDir ?? home),
    migrateGlobals: raw.migrateGlobals ?? DEFAULTS.migrateGlobals,
    owner: raw.owner ?? DEFAULTS.owner,
    disableDstOptimizations: raw.disableDstOptimizations ?? DEFAULTS.disableDstOptimizations,
    includeDb: raw.includeDb ?? [],
    excludeDb: raw.excludeDb ?? [],
    fresh: raw.fresh ?? DEFAULTS.fresh,
    redoDb: raw.redoDb ?? [],
    pgBinDir: raw.pgBinDir === undefined ? undefined : path.resolve(raw.pgBinDir),
    compression: raw.compression,
    dataPath: (raw.dataPath as DataPathKind | undefined) ?? DEFAULTS.dataPath,
    delayTableData,
    delayDropKeys: raw.delayDropKeys ?? DEFAULTS.delayDropKeys,
    overwriteExistingRoles: raw.overwriteExistingRoles ?? DEFAULTS.overwriteExistingRoles,
    online: raw.online ?? DEFAULTS.online,
    onlineSource: raw.onlineSource,
    replicaIdentityFull: raw.replicaIdentityFull ?? DEFAULTS.replicaIdentityFull,
    fastVerify: raw.fastVerify ?? DEFAULTS.fastVerify,
    verify: (raw.verify as VerifyMode | undefined) ?? DEFAULTS.verify,
    splitTableBytes,
    removeDumps: raw.removeDumps ?? DEFAULTS.removeDumps,
    report: raw.report === undefined ? undefined : path.resolve(raw.report),
  };
}
