/** `pg-migrate cutover`: the end of an online migration (see pipeline/cutover.ts); --dry-run shows what it would do. */
import type { ArgumentsCamelCase, Argv } from 'yargs';
import { runCutover } from '../../pipeline/cutover.ts';
import { ChildRegistry } from '../../proc/run.ts';
import { withSignals } from '../signals.ts';
import { DEFAULTS, VERIFY_MODES, type RawOptions } from '../../options.ts';
import { connectionOptions, outputOptions } from '../args.ts';
import { createReporter, useColor, type ProgressMode } from '../renderer.ts';
import { commandOptions, authenticateBoth } from './common.ts';
import { ExitCode, UsageError } from '../../errors.ts';

export const command = 'cutover';
export const describe =
  'end an online migration: stop writes on the source, let the target catch up, copy sequences and what replication does not carry, compare, drop the replication';
export const builder = <T>(y: Argv<T>) =>
  outputOptions(connectionOptions(y))
    .option('state-dir', { type: 'string', describe: 'parent of pg_migrate_state/ [default: $HOME]' })
    .option('dump-root', { type: 'string', default: DEFAULTS.dumpRoot, describe: 'directory for the copies of the unreplicated tables' })
    .option('pg-bin-dir', { type: 'string', describe: 'directory of psql [default: PATH]' })
    .option('grace-seconds', {
      type: 'number',
      default: 3,
      describe: 'seconds between making new sessions read-only and ending the sessions still open on the source',
    })
    .option('catchup-timeout', { type: 'number', default: 60, describe: 'seconds to wait for the subscriptions to apply everything written before the stop' })
    .option('fence-roles', {
      type: 'string',
      array: true,
      describe: "end only these roles' sessions on the source [default: every session but the tool's own]",
    })
    .option('verify', {
      choices: VERIFY_MODES,
      default: DEFAULTS.verify,
      describe:
        "count: every table's rows compared with writes stopped; checksum: also its content, hashed by both servers (adds a read of every table to the write stop)",
    })
    .option('dry-run', { type: 'boolean', default: false, describe: 'show what the cutover would do; change nothing' });

type CutoverArgs = ArgumentsCamelCase<
  RawOptions & { progress: ProgressMode; color: boolean; graceSeconds: number; catchupTimeout: number; fenceRoles?: string[]; dryRun: boolean }
>;

/** The cutover's own values, checked before anything connects (yargs gives NaN for text that is no number). */
export function cutoverProblems(argv: { graceSeconds: number; catchupTimeout: number; fenceRoles?: string[] }): string[] {
  const problems: string[] = [];
  const whole = (name: string, v: number, min: number, max: number): void => {
    if (!Number.isInteger(v) || v < min || v > max)
      problems.push(
        `--${name} must be a whole number of seconds from ${String(min)} to ${String(max)} (got ${Number.isNaN(v) ? 'something that is not a number' : String(v)})`,
      );
  };
  whole('grace-seconds', argv.graceSeconds, 0, 3600);
  whole('catchup-timeout', argv.catchupTimeout, 1, 86400);
  if (argv.fenceRoles?.some((r) => r.trim() === '')) problems.push('--fence-roles must name a role (it was empty)');
  return problems;
}

export async function runCutoverCommand(argv: CutoverArgs): Promise<number> {
  const problems = cutoverProblems(argv);
  if (problems.length > 0) {
    process.stderr.write(`pg-migrate: ${new UsageError(problems).message}\n`);
    return ExitCode.usage;
  }
  const options = commandOptions(argv);
  if (typeof options === 'number') return options;
  await authenticateBoth(options);
  const reporter = createReporter(process.stderr, argv.progress, useColor(process.stderr, argv.color));
  const children = new ChildRegistry();
  const summary = await withSignals(
    children,
    (signal) =>
      runCutover(
        options,
        {
          graceSeconds: argv.graceSeconds,
          catchupTimeoutSeconds: argv.catchupTimeout,
          ...(argv.fenceRoles ? { fenceRoles: argv.fenceRoles } : {}),
          dryRun: argv.dryRun,
        },
        {
          signal,
          children,
          onEvent: (e) => {
            reporter.onEvent(e);
          },
        },
      ),
    {
      cleanly: 'before dropping the replication; a fenced source is made writable again',
      now: 'a fenced source stays read-only until pg-migrate cutover or cleanup runs again',
    },
  );
  await reporter.close();
  for (const line of summary.lines) process.stdout.write(`${line}\n`);
  for (const d of summary.databases) {
    process.stdout.write(
      `${d.name}: ${String(d.sequences)} sequences set, ${String(d.tablesCopied)} tables copied, ${String(d.largeObjects)} large objects written, ${String(d.rows ?? 0)} rows compared${d.checksummed !== undefined ? `, ${String(d.checksummed)} tables' content compared by checksum` : ''}\n`,
    );
  }
  if (summary.error !== undefined) process.stderr.write(`pg-migrate: ${summary.error}\n`);
  return summary.exitCode;
}

export const handler = async (argv: CutoverArgs): Promise<void> => {
  process.exitCode = await runCutoverCommand(argv);
};
