/** The command-line options (yargs), grouped as --help shows them; defaults come from options.ts. */
import type { Argv } from 'yargs';
import { DATA_PATHS, DEFAULTS, VERIFY_MODES } from '../options.ts';
import { CONNECTION_DEFAULTS } from '../pg/endpoint.ts';
import { PROGRESS_MODES } from './renderer.ts';

/** Connection options of both servers (defaults are applied after PG* variables and services, in pg/endpoint.ts). */
export function connectionOptions<T>(y: Argv<T>) {
  const d = CONNECTION_DEFAULTS;
  return y
    .group(['from', 'from-host', 'from-port', 'from-user', 'from-pass', 'from-db'], 'Source server:')
    .option('from', {
      type: 'string',
      describe: 'source connection: a URI (postgresql://user@host:port/db?sslmode=require), keyword=value pairs (host=... sslmode=...) or service=NAME',
    })
    .option('from-host', { type: 'string', describe: `source host name, IP or socket directory (overrides --from) [default: PGHOST, else ${d.sourceHost}]` })
    .option('from-port', { type: 'number', describe: `source port [default: PGPORT, else ${String(d.port)}]` })
    .option('from-user', { type: 'string', describe: `source user, a superuser to copy role passwords [default: PGUSER, else ${d.user}]` })
    .option('from-pass', { type: 'string', describe: 'source password (better: PG_MIGRATE_FROM_PASS, PGPASSWORD, ~/.pgpass or the prompt)' })
    .option('from-db', { type: 'string', describe: `source database used for discovery and globals [default: PGDATABASE, else ${d.dbname}]` })
    .group(['to', 'to-host', 'to-port', 'to-user', 'to-pass', 'to-db', 'password'], 'Target server:')
    .option('to', { type: 'string', describe: 'target connection, as --from (postgresql://admin@new-db:5432/postgres?sslmode=verify-full)' })
    .option('to-host', {
      type: 'string',
      describe: 'target host name, IP or socket directory (overrides --to) [required unless --to, a service or PGHOST names it]',
    })
    .option('to-port', { type: 'number', describe: `target port [default: PGPORT, else ${String(d.port)}]` })
    .option('to-user', { type: 'string', describe: `target user: a superuser, or one with CREATEDB and CREATEROLE [default: PGUSER, else ${d.user}]` })
    .option('to-pass', { type: 'string', describe: 'target password (better: PG_MIGRATE_TO_PASS, PGPASSWORD, ~/.pgpass or the prompt)' })
    .option('to-db', { type: 'string', describe: `target database used for ALTER SYSTEM and globals [default: PGDATABASE, else ${d.dbname}]` })
    .option('password', {
      alias: 'W',
      type: 'boolean',
      default: false,
      describe: 'ask on the terminal for the password of each side that has none given (as psql -W); without it, asked only when a server wants one',
    });
}

const PROGRESS_DESCRIBE =
  'progress on stderr: tty: a live display (databases in flight, failures, one line of totals with bytes, rate and ETA); plain: timestamped lines; auto: tty on a terminal outside CI';
const COLOR_DESCRIBE = 'colour on a terminal (--no-color, or NO_COLOR set, turns it off)';

/** How progress is shown (every command takes it, so scripts can pass it to all of them). */
export function outputOptions<T>(y: Argv<T>) {
  return y
    .option('progress', { choices: PROGRESS_MODES, default: 'auto' as const, describe: PROGRESS_DESCRIBE })
    .option('color', { type: 'boolean', default: true, describe: COLOR_DESCRIBE });
}

/** Every option of `migrate`. */
/** Which databases: --include-db and --exclude-db (migrate, plan, verify). */
export function selectionOptions<T>(y: Argv<T>) {
  return y
    .option('include-db', { type: 'string', array: true, describe: 'only databases matching this glob (repeatable)' })
    .option('exclude-db', { type: 'string', array: true, describe: 'leave out databases matching this glob (repeatable)' });
}

