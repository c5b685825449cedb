import { access, constants, mkdir } from 'node:fs/promises';
import path from 'node:path';
import type pg from 'pg';
import type { MigrateOptions } from '../options.ts';
import { connectionsNeeded, planDatabase, planParallelism, type RunPlan } from '../plan.ts';
import { connect, oneRow, type Server } from '../pg/connect.ts';
import { chooseCompression, discoverTools, majorOfVersionNum, versionProblems, type Tools } from '../proc/tools.ts';
import { MigrateError, PreflightError } from '../errors.ts';
import { Marker } from '../state/names.ts';
import type { ServerIdentity, StateStore } from '../state/store.ts';
import { globMatch } from '../patterns.ts';
import { listDatabases, selectDatabases } from './discover.ts';
import { planDeferred } from './deferred-plan.ts';
import { alterSystemAllowed } from './tune.ts';

export interface ServerFacts {
  identity: ServerIdentity;
  major: number;
  versionNum: number;
  superuser: boolean;
  /** Connections this run may open. */
  available: number;
  maxConnections: number;
  inRecovery: boolean;
  /** Whether ALTER SYSTEM may be used (the tuning needs it). */
  alterSystem: { ok: boolean; why?: string };
}

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
}

async function serverFacts(client: pg.Client, server: Server): Promise<ServerFacts> {
  const v = await client.query<{ num: string; superuser: boolean; max: string; reserved: string; used: string; recovery: boolean }>(
    `select current_setting('server_version_num') as num,
            (select rolsuper from pg_roles where rolname = current_user) as superuser,
            current_setting('max_connections') as max,
            (current_setting('superuser_reserved_connections')::int
              + coalesce((select setting::int from pg_settings where name = 'reserved_connections'), 0))::text as reserved,
            (select count(*) from pg_stat_activity where datid is not null)::text as used,
            pg_is_in_recovery() as recovery`,
  );
  const row = oneRow(v);
  const versionNum = Number(row.num);
  let systemIdentifier: string;
  if (versionNum >= 90600) {
    systemIdentifier = oneRow(await client.query<{ id: string }>('select system_identifier::text as id from pg_control_system()')).id;
  } else {
    // pg_control_system() came with 9.6; the data directory stands in for the identifier.
    const dd = await client.query<{ dd: string }>("select current_setting('data_directory') as dd").catch(() => undefined);
    systemIdentifier = `data_directory:${dd?.rows[0]?.dd ?? 'unknown'}`;
  }
  const max = Number(row.max);
  return {
    identity: { host: server.endpoint.host, port: server.endpoint.port, systemIdentifier },
    major: majorOfVersionNum(versionNum),
    versionNum,
    superuser: row.superuser,
    maxConnections: max,
    available: max - Number(row.reserved) - Number(row.used),
    inRecovery: row.recovery,
    alterSystem: await alterSystemAllowed(client),
  };
}

/**
 * `store` holds the markers of the run being resumed (undefined with --fresh: nothing on the target is ours).
 * Everything that can be checked before anything changes. Every problem found is reported at once,
 * each with its fix; nothing on either server is changed here.
 */
