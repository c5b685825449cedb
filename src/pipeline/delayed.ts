import type { Context } from './context.ts';
import type { DelayedPlan } from './delayed-plan.ts';
import type { DataPath } from './transfer.ts';
import type { DbResult } from '../events.ts';

export async function runDelayedDump(_ctx: Context, _db: string, _plan: DelayedPlan, _dataPath: DataPath): Promise<void> {
  throw new Error('--delay-table-data is not implemented yet');
}

export async function runDelayedTarget(_ctx: Context, _db: string, _plan: DelayedPlan, _dataPath: DataPath, _result: DbResult): Promise<void> {
  throw new Error('--delay-table-data is not implemented yet');
}