export function migrateOptions<T>(y: Argv<T>) {
  return selectionOptions(connectionOptions(y))
    .group(['dump-jobs', 'restore-jobs', 'max-parallel', 'dump-parallel', 'restore-parallel', 'verify-concurrency'], 'Parallelism:')
    .option('dump-jobs', { type: 'number', describe: 'pg_dump -j per database [default: auto: min(24, cores), fitted to max_connections]' })
    .option('restore-jobs', { type: 'number', describe: 'pg_restore -j per database [default: auto: min(12, cores), fitted to max_connections]' })
    .option('max-parallel', { alias: 'p', type: 'number', describe: 'databases in flight on each side [default: auto: min(6, max(2, cores)), fitted]' })
    .option('dump-parallel', { type: 'number', describe: 'databases dumping at once [default: --max-parallel]' })
    .option('restore-parallel', { type: 'number', describe: 'databases restoring at once [default: --max-parallel]' })
    .option('verify-concurrency', { type: 'number', default: DEFAULTS.verifyConcurrency, describe: 'count(*) queries at once, both servers together' })
    .group(
      [
        'include-db',
        'exclude-db',
        'delay-table-data',
        'delay-drop-keys',
        'migrate-globals',
        'owner',
        'overwrite-existing-roles',
        'disable-dst-optimizations',
        'fast-verify',
        'verify',
      ],
      'What to migrate:',
    )
    .option('delay-table-data', {
      type: 'string',
      array: true,
      describe: "DATABASE.[SCHEMA.]TABLE glob: load this table's data after the regular phase, indexes rebuilt afterwards (repeatable)",
    })
    .option('delay-drop-keys', {
      type: 'boolean',
      default: DEFAULTS.delayDropKeys,
      describe:
        "also drop the deferred tables' PRIMARY KEY/UNIQUE constraints and foreign keys during their load (faster): nobody may write to those tables until the run ends",
    })
    .option('migrate-globals', { type: 'boolean', default: DEFAULTS.migrateGlobals, describe: 'copy roles and tablespaces (pg_dumpall --globals-only)' })
    .option('owner', {
      type: 'boolean',
      default: DEFAULTS.owner,
      describe:
        "give each restored object its source owner; --no-owner gives them all to the target user (pg_restore --no-owner), e.g. for a target user that is not a superuser and may not make the source's owners (postgres) owners",
    })
    .option('overwrite-existing-roles', {
      type: 'boolean',
      default: DEFAULTS.overwriteExistingRoles,
      describe:
        "give roles and tablespaces that already exist on the target the source's definition (password, attributes, settings); by default they are left as they are and listed",
    })
    .option('disable-dst-optimizations', {
      type: 'boolean',
      default: DEFAULTS.disableDstOptimizations,
      describe: 'do not tune the target (fsync=off, ...) during the run',
    })
    .option('fast-verify', {
      type: 'boolean',
      default: DEFAULTS.fastVerify,
      describe: 'compare pg_class.reltuples instead of count(*) (deferred and never-analyzed tables are still counted)',
    })
    .option('verify', {
      choices: VERIFY_MODES,
      default: DEFAULTS.verify,
      describe:
        "count: each table's rows counted on both servers; checksum: also its content, an order-independent hash of its rows computed by both servers (the source in the snapshot it was copied from). Sequences and large objects are compared either way",
    })
    .group(['online', 'online-source', 'replica-identity-full'], 'Online (copy while the source keeps working, then pg-migrate cutover):')
    .option('online', {
      type: 'boolean',
      default: DEFAULTS.online,
      describe: 'after each database is copied and verified, keep it in sync by logical replication (source wal_level = logical) until pg-migrate cutover',
    })
    .option('online-source', {
      type: 'string',
      describe:
        "how the target server reaches the source, as a libpq string (host=... port=... user=...); its dbname is set per database [default: the tool's own source connection]",
    })
    .option('replica-identity-full', {
      type: 'boolean',
      default: DEFAULTS.replicaIdentityFull,
      describe: "online: set REPLICA IDENTITY FULL on the source's tables without a primary key so they replicate too (else they are copied at cutover)",
    })
    .group(
      [
        'dump-root',
        'state-dir',
        'fresh',
        'redo-db',
        'remove-dumps',
        'pg-bin-dir',
        'data-path',
        'split-table-size',
        'compression',
        'report',
        'log-file',
        'progress',
        'color',
      ],
      'Files and output:',
    )
    .option('dump-root', { type: 'string', default: DEFAULTS.dumpRoot, describe: 'directory for the dumps' })
    .option('state-dir', { type: 'string', describe: 'parent of pg_migrate_state/ and pg_verify_state/ [default: $HOME]' })
    .option('fresh', { type: 'boolean', default: DEFAULTS.fresh, describe: 'discard the state of an earlier run and start over' })
    .option('redo-db', {
      type: 'string',
      array: true,
      describe: 'migrate databases matching this glob afresh: their state is discarded and their target copy recreated (repeatable)',
    })
    .option('remove-dumps', { type: 'boolean', default: DEFAULTS.removeDumps, describe: "delete a database's dump once it verified" })
    .option('pg-bin-dir', { type: 'string', describe: 'directory of pg_dump, pg_dumpall, pg_restore, psql [default: PATH]' })
    .option('data-path', {
      choices: DATA_PATHS,
      default: DEFAULTS.dataPath,
      describe:
        'files: pg_dump -Fd -j to --dump-root, then pg_restore -j; stream: pg_dump piped into pg_restore, nothing on disk; auto: stream on a machine with up to 4 cores or for a database under 256 MB, files otherwise',
    })
    .option('split-table-size', {
      type: 'string',
      default: DEFAULTS.splitTableSize,
      describe:
        "on the stream path, copy each table at least this big (on the source; B, kB, MB, GB, TB) in parallel page ranges straight from source to target under the dump's snapshot (source 14+, UTF8 databases); off: never",
    })
    .option('compression', { type: 'string', describe: 'pg_dump -Z value [default: zstd:5 with pg_dump 16+, else 1 (gzip)]' })
    .option('report', { type: 'string', describe: 'also write the JSON report (as --json prints it) to this file' })
    .option('log-file', {
      type: 'string',
      describe: 'append every event with a timestamp and the stderr lines of pg_dump/pg_restore/psql to this file (passwords masked), whatever the display',
    })
    .option('progress', { choices: PROGRESS_MODES, default: 'auto' as const, describe: PROGRESS_DESCRIBE })
    .option('color', { type: 'boolean', default: true, describe: COLOR_DESCRIBE });
}

