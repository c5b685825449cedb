/** `pg-migrate cleanup`: removes what killed runs left (a tuning on the target, locks, passfiles, client programs, sessions), and on request the dumps and the state. */
import type { ArgumentsCamelCase, Argv } from 'yargs';
import { cleanup } from '../../pipeline/cleanup.ts';
import { type RawOptions } from '../../options.ts';
import { ExitCode, MigrateError } from '../../errors.ts';
import { connectionOptions, outputOptions } from '../args.ts';
import { commandOptions } from './common.ts';
import { DEFAULTS } from '../../options.ts';

export const command = 'cleanup';
export const describe = 'revert a tuning left by a killed run, remove its lock, passfile and leftovers; with flags also the dumps and the state';
export const builder = <T>(y: Argv<T>) =>
  outputOptions(connectionOptions(y))
    .option('state-dir', { type: 'string', describe: 'parent of pg_migrate_state/ [default: $HOME]' })
    .option('dump-root', { type: 'string', default: DEFAULTS.dumpRoot, describe: 'directory of the dumps' })
    .option('remove-dumps', { type: 'boolean', default: false, describe: "also remove this migration's dumps from --dump-root" })
    .option('remove-state', { type: 'boolean', default: false, describe: 'also remove the state (pg_migrate_state/): the migration starts over next time' });

type CleanupArgs = ArgumentsCamelCase<RawOptions & { removeDumps: boolean; removeState: boolean }>;

export async function runCleanupCommand(argv: CleanupArgs): Promise<number> {
  const options = commandOptions(argv, { targetRequired: false });
  if (typeof options === 'number') return options;
  const appName = `pg-migrate/cleanup-${String(process.pid)}`;
  try {
    const report = await cleanup({
      stateDir: options.stateDir,
      dumpRoot: options.dumpRoot,
      source: { side: 'source', endpoint: options.from, appName },
      ...(options.targetGiven ? { target: { side: 'target', endpoint: options.to, appName } } : {}),
      removeDumps: argv.removeDumps,
      removeState: argv.removeState,
    });
    for (const line of report.done) process.stdout.write(`${line}\n`);
    for (const line of report.problems) process.stderr.write(`pg-migrate: ${line}\n`);
    if (report.done.length === 0 && report.problems.length === 0) process.stdout.write('nothing to clean up\n');
    return report.problems.length > 0 ? ExitCode.failed : ExitCode.ok;
  } catch (err) {
    process.stderr.write(`pg-migrate: ${(err as Error).message}\n`);
    return err instanceof MigrateError ? err.exitCode : ExitCode.internal;
  }
}

export const handler = async (argv: CleanupArgs): Promise<void> => {
  process.exitCode = await runCleanupCommand(argv);
};
