/**
 * `pg-migrate verify`: compares two servers without migrating anything and changes nothing. Every
 * selected database (one missing on either side is a difference), every table, partition and
 * materialized view (row counts; with checksums their content too), the sequences' values and the
 * large objects. Databases and tables are compared side by side, every query under one cap
 * (--verify-concurrency, both servers together).
 */
import { randomBytes } from 'node:crypto';
import PQueue from 'p-queue';
import type { MigrateOptions } from '../options.ts';
import { authenticate, oneRow, terminateSessions, withClient, type Server } from '../pg/connect.ts';
import { listDatabases, type DatabaseRow } from '../pg/catalog.ts';
import { matchesAny, unmatchedGlobs } from '../patterns.ts';
import { AbortError, ExitCode, UsageError, errorMessage, isAborted } from '../errors.ts';
import { compareCounts, countTables, type CountResult } from './counts.ts';
import { checksumOptions, compareChecksums, floatsComparable, type ChecksumOptions } from './checksum.ts';
import { compareObjects, readObjects, type DatabaseObjects } from './objects.ts';

export interface ServerInfo {
  host: string;
  port: number;
  version: string;
  major: number;
}

export interface Difference {
  database: string;
  /** What differs, naming the table, sequence or large objects. */
  difference: string;
}

export interface DatabaseComparison {
  name: string;
  /** Tables, partitions and materialized views compared (on the source). */
  tables: number;
  /** Of which hashed (checksums). */
  checksummed: number;
  sequences: number;
  largeObjects: number;
  rows: number;
  differences: string[];
  seconds: number;
}

export interface ServerComparison {
  source: ServerInfo;
  target: ServerInfo;
  mode: 'count' | 'checksum';
  startedAt: string;
  seconds: number;
  databases: DatabaseComparison[];
  /** Selected databases that allow no connections on the source: listed, not compared. */
  notCompared: { name: string; reason: string }[];
  differences: Difference[];
  /** Notes on how far the comparison can be trusted (floats across versions 11/12, ...). */
  notes: string[];
  exitCode: number;
}

export const WRITES_NOTE = 'a source (or target) that is written to during the comparison will differ: compare a quiet pair, after writes stopped';

async function serverInfo(server: Server): Promise<ServerInfo> {
  return withClient(server, server.endpoint.database, async (c) => {
    const row = oneRow(
      await c.query<{ v: string; num: string }>("select current_setting('server_version') as v, current_setting('server_version_num') as num"),
    );
    return { host: server.endpoint.host, port: server.endpoint.port, version: row.v.split(' ')[0] ?? row.v, major: Math.floor(Number(row.num) / 10000) };
  });
}

/**
 * One running server, however it was reached (a name or an IP, TCP or a socket): the start of its
 * postmaster to the microsecond and its port. A physical copy (a standby, a clone) started on its own.
 */
async function serverInstance(server: Server): Promise<string> {
  return withClient(server, server.endpoint.database, async (c) => {
    const row = oneRow(await c.query<{ id: string }>("select pg_postmaster_start_time()::text || ' ' || current_setting('port') as id"));
    return row.id;
  });
}

/** The options' --include-db/--exclude-db that make the comparison empty: a comparison of nothing is not "equal". */
function selectionProblems(o: MigrateOptions, names: string[]): string[] {
  const problems = unmatchedGlobs(o.includeDb, names).map((g) => `--include-db ${JSON.stringify(g)} matches no database on either server`);
  if (problems.length === 0 && (o.includeDb.length > 0 || o.excludeDb.length > 0) && !names.some((n) => selected(o, n))) {
    problems.push(`--include-db/--exclude-db leave no database to compare (the servers have ${names.join(', ')})`);
  }
  return problems;
}

const selected = (o: MigrateOptions, name: string): boolean => (o.includeDb.length === 0 || matchesAny(name, o.includeDb)) && !matchesAny(name, o.excludeDb);

/** Compares one database present on both sides. */
async function compareDatabase(
  source: Server,
  target: Server,
  db: string,
  queue: PQueue,
  checksum: ChecksumOptions | undefined,
  signal: AbortSignal,
): Promise<DatabaseComparison> {
  const t0 = performance.now();
  const req = { database: db, verifyQueue: queue, checksum, signal };
  const object = (server: Server) => queue.add(() => withClient(server, db, readObjects), { signal });
  // Every read is awaited (none left running unobserved); the first failure is the one reported.
  const settled = await Promise.allSettled([countTables({ ...req, server: source }), countTables({ ...req, server: target }), object(source), object(target)]);
  for (const r of settled) if (r.status === 'rejected') throw r.reason;
  const [a, b, oa, ob] = settled.map((r) => (r as PromiseFulfilledResult<unknown>).value) as [CountResult, CountResult, DatabaseObjects, DatabaseObjects];
  const cmp = compareCounts(a.counts, b.counts, new Set(), a.aggregates);
  const objects = compareObjects(oa, ob);
  return {
    name: db,
    tables: Object.keys(a.counts).length,
    checksummed: Object.keys(a.checksums).length,
    sequences: Object.keys(oa.sequences).length,
    largeObjects: oa.largeObjects.count,
    rows: cmp.rows,
    // Here a table or sequence only on the target is a difference too.
    differences: [...cmp.errors, ...cmp.warnings, ...compareChecksums(a.checksums, b.checksums, b.counts), ...objects.errors, ...objects.warnings],
    seconds: Math.round(performance.now() - t0) / 1000,
  };
}

