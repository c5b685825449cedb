/**
 * Verification of a database, one for both of its phases: the regular phase (every table but the
 * deferred ones, which must still be empty) and the deferred phase (the deferred tables and the
 * materialized views refreshed after their load). The source is counted in the snapshot its data was
 * read in; the target once its data is in. With --verify checksum each phase hashes every ordinary
 * table's content on both sides too (in the deferred phase, on the target, the rows the load
 * committed: told apart from the applications' by the load's transactions). The regular phase also
 * compares sequences' values and large objects, the source's read with its data (not online:
 * replication carries neither, cutover copies them).
 */
import { MigrateError } from '../errors.ts';
import { countsVariant, Marker, type VerifyPhase } from '../state/names.ts';
import { aggregateKeys, compareCounts, countTables, sortKeys } from './counts.ts';
import { dbName, secondsSince, type Context, type DatabaseJob } from './context.ts';
import type { TableCounts } from '../state/store.ts';
import { tableKey } from '../pg/sql.ts';
import { withClient } from '../pg/connect.ts';
import { inSnapshot } from '../pg/snapshot.ts';
import { checksumOptions, compareChecksums, type ChecksumOptions } from './checksum.ts';
import { compareObjects, readObjects, type DatabaseObjects } from './objects.ts';

interface Scope {
  /** The tables counted on both sides (all when undefined). */
  select?: (key: string) => boolean;
  /** Tables expected empty: not counted on the source, 0 there. */
  emptyOnSource: Set<string>;
  /** Tables always counted exactly, even with --fast-verify. */
  exact: Set<string>;
}

/**
 * What a phase compares. Regular: everything but the materialized views that read deferred tables
 * (refreshed only after the deferred load) and the partitioned tables above deferred partitions
 * (complete only after it); deferred tables must be empty on the target. Deferred: the deferred
 * tables, those partitioned tables and materialized views; the other tables were verified when the
 * database became usable, and from then on the target database is the applications' to change.
 */
function scope(job: DatabaseJob, phase: VerifyPhase): Scope {
  const plan = job.plan.deferred;
  // Online: tables that replication cannot carry are copied at cutover, empty until then.
  const notCopied = new Set((job.notCopied ?? []).map((t) => tableKey(t.schema, t.name)));
  if (!plan) return { emptyOnSource: notCopied, exact: notCopied };
  if (phase === 'regular') {
    const empty = new Set([...plan.keys, ...notCopied]);
    return { select: (k) => !plan.matviewKeys.has(k) && !plan.ancestorKeys.has(k), emptyOnSource: empty, exact: empty };
  }
  return {
    select: (k) => plan.keys.has(k) || plan.matviewKeys.has(k) || plan.ancestorKeys.has(k),
    emptyOnSource: new Set(),
    exact: new Set([...plan.keys, ...plan.ancestorKeys]),
  };
}

/** How the tables' content is hashed, when it is (--verify checksum). */
const checksummed = (ctx: Context): ChecksumOptions | undefined =>
  ctx.options.verify === 'checksum' ? checksumOptions(ctx.sourceMajor, ctx.targetMajor) : undefined;

/** Where the source's checksums of a phase are kept. */
const checksumsDoc = (phase: VerifyPhase): 'src_checksums.json' | 'src_checksums.delayed.json' =>
  phase === 'regular' ? 'src_checksums.json' : 'src_checksums.delayed.json';

/** Whether a phase compares sequences and large objects (the regular phase, not online). */
const withObjects = (ctx: Context, phase: VerifyPhase): boolean => phase === 'regular' && !ctx.options.online;

/**
 * Counts the source for a phase (in `snapshot`, the one its data was read in) and keeps the counts;
 * with checksums and objects as the phase asks.
 */
