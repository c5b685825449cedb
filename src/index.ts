/** Library API: `migrate(options, { signal, onEvent })` runs one migration and returns its summary. */
import { resolveOptions, type MigrateOptions, type RawOptions } from './options.ts';
import { runMigration, type RunHooks } from './pipeline/run.ts';
import type { RunSummary } from './events.ts';
import { randomBytes } from 'node:crypto';
import { inspect, type Inspection } from './pipeline/preflight.ts';
import { StateStore } from './state/store.ts';
import { holderAlive, type RunLock } from './pipeline/lock.ts';

export type { MigrateOptions, RawOptions, RunHooks, RunSummary, Inspection };
export type { MigrateEvent, DbResult, Phase } from './events.ts';
export { ExitCode, MigrateError } from './errors.ts';
export { ChildRegistry } from './proc/run.ts';
export { resolveOptions };

export function migrate(options: MigrateOptions, hooks: RunHooks = {}): Promise<RunSummary> {
  return runMigration(options, hooks);
}

/**
 * What a migration with these options would do, and every problem that keeps it from starting;
 * changes nothing (the state directory is only read).
 */
export async function inspectMigration(options: MigrateOptions, opts: { env?: NodeJS.ProcessEnv; cores: number }): Promise<Inspection> {
  const appName = `pg-migrate/plan-${randomBytes(4).toString('hex')}`;
  const store = new StateStore(options.stateDir);
  const out = await inspect(
    options,
    { side: 'source', endpoint: options.from, appName },
    { side: 'target', endpoint: options.to, appName },
    options.fresh ? undefined : store,
    opts.env ?? process.env,
    opts.cores,
  );
  // A run going on this state directory: migrate would stop at once (exit 4).
  const holder = await store.readDoc<RunLock>(store.lockPath).catch(() => undefined);
  if (holder && holder.pid !== process.pid && (await holderAlive(holder))) {
    out.problems.push(
      `another pg-migrate (pid ${String(holder.pid)} on ${holder.host}, started ${holder.startedAt}) is using the state in ${store.root}; wait for it or stop it first`,
    );
  }
  return out;
}
