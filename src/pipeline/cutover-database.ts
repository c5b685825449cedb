/**
 * The work of a cutover on each database: inside the write stop, what replication does not carry
 * (sequences, the unreplicated tables, large objects) and the comparison; before it, the schema check;
 * at the end, the drop of its replication.
 */
import path from 'node:path';
import { oneRow, withClient, type Server } from '../pg/connect.ts';
import { schemaFingerprint } from '../pg/catalog.ts';
import { qualify } from '../pg/sql.ts';
import type { StateStore } from '../state/store.ts';
import { encodeName } from '../state/names.ts';
import { ExitCode, MigrateError, errorMessage } from '../errors.ts';
import { compareCounts, countTables } from './counts.ts';
import { checksumOptions, compareChecksums } from './checksum.ts';
import type { Context, DatabaseJob } from './context.ts';
import { copyLargeObjects, copySequences } from './cutover-steps.ts';
import { loadUnits, undoInterruptedLoad, type LoadSpec } from './deferred-load.ts';
import { dropReplication, type OnlineRecord } from './online.ts';

/** What the cutover did in one database. */
export interface CutoverDatabase {
  name: string;
  sequences: number;
  tablesCopied: number;
  largeObjects: number;
  rows?: number;
  checksummed?: number;
}

/**
 * The last step of a cutover: each database's subscription, slot and publication dropped, and the
 * database recorded as cut over once all of it went. A drop that failed fails the cutover (the source
 * stays read-only) so that the next cutover finishes it.
 */
export async function dropAll(store: StateStore, source: Server, target: Server, dbs: [string, OnlineRecord][], lines: string[]): Promise<void> {
  const dropped = await Promise.allSettled(dbs.map(([db, r]) => dropReplication({ source, target }, db, r)));
  const failed: string[] = [];
  for (const [i, d] of dropped.entries()) {
    const entry = dbs[i];
    if (!entry) continue;
    const [db, r] = entry;
    if (d.status === 'rejected') {
      failed.push(`${db}: ${errorMessage(d.reason)}`);
      continue;
    }
    lines.push(...d.value);
    const problems = d.value.filter((l) => l.startsWith('could not '));
    if (problems.length > 0) failed.push(...problems);
    else await store.database(db).setDoc('online.json', { ...r, cutoverAt: new Date().toISOString() });
  }
  if (failed.length > 0) {
    throw new MigrateError(
      `everything was compared, but the replication could not be dropped:\n  - ${failed.join('\n  - ')}\nthe source stays read-only (writes now would reach no subscription): fix that and run pg-migrate cutover again to finish`,
      ExitCode.failed,
    );
  }
}

/**
 * One database inside the write stop: its sequences set, its unreplicated tables copied (refused when
 * the target's copy took rows since), its large objects made the source's, then every table's rows
 * compared with the source's (counted while the subscriptions caught up).
 */
export async function finishDatabase(ctx: Context, db: string, r: OnlineRecord, sourceCounts: ReturnType<typeof countTables>): Promise<CutoverDatabase> {
  const { source, target, store, options } = ctx;
  const job: DatabaseJob = {
    plan: { name: db, sizeBytes: null, dumpJobs: 1, restoreJobs: 1, dataPath: 'stream' },
    state: store.database(db),
    result: { name: db, sizeBytes: null, status: 'failed', warnings: [] },
  };
  const seqs = await copySequences(source, target, db);
  const load = await unreplicatedLoad(source, db, r);
  await undoInterruptedLoad(ctx, job, load);
  for (const t of r.notReplicated) {
    const rows = await withClient(target, db, async (c) => (await c.query(`select 1 from only ${qualify(t.schema, t.name)} limit 1`)).rowCount ?? 0);
    if (rows > 0)
      throw new MigrateError(
        `${db}: ${t.schema}.${t.name} on the target holds rows written since the copy; it cannot be copied over them: empty it there, then cut over again`,
        ExitCode.failed,
      );
  }
  if (load.tables.length > 0) await loadUnits(ctx, job, load, undefined, path.join(options.dumpRoot, `${encodeName(db)}.cutover.ranges`));
  const los = await copyLargeObjects(source, target, db);
  const checksum = options.verify === 'checksum' ? checksumOptions(ctx.sourceMajor, ctx.targetMajor) : undefined;
  const [a, b] = await Promise.all([sourceCounts, countTables({ server: target, database: db, verifyQueue: ctx.verifyQueue, checksum })]);
  const cmp = compareCounts(a.counts, b.counts, new Set(), a.aggregates);
  const errors = [...cmp.errors, ...(checksum ? compareChecksums(a.checksums, b.checksums, b.counts) : [])];
  if (errors.length > 0) throw new MigrateError(`${db}: after the cutover's catch-up the two sides differ: ${errors.slice(0, 10).join('; ')}`, ExitCode.failed);
  return {
    name: db,
    sequences: seqs,
    tablesCopied: load.tables.length,
    largeObjects: los,
    rows: cmp.rows,
    ...(checksum ? { checksummed: Object.keys(b.checksums).length } : {}),
  };
}

/**
 * The source's schema changes since the copy that the target has not followed. A change counts as
 * followed when the target's object now reads the same as the source's, or (servers of different
 * versions print definitions differently) when the target's object changed since it subscribed too.
 */
export async function schemaChanges(source: Server, target: Server, db: string, r: OnlineRecord): Promise<string[]> {
  const [now, there] = await Promise.all([withClient(source, db, schemaFingerprint), withClient(target, db, schemaFingerprint)]);
  const then = r.fingerprint ?? {};
  const targetThen = r.targetFingerprint;
  const out: string[] = [];
  for (const k of new Set([...Object.keys(now), ...Object.keys(then)])) {
    if (now[k] === then[k]) continue;
    if (there[k] === now[k] || (targetThen !== undefined && there[k] !== targetThen[k])) continue;
    out.push(
      `${db}: ${k.slice(2)} ${then[k] === undefined ? 'was created' : now[k] === undefined ? 'was dropped' : 'was changed'} on the source since the copy, and not on the target`,
    );
  }
  return out;
}

/** The unreplicated tables of a database as a load (their source oids read now). */
async function unreplicatedLoad(source: Server, db: string, r: OnlineRecord): Promise<LoadSpec> {
  const tables = await withClient(source, db, async (c) => {
    const out: LoadSpec['tables'] = [];
    for (const t of r.notReplicated) {
      const oid = oneRow(await c.query<{ oid: string | null }>('select to_regclass($1)::oid::text as oid', [qualify(t.schema, t.name)])).oid;
      if (oid !== null) out.push({ oid, schema: t.schema, name: t.name, kind: 'r' });
    }
    return out;
  });
  return { doc: 'cutover_loads.json', dir: 'cutover-loads', tables };
}
