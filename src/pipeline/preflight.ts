/**
 * Everything that can be checked before anything changes, and the plan of the run: `inspect` reports
 * every problem at once, each with its fix, and what the run would do (the `plan` command prints it);
 * `preflight` is the same with problems turned into exit 3. Nothing on either server, and nothing on
 * disk, is changed here.
 */
import { access, constants } from 'node:fs/promises';
import path from 'node:path';
import type pg from 'pg';
import type { MigrateOptions } from '../options.ts';
import { planDatabase, planParallelism, type RunPlan } from '../plan.ts';
import { connect, type Server } from '../pg/connect.ts';
import { chooseCompression, compressionProblem, discoverTools, versionProblems, type Tools } from '../proc/tools.ts';
import { MigrateError, PreflightError, errorMessage } from '../errors.ts';
import { Marker } from '../state/names.ts';
import type { StateStore } from '../state/store.ts';
import { unmatchedGlobs } from '../patterns.ts';
import { listDatabases, selectDatabases } from './discover.ts';
import { planDeferred } from './deferred-plan.ts';
import { serverFacts, type ServerFacts } from './facts.ts';
import { budgetProblems, connectionBudget, diskNeed, DUMP_SIZE_FACTOR, type Budget, type DiskNeed } from './capacity.ts';
import { rolePlan, roles } from './roles.ts';
import { targetRecord, targetTuning, type TuningBackup } from './tune.ts';
import { onlineProblems } from './online-preflight.ts';
import { nonSuperuserChecks, tuningAdvice } from './nonsuper.ts';
import { subscriptionConninfo } from './online.ts';
import { inPlaceConflicts } from './in-place.ts';

export type { ServerFacts } from './facts.ts';

export interface PreflightResult {
  sourceFacts: ServerFacts;
  targetFacts: ServerFacts;
  tools: Tools;
  plan: RunPlan;
  /** Databases of the selection that cannot be migrated, each with its reason. */
  notMigrated: { name: string; reason: string }[];
  /** Databases left out on purpose or with nothing to migrate, each with its reason. */
  skipped: { name: string; reason: string }[];
  warnings: string[];
  /** Roles a target user that is not superuser grants itself for the run, to give objects their owners (ownership.ts). */
  ownerGrants: string[];
}

/** What `plan` shows: as much of the run as could be worked out, and every problem. */
export interface Inspection extends Partial<PreflightResult> {
  problems: string[];
  warnings: string[];
  budget?: { source: Budget; target: Budget };
  disk?: DiskNeed;
  /** The settings the run would apply, or why it would not tune; a tuning an interrupted run left applied. */
  tuning?: { values: Record<string, string>; skipped?: string; pending?: TuningBackup };
  roles?: { create: string[]; leftAlone: { name: string; differences: string[] }[] };
  /** Sizes of the deferred tables matched, per database. */
  deferredSizes?: Record<string, { table: string; bytes: number }[]>;
}

/**
 * Inspects both servers, the client programs and the dump root, and plans the run. `store` holds the
 * markers of the run being resumed (undefined with --fresh: nothing on the target is ours).
 */