export async function countSource(ctx: Context, job: DatabaseJob, phase: VerifyPhase, snapshot: string | undefined): Promise<void> {
  const variant = countsVariant(ctx.options.fastVerify, phase);
  const s = scope(job, phase);
  const t0 = performance.now();
  const db = dbName(job);
  const objects = withObjects(ctx, phase)
    ? ctx.verifyQueue.add(() => withClient(ctx.source, db, (c) => inSnapshot(c, snapshot, () => readObjects(c))))
    : undefined;
  const { counts, estimated, checksums } = await countTables({
    server: ctx.source,
    database: db,
    verifyQueue: ctx.verifyQueue,
    snapshot,
    select: (k) => (s.select?.(k) ?? true) && !s.emptyOnSource.has(k),
    fast: ctx.options.fastVerify ? { exact: s.exact } : undefined,
    checksum: checksummed(ctx),
    signal: ctx.signal,
  });
  for (const k of s.emptyOnSource) counts[k] = 0;
  if (objects) await job.state.setDoc('src_objects.json', await objects);
  if (checksummed(ctx) !== undefined) await job.state.setDoc(checksumsDoc(phase), checksums);
  await job.state.setEstimated(variant, estimated);
  await job.state.setCounts('src', variant, sortKeys(counts));
  job.result.verifySeconds = (job.result.verifySeconds ?? 0) + secondsSince(t0);
}

/** Source counts of a phase that a run stopped before taking: counted now (no snapshot is left to read). */
export async function ensureSourceCounts(ctx: Context, job: DatabaseJob, phase: VerifyPhase): Promise<void> {
  const missing =
    (await job.state.counts('src', countsVariant(ctx.options.fastVerify, phase))) === undefined ||
    (checksummed(ctx) !== undefined && (await job.state.doc(checksumsDoc(phase))) === undefined) ||
    (withObjects(ctx, phase) && (await job.state.doc('src_objects.json')) === undefined);
  if (missing) await countSource(ctx, job, phase, undefined);
}

/** Forgets the counts a redone step makes stale: of both phases, exact and fast. */
export async function clearCounts(job: DatabaseJob, kind: 'src' | 'dst', phase: VerifyPhase | 'both'): Promise<void> {
  const phases: VerifyPhase[] = phase === 'both' ? ['regular', 'deferred'] : [phase];
  await job.state.clearCounts(
    kind,
    phases.flatMap((p) => [countsVariant(false, p), countsVariant(true, p)]),
  );
  if (kind === 'src') {
    for (const p of phases) await job.state.removeDoc(checksumsDoc(p));
    if (phases.includes('regular')) await job.state.removeDoc('src_objects.json');
  }
}

/** What the target holds for a phase, counted some other way than count(*) of every selected table. */
export type TargetCounter = () => Promise<{ counts: TableCounts; estimated: string[]; aggregates: Set<string>; checksums?: Record<string, string> }>;

/**
 * Counts the target for a phase (unless an earlier run did; with `countTarget` when given) and
 * compares; a difference fails the database.
 */