/** Compares the two servers the options name; `checksum`: every table's content too. */
export async function compareServers(options: MigrateOptions, opts: { checksum: boolean; signal: AbortSignal }): Promise<ServerComparison> {
  const startedAt = new Date();
  const appName = `pg-migrate/verify-${randomBytes(4).toString('hex')}`;
  const source: Server = { side: 'source', endpoint: options.from, appName };
  const target: Server = { side: 'target', endpoint: options.to, appName };
  // Interrupted: the comparison's queries are cancelled on both servers at once.
  const cancel = (): void => {
    void Promise.all([terminateSessions(source), terminateSessions(target)]);
  };
  opts.signal.addEventListener('abort', cancel, { once: true });
  try {
    return await compareWith(options, source, target, opts.checksum, opts.signal, startedAt);
  } finally {
    opts.signal.removeEventListener('abort', cancel);
  }
}

async function compareWith(
  options: MigrateOptions,
  source: Server,
  target: Server,
  checksum: boolean,
  signal: AbortSignal,
  startedAt: Date,
): Promise<ServerComparison> {
  await authenticate(source);
  await authenticate(target);
  const [si, ti] = [await serverInfo(source), await serverInfo(target)];
  const list = (s: Server): Promise<DatabaseRow[]> => withClient(s, s.endpoint.database, (c) => listDatabases(c));
  if ((await serverInstance(source)) === (await serverInstance(target))) {
    throw new UsageError([
      `the source and the target are the same server (${source.endpoint.host}:${String(source.endpoint.port)} and ${target.endpoint.host}:${String(target.endpoint.port)} reach one PostgreSQL instance), which always compares equal; point --to/--to-host/--to-port at the other server`,
    ]);
  }
  const [srcDbs, dstDbs] = [await list(source), await list(target)];
  const selection = selectionProblems(options, [...new Set([...srcDbs, ...dstDbs].map((d) => d.name))]);
  if (selection.length > 0) throw new UsageError(selection.map((p) => `${p}; nothing was compared`));
  const result: ServerComparison = {
    source: si,
    target: ti,
    mode: checksum ? 'checksum' : 'count',
    startedAt: startedAt.toISOString(),
    seconds: 0,
    databases: [],
    notCompared: [],
    differences: [],
    notes: [WRITES_NOTE],
    exitCode: ExitCode.ok,
  };
  if (checksum && !floatsComparable(si.major, ti.major)) {
    result.notes.push(
      `PostgreSQL ${String(Math.min(si.major, ti.major))} prints floats (real, double precision) with other digits than 12 and later: they are hashed rounded to 15 significant digits (real: 6) on both sides`,
    );
  }
  const dstByName = new Map(dstDbs.map((d) => [d.name, d]));
  const both: string[] = [];
  for (const d of srcDbs.filter((d) => selected(options, d.name))) {
    const t = dstByName.get(d.name);
    if (t === undefined) result.differences.push({ database: d.name, difference: 'database is missing on the target' });
    else if (!d.allowConnections || !t.allowConnections)
      result.notCompared.push({ name: d.name, reason: `does not allow connections on the ${d.allowConnections ? 'target' : 'source'} (datallowconn = false)` });
    else both.push(d.name);
  }
  const srcNames = new Set(srcDbs.map((d) => d.name));
  for (const d of dstDbs.filter((d) => selected(options, d.name) && !srcNames.has(d.name)))
    result.differences.push({ database: d.name, difference: 'database exists only on the target' });

  const queue = new PQueue({ concurrency: options.verifyConcurrency });
  // Databases side by side; their queries share the one cap.
  const dbQueue = new PQueue({ concurrency: Math.max(1, Math.min(4, options.verifyConcurrency)) });
  const t0 = performance.now();
  await Promise.all(
    both.map((db) =>
      dbQueue.add(async () => {
        if (isAborted(signal)) throw new AbortError();
        try {
          result.databases.push(await compareDatabase(source, target, db, queue, checksum ? checksumOptions(si.major, ti.major) : undefined, signal));
        } catch (err) {
          if (isAborted(signal)) throw new AbortError();
          result.differences.push({ database: db, difference: `could not be compared: ${errorMessage(err)}` });
        }
      }),
    ),
  );
  result.databases.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  for (const d of result.databases) for (const difference of d.differences) result.differences.push({ database: d.name, difference });
  result.seconds = Math.round(performance.now() - t0) / 1000;
  // A database left uncompared is not proven equal: not 0 either.
  result.exitCode = result.differences.length === 0 && result.notCompared.length === 0 ? ExitCode.ok : ExitCode.failed;
  return result;
}