export async function inspect(
  options: MigrateOptions,
  source: Server,
  target: Server,
  store: StateStore | undefined,
  env: NodeJS.ProcessEnv,
  cores: number,
): Promise<Inspection> {
  const out: Inspection = { problems: [], warnings: [] };
  const { problems, warnings } = out;
  const clients: pg.Client[] = [];
  const open = async (server: Server): Promise<pg.Client | undefined> => {
    try {
      const c = await connect(server, server.endpoint.database);
      clients.push(c);
      return c;
    } catch (err) {
      problems.push(err instanceof MigrateError ? err.message : String(err));
      return undefined;
    }
  };
  try {
    const [src, dst] = await Promise.all([open(source), open(target)]);
    const toolsFound = await discoverTools(options.pgBinDir, env);
    problems.push(...toolsFound.problems);
    if (!src || !dst) return out;

    const [sourceFacts, targetFacts] = await Promise.all([serverFacts(src, source), serverFacts(dst, target)]);
    Object.assign(out, { sourceFacts, targetFacts });
    if (sourceFacts.identity.systemIdentifier === targetFacts.identity.systemIdentifier) {
      problems.push(
        `the source and the target are the same server (system identifier ${sourceFacts.identity.systemIdentifier}); point --to-host/--to-port at the server to migrate onto`,
      );
    }
    if (targetFacts.inRecovery) problems.push('the target server is a standby (in recovery) and cannot be written to; migrate onto a primary');
    if (!sourceFacts.superuser && options.migrateGlobals) {
      warnings.push(
        `the source user "${source.endpoint.user}" is not a superuser: role passwords are not copied (pg_dumpall --no-role-passwords); the summary lists the login roles created without one`,
      );
    }
    const tools = toolsFound.tools;
    if (tools) {
      out.tools = tools;
      const z = options.compression === undefined ? undefined : compressionProblem(options.compression, tools.pgDump.major);
      if (z !== undefined) problems.push(z);
      const v = versionProblems(tools.pgDump.major, `${tools.pgDump.version} in ${path.dirname(tools.pgDump.path)}`, sourceFacts.major, targetFacts.major);
      problems.push(...v.problems);
      warnings.push(...v.warnings);
    }

    // Databases and their conflicts on the target.
    const all = await listDatabases(src);
    const selection = await selectDatabases(all, options.includeDb, options.excludeDb, source, sourceFacts.major);
    Object.assign(out, { notMigrated: selection.notMigrated, skipped: selection.skipped });
    const sourceNames = all.map((d) => d.name);
    for (const glob of unmatchedGlobs(options.includeDb, sourceNames)) problems.push(`--include-db ${JSON.stringify(glob)} matches no database on the source`);
    // A mistyped --redo-db would redo nothing, in silence.
    for (const glob of unmatchedGlobs(
      options.redoDb,
      selection.migrate.map((d) => d.name),
    )) {
      problems.push(
        `--redo-db ${JSON.stringify(glob)} matches no database being migrated; check the name (or the --include-db/--exclude-db that leave it out)`,
      );
    }
    // A mistyped --exclude-db would migrate what it meant to leave out; a selection that leaves nothing copies only the globals.
    for (const glob of unmatchedGlobs(options.excludeDb, sourceNames))
      warnings.push(`--exclude-db ${JSON.stringify(glob)} matches no database on the source, so it leaves nothing out`);
    const excluded = selection.skipped.filter((s) => s.reason !== 'holds no user objects');
    if (selection.migrate.length === 0 && excluded.length > 0) {
      warnings.push(
        `--include-db/--exclude-db leave no database to migrate (left out: ${excluded.map((s) => s.name).join(', ')})${options.migrateGlobals ? ': only the roles and tablespaces are copied' : ''}`,
      );
    }
    const onTarget = new Set((await dst.query<{ datname: string }>('select datname from pg_database')).rows.map((r) => r.datname));
    for (const db of selection.migrate) {
      if (db.inPlace === true) {
        if (!onTarget.has(db.name)) {
          problems.push(
            `the target has no database ${db.name} to restore the source's ${db.name} into; create it there or leave it out with --exclude-db ${db.name}`,
          );
        } else if ((await store?.database(db.name).marker(Marker.restored)) === undefined) {
          const clash = await inPlaceConflicts(source, target, db.name);
          if (clash.length > 0)
            problems.push(
              `the source's ${db.name} is restored into the target's own ${db.name}, which already has objects of the same names (the restore would fail on them): ${clash.join(', ')}; rename or drop them on the target if they are not needed there, or leave ${db.name} out with --exclude-db ${db.name}`,
            );
        }
      } else if (onTarget.has(db.name) && (await store?.database(db.name).marker(Marker.restoreStarted)) === undefined) {
        problems.push(
          `database ${JSON.stringify(db.name)} already exists on the target and was not created by this migration; drop it there (DROP DATABASE ${JSON.stringify(db.name)}) or leave it out with --exclude-db`,
        );
      }
    }

    // Deferred tables.
    const deferred = await planDeferred(options.delayTableData, selection.migrate, source, problems);
    out.deferredSizes = Object.fromEntries([...deferred].map(([db, p]) => [db, p.tables.map((t) => ({ table: `${t.schema}.${t.name}`, bytes: t.bytes }))]));
    for (const db of selection.migrate) {
      if (db.inPlace === true && deferred.has(db.name)) {
        problems.push(
          `--delay-table-data names tables of ${db.name}, which is restored into the target's own ${db.name} in one transaction: its tables cannot be deferred`,
        );
      }
    }

    if (!sourceFacts.superuser || !targetFacts.superuser) {
      const checks = await nonSuperuserChecks(options, { source, target, src, dst }, { source: sourceFacts, target: targetFacts }, selection.migrate, deferred);
      problems.push(...checks.problems);
      warnings.push(...checks.warnings);
      out.ownerGrants = checks.ownerGrants;
    }

    if (options.online) {
      if (deferred.size > 0)
        warnings.push('--delay-table-data has no effect with --online: the target is not used before cutover, so every table is copied in the regular phase');
      const dbs = selection.migrate.map((d) => d.name);
      problems.push(
        ...(await onlineProblems(src, dst, { source: sourceFacts, target: targetFacts }, dbs, (db) => subscriptionConninfo(options.onlineSource, source, db))),
      );
    }

    // Connections.
    const parallelism = planParallelism(options, cores, sourceFacts, targetFacts);
    out.budget = connectionBudget(parallelism, sourceFacts, targetFacts);
    problems.push(...budgetProblems(out.budget, parallelism));

    const plan: RunPlan = {
      cores,
      parallelism,
      compression: options.compression ?? (tools ? chooseCompression(tools.pgDump.major) : '1'),
      databases: selection.migrate.map((db) => planDatabase(db, options, parallelism, cores, deferred.get(db.name))),
    };
    out.plan = plan;

    // The dump root: writable (it is created if missing), with room for the dumps of the file path.
    await checkWritable(options.dumpRoot, 'the dump root', '--dump-root', problems);
    await checkWritable(options.stateDir, 'the state directory', '--state-dir', problems);
    const filesPath = plan.databases.filter((d) => d.dataPath === 'files').map((d) => d.name);
    out.disk = await diskNeed(source, options.dumpRoot, filesPath).catch((err: unknown) => {
      warnings.push(`the disk the dumps need could not be worked out: ${errorMessage(err)}`);
      return undefined;
    });
    if (out.disk?.free != null && out.disk.needed > out.disk.free) {
      problems.push(
        `the dump root ${options.dumpRoot} has ${formatGiB(out.disk.free)} free, but the dumps of the databases on the file path (${filesPath.join(', ')}) are planned at ${formatGiB(out.disk.needed)} (${String(DUMP_SIZE_FACTOR * 100)} % of their tables' size on disk); free space there, pass another --dump-root, or use --data-path stream (nothing on disk)`,
      );
    }

    // The tuning it would apply, and the roles it would create or leave alone.
    out.tuning = {
      values: await targetTuning(dst, parallelism.restoreJobs * parallelism.restoreParallel),
      pending: await targetRecord(dst).catch(() => undefined),
      ...(options.disableDstOptimizations
        ? { skipped: '--disable-dst-optimizations' }
        : targetFacts.alterSystem.ok
          ? {}
          : { skipped: targetFacts.alterSystem.why ?? 'not allowed' }),
    };
    if (out.tuning.skipped !== undefined && !options.disableDstOptimizations) {
      warnings.push(
        `the target will not be tuned for the load: ${out.tuning.skipped}. For speed you may set these yourself for the run, in the provider's parameter group (or postgresql.conf), and put them back afterwards: ${tuningAdvice(out.tuning.values)}; or pass --disable-dst-optimizations to silence this`,
      );
    }
    if (options.migrateGlobals) out.roles = rolePlan(await roles(src), await roles(dst));
    return out;
  } finally {
    await Promise.all(clients.map((c) => c.end().catch(() => undefined)));
  }
}