export async function preflight(
  options: MigrateOptions,
  source: Server,
  target: Server,
  store: StateStore | undefined,
  env: NodeJS.ProcessEnv,
  cores: number,
): Promise<PreflightResult> {
  const problems: string[] = [];
  const warnings: string[] = [];
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
    if (!src || !dst) throw new PreflightError(problems);

    const [sourceFacts, targetFacts] = await Promise.all([serverFacts(src, source), serverFacts(dst, target)]);
    if (sourceFacts.identity.systemIdentifier === targetFacts.identity.systemIdentifier) {
      problems.push(
        `the source and the target are the same server (system identifier ${sourceFacts.identity.systemIdentifier}); point --to-host/--to-port at the server to migrate onto`,
      );
    }
    if (!targetFacts.superuser) {
      problems.push(
        `the target user "${target.endpoint.user}" is not a superuser; pg-migrate needs one to create roles and databases and to tune the server: pass --to-user with a superuser`,
      );
    }
    if (targetFacts.inRecovery) problems.push('the target server is a standby (in recovery) and cannot be written to; migrate onto a primary');
    if (!sourceFacts.superuser) {
      warnings.push(
        `the source user "${source.endpoint.user}" is not a superuser: role passwords are not copied (pg_dumpall --no-role-passwords) and tables it cannot read will fail`,
      );
    }
    const tools = toolsFound.tools;
    if (tools) {
      const v = versionProblems(tools.pgDump.major, `${tools.pgDump.version} in ${path.dirname(tools.pgDump.path)}`, sourceFacts.major, targetFacts.major);
      problems.push(...v.problems);
      warnings.push(...v.warnings);
    }
    if (!options.disableDstOptimizations && !targetFacts.alterSystem.ok) {
      warnings.push(
        `the target will not be tuned for the load: ${targetFacts.alterSystem.why ?? ''}. For speed you may set fsync = off, synchronous_commit = off, full_page_writes = off and autovacuum = off there yourself for the run (and back afterwards), or pass --disable-dst-optimizations to silence this`,
      );
    }

    // Databases and their conflicts on the target.
    const all = await listDatabases(src);
    const selection = await selectDatabases(all, options.includeDb, options.excludeDb, source, sourceFacts.major);
    for (const glob of options.includeDb) {
      if (!all.some((d) => globMatch(d.name, glob))) {
        problems.push(`--include-db ${JSON.stringify(glob)} matches no database on the source`);
      }
    }
    const onTarget = new Set((await dst.query<{ datname: string }>('select datname from pg_database')).rows.map((r) => r.datname));
    for (const db of selection.migrate) {
      if (db.inPlace === true) {
        if (!onTarget.has(db.name))
          problems.push(
            `the target has no database ${db.name} to restore the source's ${db.name} into; create it there or leave it out with --exclude-db ${db.name}`,
          );
      } else if (onTarget.has(db.name) && (await store?.database(db.name).marker(Marker.restoreStarted)) === undefined) {
        problems.push(
          `database ${JSON.stringify(db.name)} already exists on the target and was not created by this migration; drop it there (DROP DATABASE ${JSON.stringify(db.name)}) or leave it out with --exclude-db`,
        );
      }
    }

    // Deferred tables.
    const deferred = await planDeferred(options.delayTableData, selection.migrate, source, problems);
    for (const db of selection.migrate) {
      if (db.inPlace === true && deferred.has(db.name)) {
        problems.push(
          `--delay-table-data names tables of ${db.name}, which is restored into the target's own ${db.name} in one transaction: its tables cannot be deferred`,
        );
      }
    }

    // Connections.
    const parallelism = planParallelism(options, cores, sourceFacts, targetFacts);
    const needSrc = connectionsNeeded(parallelism.dumpParallel, parallelism.dumpJobs, parallelism.verifyConcurrency);
    const needDst = connectionsNeeded(parallelism.restoreParallel, parallelism.restoreJobs, parallelism.verifyConcurrency);
    if (needSrc > sourceFacts.available) {
      problems.push(
        `the source has ${sourceFacts.available} free connections (max_connections ${sourceFacts.maxConnections}) but these options need ${needSrc} ` +
          `(dump-parallel ${parallelism.dumpParallel} × (2 + dump-jobs ${parallelism.dumpJobs}) + verify-concurrency ${parallelism.verifyConcurrency} + 2); lower --dump-jobs/--dump-parallel/--verify-concurrency or raise max_connections on the source`,
      );
    }
    if (needDst > targetFacts.available) {
      problems.push(
        `the target has ${targetFacts.available} free connections (max_connections ${targetFacts.maxConnections}) but these options need ${needDst} ` +
          `(restore-parallel ${parallelism.restoreParallel} × (2 + restore-jobs ${parallelism.restoreJobs}) + verify-concurrency ${parallelism.verifyConcurrency} + 2); lower --restore-jobs/--restore-parallel/--verify-concurrency or raise max_connections on the target`,
      );
    }

    // Dump root.
    try {
      await mkdir(options.dumpRoot, { recursive: true });
      await access(options.dumpRoot, constants.W_OK);
    } catch (err) {
      problems.push(`the dump root ${options.dumpRoot} cannot be written (${(err as Error).message}); pass a writable --dump-root`);
    }

    if (problems.length > 0 || !tools) throw new PreflightError(problems);
    const plan: RunPlan = {
      cores,
      parallelism,
      compression: options.compression ?? chooseCompression(tools.pgDump.major),
      databases: selection.migrate.map((db) => planDatabase(db, options, parallelism, cores, deferred.get(db.name))),
    };
    return { sourceFacts, targetFacts, tools, plan, notMigrated: selection.notMigrated, skipped: selection.skipped, warnings };
  } finally {
    await Promise.all(clients.map((c) => c.end().catch(() => undefined)));
  }
}
