/** Library API: `migrate(options, { signal, onEvent })` runs one migration and returns its summary. */
import { resolveOptions, type MigrateOptions, type RawOptions } from './options.ts';
import { runMigration, type RunHooks } from './pipeline/run.ts';
import type { RunSummary } from './events.ts';

export type { MigrateOptions, RawOptions, RunHooks, RunSummary };
export type { MigrateEvent, DbResult, Phase } from './events.ts';
export { ExitCode, MigrateError } from './errors.ts';
export { ChildRegistry } from './proc/run.ts';
export { resolveOptions };

export function migrate(options: MigrateOptions, hooks: RunHooks = {}): Promise<RunSummary> {
  return runMigration(options, hooks);
}