export async function verifyPhase(ctx: Context, job: DatabaseJob, phase: VerifyPhase, countTarget?: TargetCounter): Promise<void> {
  const db = dbName(job);
  const marker = phase === 'regular' ? Marker.verified : Marker.deferredVerified;
  const verified = await job.state.marker(marker);
  if (verified) {
    job.result.rows = (verified.rows as number | undefined) ?? job.result.rows;
    if (phase === 'regular') job.result.verifySeconds = verified.seconds ?? job.result.verifySeconds;
    return;
  }
  const variant = countsVariant(ctx.options.fastVerify, phase);
  await ensureSourceCounts(ctx, job, phase);
  const src = await job.state.counts('src', variant);
  if (src === undefined) throw new MigrateError(`${db}: the source counts could not be kept in the state directory; run again`);
  ctx.emit({ type: 'phase', db, phase: phase === 'regular' ? 'counting target' : 'deferred verifying' });
  const t0 = performance.now();
  const s = scope(job, phase);
  const checksum = checksummed(ctx);
  let dst = checksum ? undefined : await job.state.counts('dst', variant);
  let estimatedDst: string[] = [];
  let aggregates: Set<string> | undefined;
  let dstChecksums: Record<string, string> = {};
  if (dst === undefined) {
    // Restored into the target's own database (postgres, template1): the target's own tables are none of ours.
    const inPlaceSelect = job.plan.inPlace === true ? (k: string) => k in src : undefined;
    const r = countTarget
      ? await countTarget()
      : await countTables({
          server: ctx.target,
          database: db,
          verifyQueue: ctx.verifyQueue,
          select: inPlaceSelect ?? s.select,
          fast: ctx.options.fastVerify ? { exact: s.exact } : undefined,
          checksum,
          signal: ctx.signal,
        });
    dst = r.counts;
    dstChecksums = r.checksums ?? {};
    estimatedDst = r.estimated;
    aggregates = r.aggregates;
    await job.state.setCounts('dst', variant, dst);
  }
  if (phase === 'regular') ctx.emit({ type: 'phase', db, phase: 'verifying' });
  const estimated = new Set([...(await job.state.estimated(variant)).filter((k) => !s.exact.has(k)), ...estimatedDst]);
  const cmp = compareCounts(src, dst, estimated, aggregates ?? (await aggregateKeys(ctx.target, db)));
  const srcChecksums = checksum ? ((await job.state.doc<Record<string, string>>(checksumsDoc(phase))) ?? {}) : {};
  cmp.errors.push(...compareChecksums(srcChecksums, dstChecksums, dst));
  if (phase === 'regular') {
    job.result.verify = {
      mode: checksum ? 'checksum' : ctx.options.fastVerify ? 'fast' : 'count',
      ...(checksum ? { checksummedTables: Object.keys(srcChecksums).length } : {}),
    };
  }
  if (withObjects(ctx, phase)) await compareObjectsOf(ctx, job, cmp);
  const seconds = secondsSince(t0);
  job.result.verifySeconds = (job.result.verifySeconds ?? 0) + seconds;
  job.result.rows = cmp.rows;
  for (const w of cmp.warnings) {
    job.result.warnings.push(w);
    ctx.emit({ type: 'warning', db, message: w });
  }
  // Checksums and objects add their differences to the counts' (cmp.ok speaks for the counts alone).
  if (cmp.errors.length > 0) {
    await job.state.clearCounts('dst', [variant]); // recount on the next run
    const shown = cmp.errors.slice(0, 20).join('; ');
    const more = cmp.errors.length > 20 ? `; and ${String(cmp.errors.length - 20)} more` : '';
    throw new MigrateError(`verification${phase === 'deferred' ? ' of the deferred phase' : ''} failed: ${shown}${more}`);
  }
  await job.state.setMarker(marker, { seconds: phase === 'regular' ? job.result.verifySeconds : seconds, rows: cmp.rows });
}

/**
 * Compares the sequences and large objects the source had when its data was read with the target's
 * (the regular phase). A sequence whose target value lies between that reading and the source's value
 * now was copied while the source used it: a warning. The target's own postgres/template1 may hold
 * large objects of its own: a difference there is a warning.
 */
async function compareObjectsOf(ctx: Context, job: DatabaseJob, cmp: { errors: string[]; warnings: string[] }): Promise<void> {
  const db = dbName(job);
  const src = await job.state.doc<DatabaseObjects>('src_objects.json');
  if (src === undefined) throw new MigrateError(`${db}: the source's sequences and large objects could not be kept in the state directory; run again`);
  const read = (server: typeof ctx.source): Promise<DatabaseObjects> => ctx.verifyQueue.add(() => withClient(server, db, readObjects));
  const dst = await read(ctx.target);
  let r = compareObjects(src, dst);
  if (r.errors.some((e) => e.startsWith('sequence '))) r = compareObjects(src, dst, await read(ctx.source));
  const inPlace = job.plan.inPlace === true;
  cmp.errors.push(...r.errors.filter((e) => !(inPlace && e.startsWith('large objects'))));
  cmp.warnings.push(...r.warnings, ...r.errors.filter((e) => inPlace && e.startsWith('large objects')));
  job.result.verify = {
    mode: job.result.verify?.mode ?? 'count',
    ...job.result.verify,
    sequences: Object.keys(src.sequences).length,
    largeObjects: src.largeObjects.count,
  };
}
