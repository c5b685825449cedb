/**
 * What a run needs of each server and of the machine beside the data: connections (the budget) and
 * disk for the dumps of the databases on the file path.
 */
import { statfs } from 'node:fs/promises';
import path from 'node:path';
import { connectionsNeeded, type Parallelism } from '../plan.ts';
import { withClient, type Server } from '../pg/connect.ts';
import type { ServerFacts } from './facts.ts';

export interface Budget {
  needed: number;
  available: number;
  maxConnections: number;
}

/** The connections each side needs (parallel × (2 + jobs) + verify + 2) against what it has free. */
export function connectionBudget(p: Parallelism, source: ServerFacts, target: ServerFacts): { source: Budget; target: Budget } {
  return {
    source: { needed: connectionsNeeded(p.dumpParallel, p.dumpJobs, p.verifyConcurrency), available: source.available, maxConnections: source.maxConnections },
    target: {
      needed: connectionsNeeded(p.restoreParallel, p.restoreJobs, p.verifyConcurrency),
      available: target.available,
      maxConnections: target.maxConnections,
    },
  };
}

/** The problems a budget names: which server, what is free, what is needed, what to lower. */
export function budgetProblems(b: { source: Budget; target: Budget }, p: Parallelism): string[] {
  const out: string[] = [];
  if (b.source.needed > b.source.available) {
    out.push(
      `the source has ${String(b.source.available)} free connections (max_connections ${String(b.source.maxConnections)}) but these options need ${String(b.source.needed)} ` +
        `(dump-parallel ${String(p.dumpParallel)} × (2 + dump-jobs ${String(p.dumpJobs)}) + verify-concurrency ${String(p.verifyConcurrency)} + 2); lower --dump-jobs/--dump-parallel/--verify-concurrency or raise max_connections on the source`,
    );
  }
  if (b.target.needed > b.target.available) {
    out.push(
      `the target has ${String(b.target.available)} free connections (max_connections ${String(b.target.maxConnections)}) but these options need ${String(b.target.needed)} ` +
        `(restore-parallel ${String(p.restoreParallel)} × (2 + restore-jobs ${String(p.restoreJobs)}) + verify-concurrency ${String(p.verifyConcurrency)} + 2); lower --restore-jobs/--restore-parallel/--verify-concurrency or raise max_connections on the target`,
    );
  }
  return out;
}

/**
 * The share of the tables' size on disk that a compressed dump is assumed to take: dumps leave out
 * indexes and tuple overhead and compress, and are usually far smaller; this is the bound planned for.
 */
export const DUMP_SIZE_FACTOR = 0.5;

export interface DiskNeed {
  /** The dump root (or its nearest existing parent, whose file system is measured). */
  dumpRoot: string;
  /** Bytes free there for this user; null when unknown. */
  free: number | null;
  /** The databases on the file path with their tables' size on disk. */
  databases: { name: string; tableBytes: number }[];
  /** What the dumps are planned to take: DUMP_SIZE_FACTOR × their tables' size. */
  needed: number;
}

async function nearestExisting(dir: string): Promise<string> {
  for (let p = path.resolve(dir); ; p = path.dirname(p)) {
    try {
      await statfs(p);
      return p;
    } catch {
      if (path.dirname(p) === p) return p;
    }
  }
}

/** Disk the dumps of the databases on the file path need, against what the dump root has free. */
export async function diskNeed(source: Server, dumpRoot: string, filesPathDatabases: string[]): Promise<DiskNeed> {
  const databases: DiskNeed['databases'] = [];
  for (const name of filesPathDatabases) {
    const bytes = await withClient(source, name, async (c) => {
      const r = await c.query<{ b: string }>("select coalesce(sum(pg_table_size(oid)), 0)::text as b from pg_class where relkind in ('r', 'm')");
      return Number(r.rows[0]?.b ?? 0);
    });
    databases.push({ name, tableBytes: bytes });
  }
  const at = await nearestExisting(dumpRoot);
  const fs = await statfs(at).catch(() => undefined);
  return {
    dumpRoot: at,
    free: fs ? fs.bavail * fs.bsize : null,
    databases,
    needed: Math.ceil(databases.reduce((a, d) => a + d.tableBytes, 0) * DUMP_SIZE_FACTOR),
  };
}
