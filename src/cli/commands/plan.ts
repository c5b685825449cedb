/** `pg-migrate plan`: everything preflight checks and what the run would do; changes nothing. Exit 0 when the run could start, 3 when not. */
import os from 'node:os';
import type { ArgumentsCamelCase, Argv } from 'yargs';
import { inspectMigration, type RawOptions } from '../../index.ts';
import { ExitCode } from '../../errors.ts';
import { renderPlan } from '../../ui/plan.ts';
import { commandOptions } from './common.ts';
import { migrateOptions } from '../args.ts';

export const command = 'plan';
export const describe = 'show what migrate would do (databases, data paths, jobs, connections, disk, tuning, roles) and every problem; changes nothing';
export const builder = <T>(y: Argv<T>) => migrateOptions(y).option('json', { type: 'boolean', default: false, describe: 'print the plan as JSON' });

type PlanArgs = ArgumentsCamelCase<RawOptions & { json: boolean }>;

export async function runPlanCommand(argv: PlanArgs): Promise<number> {
  const options = commandOptions(argv);
  if (typeof options === 'number') return options;
  const r = await inspectMigration(options, { cores: os.availableParallelism() });
  const canStart = r.problems.length === 0;
  if (argv.json) process.stdout.write(`${JSON.stringify({ canStart, ...r }, null, 2)}\n`);
  else {
    const who = (e: { host: string; port: number; user: string }): string => `${e.user}@${e.host}:${String(e.port)}`;
    process.stdout.write(`${renderPlan(r, { source: who(options.from), target: who(options.to) })}\n`);
  }
  return canStart ? ExitCode.ok : ExitCode.preflight;
}

export const handler = async (argv: PlanArgs): Promise<void> => {
  process.exitCode = await runPlanCommand(argv);
};
