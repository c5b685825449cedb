import type { Parallelism } from './plan.ts';

export type Phase =
  | 'queued'
  | 'dumping'
  | 'streaming'
  | 'counting source'
  | 'waiting for target'
  | 'restoring'
  | 'counting target'
  | 'verifying'
  | 'deferred dumping'
  | 'dropping indexes'
  | 'deferred loading'
  | 'rebuilding indexes'
  | 'deferred verifying'
  | 'subscribing'
  | 'verified'
  | 'failed';

export type DbStatus = 'verified' | 'failed' | 'not migrated' | 'interrupted';

/** A table copied in parallel page ranges. */
export interface SplitCopyResult {
  /** Schema-qualified, quoted. */
  table: string;
  ranges: number;
  /** COPY's binary format (else text). */
  binary: boolean;
  rows: number;
  /** From the first range's start to the last range's end. */
  seconds: number;
}

export interface DbResult {
  name: string;
  sizeBytes: number | null;
  status: DbStatus;
  /** Why it failed or was not migrated. */
  reason?: string;
  dumpSeconds?: number;
  restoreSeconds?: number;
  verifySeconds?: number;
  /** Seconds from the start of the run until the regular phase verified (the database was usable). */
  regularSeconds?: number;
  /** Seconds from the start of the run until the database was complete (deferred phase included). */
  totalSeconds?: number;
  /** Online: the target is kept in sync with the source by logical replication until cutover. */
  replicating?: boolean;
  /** Tables whose data was loaded after the regular phase (--delay-table-data). */
  deferredTables?: number;
  /** Tables whose rows were copied in parallel page ranges (--split-table-size). */
  splitTables?: SplitCopyResult[];
  rows?: number;
  /** What was compared per table (from the counts kept in the state), for the JSON report. */
  tables?: TableCheck[];
  /** How the regular phase was verified: row counts (exact, or estimates with --fast-verify) or content checksums; what else was compared. */
  verify?: { mode: 'count' | 'fast' | 'checksum'; checksummedTables?: number; sequences?: number; largeObjects?: number };
  warnings: string[];
}

/** How a table's content was compared: an exact count(*), pg_class.reltuples (--fast-verify); a checksum may join them. */
export type CompareMethod = 'count' | 'estimate';

/** One table's comparison in one phase of its database. */
export interface TableCheck {
  /** Schema-qualified, quoted. */
  table: string;
  phase: 'regular' | 'deferred';
  method: CompareMethod;
  source: number | null;
  target: number | null;
}

/** A server as the report names it. */
export interface ServerInfo {
  host: string;
  port: number;
  /** e.g. "PostgreSQL 15.18". */
  version: string;
  systemIdentifier: string;
}

/** What the sampler saw of one database in flight (every field optional: only what the servers told). */
export interface DbProgress {
  db: string;
  /** Bytes of the database on the target beyond an empty database's, at most its size on the source. */
  targetBytes?: number;
  /** Bytes of its dump on disk (compressed: a lower bound of the work done). */
  dumpBytes?: number;
  /** Rows of the COPYs in flight into the target (pg_stat_progress_copy, 14+). */
  copyRows?: number;
  copies?: number;
  /** Index builds in flight on the target and how far the furthest one is (0..1). */
  indexes?: number;
  indexDone?: number;
}

export interface RunSummary {
  databases: DbResult[];
  globals: {
    status: 'done' | 'skipped' | 'failed' | 'not run';
    errors: string[];
    skippedExisting: number;
    /** Roles that existed on the target and were left as they are, each with what differs from the source's. */
    rolesLeftAlone?: { name: string; differences: string[] }[];
    /** Tablespaces that existed on the target and were left as they are. */
    tablespacesLeftAlone?: string[];
    /** Login roles created without a password (the source user could not read them): set them on the target. */
    rolesWithoutPassword?: string[];
    /** What a target user that is not superuser could not give, by role (attributes, memberships, settings). */
    rolesNotGranted?: { role: string; what: string }[];
  };
  tuning: { applied: boolean; reverted: boolean; notice?: string };
  /** Databases the run left out on purpose (--include-db/--exclude-db), or that hold nothing to migrate. */
  skipped?: { name: string; reason: string }[];
  parallelism?: Parallelism;
  compression?: string;
  /** Seconds until every database's regular phase ended. */
  regularElapsedSeconds: number;
  elapsedSeconds: number;
  /** ISO times of the run's start and end. */
  startedAt?: string;
  endedAt?: string;
  servers?: { source: ServerInfo; target: ServerInfo };
  exitCode: number;
  error?: string;
}

export type MigrateEvent =
  | {
      type: 'plan';
      databases: { name: string; sizeBytes: number | null; deferred: number }[];
      notMigrated: { name: string; reason: string }[];
      parallelism: Parallelism;
      compression: string;
      toolsVersion: string;
    }
  | { type: 'stage'; stage: 'preflight' | 'tuning' | 'globals' | 'reverting' | 'cutover'; status: 'start' | 'done' | 'failed' | 'skipped'; message?: string }
  | { type: 'phase'; db: string; phase: Phase; detail?: string }
  | { type: 'warning'; db?: string; message: string }
  /** A sample of the servers' progress views (at most every few seconds; `at` is a performance.now() reading). */
  | { type: 'progress'; at: number; databases: DbProgress[] }
  | { type: 'info'; message: string };

export type EventSink = (event: MigrateEvent) => void;
