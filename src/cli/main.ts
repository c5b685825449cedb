/**
 * The command line: yargs with one module per command (commands/), usage errors mapped to exit code 2.
 * The only place that reads the arguments; the commands set the exit code.
 */
import yargs, { type Argv } from 'yargs';
import { ExitCode, MigrateError, UsageError } from '../errors.ts';
import { explainUnknown, onCommandLine } from './args.ts';
import { installPasswordPrompt } from './prompt.ts';
import * as migrateCommand from './commands/migrate.ts';
import * as planCommand from './commands/plan.ts';
import * as statusCommand from './commands/status.ts';
import * as cleanupCommand from './commands/cleanup.ts';
import * as cutoverCommand from './commands/cutover.ts';
import { TOOL_VERSION } from './version.ts';
import * as verifyCommand from './commands/verify.ts';

const BUILDERS: ((y: Argv) => unknown)[] = [
  migrateCommand.builder,
  planCommand.builder,
  statusCommand.builder,
  cleanupCommand.builder,
  cutoverCommand.builder,
  verifyCommand.builder,
];

/** yargs' option table of a parser (not in its typings; the same table yargs' own `.check()` reads). */
const knownKeys = (y: unknown): string[] => Object.keys((y as { getOptions(): { key: Record<string, unknown> } }).getOptions().key);

/** Every option some command takes, kebab case (what a PG_MIGRATE_* variable may name). */
let allOptions: Set<string> | undefined;
function optionsOfAnyCommand(): Set<string> {
  allOptions ??= new Set(BUILDERS.flatMap((b) => knownKeys(b(yargs([])))));
  return allOptions;
}

/**
 * A PG_MIGRATE_* variable names an option of one command but is set for all of them (the container
 * sets PG_MIGRATE_STATE_DIR and PG_MIGRATE_DUMP_ROOT; a shell may export the connection of
 * `migrate`): a command that does not take that option ignores it instead of refusing to start. A
 * variable that names no option of any command stays an error (a typo).
 */
function dropOtherCommandsVariables(argv: Record<string, unknown>, y: unknown, args: string[], env: NodeJS.ProcessEnv): void {
  const own = new Set(knownKeys(y));
  for (const name of Object.keys(env)) {
    if (!name.startsWith('PG_MIGRATE_')) continue;
    const flag = name.slice('PG_MIGRATE_'.length).toLowerCase().replaceAll('_', '-');
    if (own.has(flag) || !optionsOfAnyCommand().has(flag)) continue;
    if (onCommandLine(args, flag)) continue;
    Reflect.deleteProperty(argv, flag);
    Reflect.deleteProperty(
      argv,
      flag.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase()),
    );
  }
}

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
      .middleware((argv, y?: unknown) => {
        dropOtherCommandsVariables(argv, y, args, process.env);
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
    // An error meant for the operator that a command did not catch (a run lock held, a server out of
    // reach) keeps its own exit code; anything else is unexpected.
    return err instanceof MigrateError ? err.exitCode : ExitCode.internal;
  }
  return typeof process.exitCode === 'number' ? process.exitCode : ExitCode.ok;
}
