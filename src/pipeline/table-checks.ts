/** What was compared per table, read back from the counts the verification kept in the state (for the JSON report). */
import type { TableCheck } from '../events.ts';
import { countsVariant, type VerifyPhase } from '../state/names.ts';
import type { DatabaseState } from '../state/store.ts';

/** Per table and phase: both sides' numbers and how they were taken (a count, or an estimate with --fast-verify). */
export async function tableChecks(state: DatabaseState, fast: boolean, phases: VerifyPhase[]): Promise<TableCheck[]> {
  const out: TableCheck[] = [];
  for (const phase of phases) {
    const variant = countsVariant(fast, phase);
    const src = await state.counts('src', variant);
    const dst = await state.counts('dst', variant);
    if (src === undefined && dst === undefined) continue;
    const estimated = new Set(await state.estimated(variant));
    const keys = [...new Set([...Object.keys(src ?? {}), ...Object.keys(dst ?? {})])].sort();
    for (const table of keys) {
      out.push({ table, phase, method: estimated.has(table) ? 'estimate' : 'count', source: src?.[table] ?? null, target: dst?.[table] ?? null });
    }
  }
  return out;
}