const formatGiB = (bytes: number): string => `${(bytes / 1024 ** 3).toFixed(2)} GiB`;

/** A directory the run writes (the dump root, the state directory), or the nearest one above it that exists, must be writable: checked without creating anything. */
async function checkWritable(dir: string, what: string, flag: string, problems: string[]): Promise<void> {
  for (let p = path.resolve(dir); ; p = path.dirname(p)) {
    try {
      await access(p, constants.F_OK);
    } catch {
      if (path.dirname(p) !== p) continue;
    }
    try {
      await access(p, constants.W_OK);
    } catch (err) {
      problems.push(`${what} ${dir} cannot be written (${(err as Error).message}); pass a writable ${flag}`);
    }
    return;
  }
}

/** Inspects, and refuses (exit 3, every problem listed) when the run could not start. */
export async function preflight(
  options: MigrateOptions,
  source: Server,
  target: Server,
  store: StateStore | undefined,
  env: NodeJS.ProcessEnv,
  cores: number,
): Promise<PreflightResult> {
  const r = await inspect(options, source, target, store, env, cores);
  const { sourceFacts, targetFacts, tools, plan, notMigrated, skipped } = r;
  if (r.problems.length > 0 || !sourceFacts || !targetFacts || !tools || !plan || !notMigrated || !skipped) throw new PreflightError(r.problems);
  return { sourceFacts, targetFacts, tools, plan, notMigrated, skipped, warnings: r.warnings, ownerGrants: r.ownerGrants ?? [] };
}
