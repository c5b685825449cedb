/** `pg-migrate [migrate]`: the whole migration (the default command). */
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { ArgumentsCamelCase, Argv } from 'yargs';
import { migrate, type RawOptions } from '../../index.ts';
import { ExitCode } from '../../errors.ts';
import { ChildRegistry } from '../../proc/run.ts';
import { renderSummary } from '../../ui/summary.ts';
import { buildReport } from '../../ui/report.ts';
import type { Reporter } from '../../ui/progress.ts';
import { migrateOptions } from '../args.ts';
import { createReporter, teeReporter, useColor, type ProgressMode } from '../renderer.ts';
import { openLogFile } from '../log-file.ts';
import { withSignals } from '../signals.ts';
import { commandOptions, authenticateBoth } from './common.ts';
import { TOOL_VERSION } from '../version.ts';

export const command = ['migrate', '$0'];
export const describe = 'migrate every user database, the roles and tablespaces onto the target, verify every table (the default command)';
export const builder = <T>(y: Argv<T>) =>
  migrateOptions(y).option('json', { type: 'boolean', default: false, describe: 'print the JSON report on stdout instead of the summary table' });

type MigrateArgs = ArgumentsCamelCase<RawOptions & { progress: ProgressMode; color: boolean; logFile?: string; json: boolean }>;

/** Runs the migration as the command line asks; returns the exit code. */
export async function runMigrateCommand(argv: MigrateArgs): Promise<number> {
  const options = commandOptions(argv);
  if (typeof options === 'number') return options;
  const children = new ChildRegistry();
  let log: Reporter | undefined;
  if (argv.logFile !== undefined) {
    const file = path.resolve(argv.logFile);
    try {
      log = await openLogFile(file, children, () => [options.from.password, options.to.password]);
    } catch (err) {
      process.stderr.write(`pg-migrate: the log file ${file} cannot be opened: ${(err as Error).message}\n`);
      return ExitCode.usage;
    }
  }
  await authenticateBoth(options);
  // Progress on stderr; stdout holds only the summary or the JSON report.
  const display = createReporter(process.stderr, argv.progress, useColor(process.stderr, argv.color));
  const reporter = log ? teeReporter(display, log) : display;
  const summary = await withSignals(children, (signal) =>
    migrate(options, {
      signal,
      children,
      onEvent: (e) => {
        reporter.onEvent(e);
      },
    }),
  );
  log?.onEvent({
    type: 'info',
    message: `finished with exit code ${String(summary.exitCode)}${summary.error === undefined ? '' : `: ${summary.error}`}`,
  });
  await reporter.close();
  const report = buildReport(summary, TOOL_VERSION);
  if (argv.json) process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
  else if (summary.databases.length === 0 && summary.error !== undefined) {
    // Stopped before any database work (options, preflight, state): the error says it all.
    process.stderr.write(`pg-migrate: ${summary.error}\n`);
  } else process.stdout.write(`${renderSummary(summary, useColor(process.stdout, argv.color))}\n`);
  if (argv.json && summary.error !== undefined) process.stderr.write(`pg-migrate: ${summary.error}\n`);
  const reportFile = options.report;
  if (reportFile) {
    await mkdir(path.dirname(reportFile), { recursive: true })
      .then(() => writeFile(reportFile, `${JSON.stringify(report, null, 2)}\n`))
      .catch((err: unknown) => {
        process.stderr.write(`pg-migrate: could not write the report ${reportFile}: ${(err as Error).message}\n`);
      });
  }
  return summary.exitCode;
}

export const handler = async (argv: MigrateArgs): Promise<void> => {
  process.exitCode = await runMigrateCommand(argv);
};
