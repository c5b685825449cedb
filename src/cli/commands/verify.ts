/**
 * `pg-migrate verify`: compares the source and the target without migrating (counts, sequences, large
 * objects; --checksum: every table's content). Exit 0 when equal, 1 with the differences, 3 when a
 * server cannot be reached.
 */
import type { ArgumentsCamelCase, Argv } from 'yargs';
import { type RawOptions } from '../../options.ts';
import { AbortError, ExitCode, MigrateError, PreflightError, errorMessage } from '../../errors.ts';
import { ChildRegistry } from '../../proc/run.ts';
import { authenticateEarly } from '../../pg/connect.ts';
import { compareServers } from '../../pipeline/compare.ts';
import { renderComparison } from '../../ui/verify.ts';
import { DEFAULTS } from '../../options.ts';
import { connectionOptions, outputOptions, selectionOptions } from '../args.ts';
import { commandOptions } from './common.ts';
import { withSignals } from '../signals.ts';

export const command = 'verify';
export const describe =
  'compare the source and the target without migrating and without changing anything: databases, tables (row counts; --checksum: content), sequences, large objects';
export const builder = <T>(y: Argv<T>) =>
  selectionOptions(outputOptions(connectionOptions(y)))
    .option('checksum', {
      type: 'boolean',
      default: false,
      describe: "also compare every table's content: an order-independent hash of its rows, computed by both servers",
    })
    .option('verify-concurrency', { type: 'number', default: DEFAULTS.verifyConcurrency, describe: 'queries at once, both servers together' })
    .option('json', { type: 'boolean', default: false, describe: 'print the comparison as JSON' });

type VerifyArgs = ArgumentsCamelCase<RawOptions & { checksum: boolean; json: boolean }>;

export async function runVerifyCommand(argv: VerifyArgs): Promise<number> {
  const options = commandOptions(argv);
  if (typeof options === 'number') return options;
  await authenticateEarly([
    { side: 'source', endpoint: options.from, appName: 'pg-migrate' },
    { side: 'target', endpoint: options.to, appName: 'pg-migrate' },
  ]);
  const o = options;
  try {
    const r = await withSignals(new ChildRegistry(), (signal) => compareServers(o, { checksum: argv.checksum, signal }), {
      cleanly: 'cancelling the comparison; verify changes nothing',
      now: 'verify changed nothing',
    });
    process.stdout.write(argv.json ? `${JSON.stringify(r, null, 2)}\n` : `${renderComparison(r)}\n`);
    return r.exitCode;
  } catch (err) {
    if (err instanceof AbortError) return ExitCode.interrupted;
    // A server that cannot be reached (or a listing that fails) before any comparison: nothing was compared.
    const e = err instanceof MigrateError ? err : new PreflightError([errorMessage(err)]);
    process.stderr.write(`pg-migrate: ${e.message}\n`);
    return e.exitCode === ExitCode.internal ? ExitCode.preflight : e.exitCode;
  }
}

export const handler = async (argv: VerifyArgs): Promise<void> => {
  process.exitCode = await runVerifyCommand(argv);
};