/** Whether the option `--name` was given on the command line (`--name value` or `--name=value`). */
export function onCommandLine(argv: readonly string[], name: string): boolean {
  return argv.some((a) => a === `--${name}` || a.startsWith(`--${name}=`));
}

/** yargs names unknown keys in camel case; one that came from a PG_MIGRATE_* variable is named as such. */
export function explainUnknown(msg: string, argv: string[], env: NodeJS.ProcessEnv = process.env): string {
  const m = /^Unknown arguments?: (.+)$/.exec(msg);
  if (!m?.[1]) return msg;
  return m[1]
    .split(', ')
    .map((key) => {
      const flag = key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
      const envName = `PG_MIGRATE_${flag.replaceAll('-', '_').toUpperCase()}`;
      const fromArgv = onCommandLine(argv, flag) || onCommandLine(argv, key);
      // A word without dashes (a mistyped command, a value without its option) is no option.
      if (!fromArgv && argv.includes(key)) {
        return argv.filter((a) => !a.startsWith('-')).indexOf(key) === 0
          ? `unknown command ${JSON.stringify(key)} (the commands are migrate, plan, status, verify, cleanup and cutover)`
          : `unexpected argument ${JSON.stringify(key)} (options begin with --; a value goes right after its option)`;
      }
      return fromArgv || env[envName] === undefined ? `unknown option --${flag}` : `unknown option from the environment variable ${envName}`;
    })
    .join('; ');
}
