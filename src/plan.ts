/**
 * The run plan: resolved once, from the options, the machine and what preflight learned of both
 * servers, and read by everything downstream. Nothing after planning derives jobs, parallelism or a
 * database's data path again.
 */
import type { DataPathKind, MigrateOptions } from './options.ts';
import type { DeferredPlan } from './pipeline/deferred-plan.ts';

/** Below this size a database gains nothing from parallel jobs: auto picks one job, and the stream path. */
export const SMALL_DATABASE_BYTES = 256 * 1024 * 1024;
/** Up to this many cores, overlapping dump and restore beats parallel jobs: auto picks the stream path. */
export const STREAM_MAX_CORES = 4;
/** The seed's fixed values; auto-derived values never exceed them. */
export const CEILINGS = { dumpJobs: 24, restoreJobs: 12, maxParallel: 6 } as const;

/** Parallelism actually used by a run. */
export interface Parallelism {
  dumpJobs: number;
  restoreJobs: number;
  dumpParallel: number;
  restoreParallel: number;
  verifyConcurrency: number;
}

export interface ServerLimits {
  /** Connections this run may open on the server: max_connections less reserved slots and those in use. */
  available: number;
}

/** One database of the run, as planned. */
export interface DatabasePlan {
  name: string;
  sizeBytes: number | null;
  /** pg_dump -j (files path), or the dump side of range copies. */
  dumpJobs: number;
  /** pg_restore -j, and the index builds of the post-data section. */
  restoreJobs: number;
  /** How its data travels unless dump files of an earlier run are there to be used. */
  dataPath: 'files' | 'stream';
  /** Its deferred tables (--delay-table-data), if any. */
  deferred?: DeferredPlan;
  /**
   * postgres or template1: restored into the target's existing database of that name, in one
   * transaction (so an interrupted restore leaves nothing), never created or dropped; stream path.
   */
  inPlace?: boolean;
}

export interface RunPlan {
  /** Cores of the machine the tool runs on. */
  cores: number;
  parallelism: Parallelism;
  /** pg_dump -Z value. */
  compression: string;
  databases: DatabasePlan[];
}

/**
 * Connections one side of a run needs: parallel × (2 + jobs) + verify + 2 of the tool's own. Per
 * database in flight: a program with N jobs (pg_dump -j, pg_restore -j, or N range copies beside one
 * pg_dump | pg_restore stream) opens up to N + 1, and one more session holds the exported snapshot.
 */
export function connectionsNeeded(parallel: number, jobs: number, verify: number): number {
  return parallel * (2 + jobs) + verify + 2;
}

/**
 * Explicit values are kept as they are. Values left unset start from the machine's cores (never above
 * the seed's 24 dump jobs, 12 restore jobs, and min(6, max(2, cores)) databases in flight) and are then
 * lowered, jobs first, until each side fits the connections its server has free.
 */
export function planParallelism(
  o: Pick<MigrateOptions, 'dumpJobs' | 'restoreJobs' | 'maxParallel' | 'dumpParallel' | 'restoreParallel' | 'verifyConcurrency'>,
  cores: number,
  source: ServerLimits,
  target: ServerLimits,
): Parallelism {
  const c = Math.max(1, cores);
  const side = (
    jobsSet: number | undefined,
    parallelSet: number | undefined,
    jobsCeiling: number,
    limits: ServerLimits,
  ): { jobs: number; parallel: number } => {
    let jobs = jobsSet ?? Math.min(jobsCeiling, c);
    let parallel = parallelSet ?? o.maxParallel ?? Math.min(CEILINGS.maxParallel, Math.max(2, c));
    const verify = o.verifyConcurrency;
    while (connectionsNeeded(parallel, jobs, verify) > limits.available) {
      if (jobsSet === undefined && jobs > 1 && (jobs >= parallel || parallelSet !== undefined || o.maxParallel !== undefined)) jobs--;
      else if (parallelSet === undefined && o.maxParallel === undefined && parallel > 1) parallel--;
      else if (jobsSet === undefined && jobs > 1) jobs--;
      else break;
    }
    return { jobs, parallel };
  };
  const d = side(o.dumpJobs, o.dumpParallel, CEILINGS.dumpJobs, source);
  const r = side(o.restoreJobs, o.restoreParallel, CEILINGS.restoreJobs, target);
  return { dumpJobs: d.jobs, dumpParallel: d.parallel, restoreJobs: r.jobs, restoreParallel: r.parallel, verifyConcurrency: o.verifyConcurrency };
}

/**
 * Jobs for one database: explicit values as they are; auto values scaled down for a small database
 * (one job per 256 MiB), since every job is a process and a connection that a small database cannot use.
 */
export function jobsForDatabase(planned: number, explicit: number | undefined, sizeBytes: number | null): number {
  if (explicit !== undefined || sizeBytes === null) return planned;
  return Math.max(1, Math.min(planned, Math.ceil(sizeBytes / SMALL_DATABASE_BYTES)));
}

/**
 * The data path of one database under `--data-path auto`: stream (dump and restore at once, nothing on
 * disk) on a machine with few cores or for a small database, where parallel jobs gain little; files
 * (parallel jobs) otherwise.
 */
export function autoDataPath(cores: number, sizeBytes: number | null): 'files' | 'stream' {
  return cores <= STREAM_MAX_CORES || (sizeBytes ?? 0) < SMALL_DATABASE_BYTES ? 'stream' : 'files';
}

/** Plans one database: its jobs and data path. */
export function planDatabase(
  db: { name: string; sizeBytes: number | null; inPlace?: boolean },
  options: Pick<MigrateOptions, 'dumpJobs' | 'restoreJobs' | 'dataPath' | 'online'>,
  parallelism: Parallelism,
  cores: number,
  deferred: DeferredPlan | undefined,
): DatabasePlan {
  const dataPath: DataPathKind = options.dataPath;
  if (db.inPlace === true) return { name: db.name, sizeBytes: db.sizeBytes, dumpJobs: 1, restoreJobs: 1, dataPath: 'stream', inPlace: true };
  return {
    name: db.name,
    sizeBytes: db.sizeBytes,
    dumpJobs: jobsForDatabase(parallelism.dumpJobs, options.dumpJobs, db.sizeBytes),
    restoreJobs: jobsForDatabase(parallelism.restoreJobs, options.restoreJobs, db.sizeBytes),
    dataPath: dataPath === 'auto' ? autoDataPath(cores, db.sizeBytes) : dataPath,
    // Online, the target is not used before cutover: deferring a table would gain nothing.
    ...(deferred && !options.online ? { deferred } : {}),
  };
}
