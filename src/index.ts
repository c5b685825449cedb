/** Library API: `migrate(options, { signal, onEvent })` runs one migration and returns its summary. */
import { resolveOptions, type MigrateOptions, type RawOptions } from './options.ts';
import { runMigration, type RunHooks } from './pipeline/run.ts';
import type { RunSummary } from './events.ts';
import { randomBytes } from 'node:crypto';
import { inspect, type Inspection } from './pipeline/preflight.ts';
import { StateStore } from './state/store.ts';

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
  return inspect(
    options,
    { side: 'source', endpoint: options.from, appName },
    { side: 'target', endpoint: options.to, appName },
    options.fresh ? undefined : store,
    opts.env ?? process.env,
    opts.cores,
  );
}
