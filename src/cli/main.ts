/**
 * The command line: yargs with one module per command (commands/), usage errors mapped to exit code 2.
 * The only place that reads the arguments; the commands set the exit code.
 */
import yargs from 'yargs';
import { ExitCode, UsageError } from '../errors.ts';
import { explainUnknown } from './args.ts';
import { installPasswordPrompt } from './prompt.ts';
import * as migrateCommand from './commands/migrate.ts';
import * as planCommand from './commands/plan.ts';
import * as statusCommand from './commands/status.ts';
import * as cleanupCommand from './commands/cleanup.ts';
import * as cutoverCommand from './commands/cutover.ts';
import { TOOL_VERSION } from './version.ts';
import * as verifyCommand from './commands/verify.ts';

/** The options that may be given more than once (camel case, as yargs names them). */
const REPEATABLE = new Set(['includeDb', 'excludeDb', 'delayTableData', 'redoDb', 'fenceRoles', '_']);

const EXIT_CODES =
  'Exit codes: 0 all verified, 1 some database or the globals failed, 2 invalid options, 3 preflight failed (nothing changed), 4 state of another server pair, 5 unexpected error, 130 interrupted. verify: 0 equal, 1 differences, 3 a server cannot be reached.';

/** Parses the arguments and runs the command they name; resolves to the exit code. */
export async function main(args: string[]): Promise<number> {
  process.exitCode = undefined;
  for (const flag of ['--from-pass', '--to-pass']) {
    if (args.some((a) => a === flag || a.startsWith(`${flag}=`))) {
      process.stderr.write(
        `pg-migrate: warning: ${flag} puts a password on the command line, where ps shows it to every user of this machine; use ${flag === '--from-pass' ? 'PG_MIGRATE_FROM_PASS' : 'PG_MIGRATE_TO_PASS'}, PGPASSWORD or ~/.pgpass instead\n`,
      );
    }
  }
  try {
    await yargs(args)
      .scriptName('pg-migrate')
      .usage(
        '$0 [command] [options]\n\nMigrate every user database, the roles and tablespaces of a PostgreSQL server onto another server, verify every table, and resume after an interruption.',
      )
      .env('PG_MIGRATE')
      .parserConfiguration({ 'camel-case-expansion': true, 'strip-dashed': true })
      // An option that is not repeatable, given twice, takes its last value, as most command lines do.
      .middleware((argv) => {
        for (const [key, value] of Object.entries(argv)) {
          if (Array.isArray(value) && !REPEATABLE.has(key)) argv[key] = value.at(-1) as unknown;
        }
      }, true)
      // The terminal's password prompt (asked when a server wants one; up front with --password).
      .middleware((argv) => {
        installPasswordPrompt(argv.password === true);
      })
      .command(migrateCommand)
      .command(planCommand)
      .command(statusCommand)
      .command(cleanupCommand)
      .command(cutoverCommand)
      .command(verifyCommand)
      .strict()
      .version(TOOL_VERSION)
      .help()
      .alias('help', 'h')
      .wrap(Math.min(120, process.stdout.columns || 100))
      .epilogue(EXIT_CODES)
      .fail((msg: string | null, err: Error | undefined) => {
        throw err ?? new UsageError([`${explainUnknown(msg ?? 'invalid arguments', args)}; see pg-migrate --help`]);
      })
      .parseAsync();
  } catch (err) {
    process.stderr.write(`pg-migrate: ${(err as Error).message}\n`);
    return err instanceof UsageError ? ExitCode.usage : ExitCode.internal;
  }
  return typeof process.exitCode === 'number' ? process.exitCode : ExitCode.ok;
}
