/** What the commands share: their options resolved (or the usage error printed), the passwords asked for before any display starts. */
import { resolveOptions, type MigrateOptions, type RawOptions } from '../../options.ts';
import { ExitCode, MigrateError } from '../../errors.ts';
import { authenticateEarly } from '../../pg/connect.ts';

/** The command's options, or the exit code of the problem that keeps it from running (already printed). */
export function commandOptions(argv: RawOptions, opts: { targetRequired?: boolean } = {}): MigrateOptions | number {
  try {
    return resolveOptions(argv, process.env, opts);
  } catch (err) {
    process.stderr.write(`pg-migrate: ${(err as Error).message}\n`);
    return err instanceof MigrateError ? err.exitCode : ExitCode.usage;
  }
}

/** Asks for the passwords a terminal prompt must give, target first, before a display takes the terminal. */
export function authenticateBoth(options: MigrateOptions): Promise<void> {
  return authenticateEarly([
    { side: 'target', endpoint: options.to, appName: 'pg-migrate' },
    { side: 'source', endpoint: options.from, appName: 'pg-migrate' },
  ]);
}
