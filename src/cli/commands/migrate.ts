/** `pg-migrate [migrate]`: the whole migration (the default command). */
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { ArgumentsCamelCase, Argv } from 'yargs';
import { migrate, resolveOptions, type RawOptions } from '../../index.ts';
import { ExitCode, MigrateError } from '../../errors.ts';
import { ChildRegistry } from '../../proc/run.ts';
import { authenticateEarly } from '../../pg/connect.ts';
import { renderSummary } from '../../ui/summary.ts';
import { migrateOptions } from '../args.ts';
import { createReporter, type ProgressMode } from '../renderer.ts';
import { withSignals } from '../signals.ts';

export const command = ['migrate', '$0'];
export const describe = 'migrate every user database, the roles and tablespaces onto the target, verify every table (the default command)';
export const builder = <T>(y: Argv<T>) => migrateOptions(y);

type MigrateArgs = ArgumentsCamelCase<RawOptions & { progress: ProgressMode }>;

/** Runs the migration as the command line asks; returns the exit code. */
export async function runMigrateCommand(argv: MigrateArgs): Promise<number> {
  let options;
  try {
    options = resolveOptions(argv);
  } catch (err) {
    process.stderr.write(`pg-migrate: ${(err as Error).message}\n`);
    return err instanceof MigrateError ? err.exitCode : ExitCode.usage;
  }
  await authenticateEarly([
    { side: 'target', endpoint: options.to, appName: 'pg-migrate' },
    { side: 'source', endpoint: options.from, appName: 'pg-migrate' },
  ]);
  const children = new ChildRegistry();
  const reporter = createReporter(process.stdout, argv.progress);
  const summary = await withSignals(children, (signal) =>
    migrate(options, {
      signal,
      children,
      onEvent: (e) => {
        reporter.onEvent(e);
      },
    }),
  );
  await reporter.close();
  if (summary.databases.length === 0 && summary.error !== undefined) {
    // Stopped before any database work (options, preflight, state): the error says it all.
    process.stderr.write(`pg-migrate: ${summary.error}\n`);
  } else process.stdout.write(`\n${renderSummary(summary, process.stdout.isTTY)}\n`);
  const report = options.report;
  if (report) {
    await mkdir(path.dirname(report), { recursive: true })
      .then(() => writeFile(report, `${JSON.stringify(summary, null, 2)}\n`))
      .catch((err: unknown) => {
        process.stderr.write(`pg-migrate: could not write the report ${report}: ${(err as Error).message}\n`);
      });
  }
  return summary.exitCode;
}

export const handler = async (argv: MigrateArgs): Promise<void> => {
  process.exitCode = await runMigrateCommand(argv);
};
