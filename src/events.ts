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
  /** How the regular phase was verified: row counts (exact, or estimates with --fast-verify) or content checksums; what else was compared. */
  verify?: { mode: 'count' | 'fast' | 'checksum'; checksummedTables?: number; sequences?: number; largeObjects?: number };
  warnings: string[];
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
  };
  tuning: { applied: boolean; reverted: boolean; notice?: string };
  /** Databases the run left out on purpose (--include-db/--exclude-db), or that hold nothing to migrate. */
  skipped?: { name: string; reason: string }[];
  parallelism?: Parallelism;
  compression?: string;
  /** Seconds until every database's regular phase ended. */
  regularElapsedSeconds: number;
  elapsedSeconds: number;
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
  | { type: 'info'; message: string };

export type EventSink = (event: MigrateEvent) => void;
