/** `pg-migrate status`: where the migration stands, from the state directory alone (no server needed; safe while a run is going). */
import os from 'node:os';
import path from 'node:path';
import type { ArgumentsCamelCase, Argv } from 'yargs';
import { addReplicationLag, readStatus } from '../../pipeline/status.ts';
import { ExitCode, errorMessage } from '../../errors.ts';
import { renderStatus } from '../../ui/status.ts';
import { connectionOptions, outputOptions } from '../args.ts';
import { type RawOptions } from '../../options.ts';
import { commandOptions } from './common.ts';

export const command = 'status';
export const describe =
  'show, from the state directory alone, where the migration stands: each database, the run going, a pending tuning; given the target (--to, --to-host), also the replication lag of an online migration';
export const builder = <T>(y: Argv<T>) =>
  outputOptions(connectionOptions(y))
    .option('state-dir', { type: 'string', describe: 'parent of pg_migrate_state/ [default: $HOME]' })
    .option('json', { type: 'boolean', default: false, describe: 'print the status as JSON' });

type StatusArgs = ArgumentsCamelCase<RawOptions & { stateDir?: string; json: boolean }>;

export async function runStatusCommand(argv: StatusArgs): Promise<number> {
  // Options first: a --state-dir that is a file is named as such (exit 2).
  const o = commandOptions(argv, { targetRequired: false });
  if (typeof o === 'number') return o;
  const stateDir = path.resolve(argv.stateDir ?? process.env.HOME ?? os.homedir());
  let status: Awaited<ReturnType<typeof readStatus>>;
  try {
    status = await readStatus(stateDir);
  } catch (err) {
    process.stderr.write(
      `pg-migrate: the state in ${stateDir}/pg_migrate_state cannot be read (${errorMessage(err)}); pass the --state-dir of the migration\n`,
    );
    return ExitCode.usage;
  }
  // With the target's connection options, an online migration's replication lag is asked of the servers.
  if (o.targetGiven) {
    const appName = `pg-migrate/status-${String(process.pid)}`;
    await addReplicationLag(status, { side: 'source', endpoint: o.from, appName }, { side: 'target', endpoint: o.to, appName }).catch((err: unknown) => {
      process.stderr.write(`pg-migrate: the replication lag could not be read: ${(err as Error).message}\n`);
    });
  }
  process.stdout.write(argv.json ? `${JSON.stringify(status, null, 2)}\n` : `${renderStatus(status)}\n`);
  return ExitCode.ok;
}

export const handler = async (argv: StatusArgs): Promise<void> => {
  process.exitCode = await runStatusCommand(argv);
};
