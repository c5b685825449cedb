import Table from 'cli-table3';
import type { DbResult, RunSummary } from '../events.ts';
import { formatBytes, formatCount, formatSeconds } from './format.ts';
import { ExitCode } from '../errors.ts';
import { painter } from './live-block.ts';

/** Past this many databases, the verified ones beyond the room left are folded into one line. */
export const SUMMARY_ROWS = 20;

/** Failures first, then what did not finish, then the verified databases (each group in the run's order). */
const RESULT_ORDER: Record<DbResult['status'], number> = { failed: 0, interrupted: 1, 'not migrated': 2, verified: 3 };

/**
 * The summary's table rows: every database that is not verified, failures first, and the verified
 * ones while there is room (up to `maxRows` in all); the rest of them are folded into `folded`.
 */
export function summaryRows(databases: readonly DbResult[], maxRows = SUMMARY_ROWS): { rows: DbResult[]; folded: number } {
  const sorted = databases.map((d, i) => ({ d, i })).sort((a, b) => RESULT_ORDER[a.d.status] - RESULT_ORDER[b.d.status] || a.i - b.i);
  const rows = sorted.map((x) => x.d);
  if (rows.length <= maxRows) return { rows, folded: 0 };
  const notVerified = rows.filter((d) => d.status !== 'verified');
  const room = Math.max(0, maxRows - notVerified.length);
  const verified = rows.filter((d) => d.status === 'verified');
  return { rows: [...notVerified, ...verified.slice(0, room)], folded: verified.length - Math.min(room, verified.length) };
}

/** The closing report: a compact table (failures first; past a screenful the verified databases folded), then totals, failures and what the operator must do. */
export function renderSummary(s: RunSummary, color: boolean, maxRows = SUMMARY_ROWS): string {
  const hasDeferred = s.databases.some((d) => (d.deferredTables ?? 0) > 0);
  const head = ['Database', 'Size', 'Dump', 'Restore', 'Verify', 'Rows', ...(hasDeferred ? ['Regular', 'Total'] : []), 'Result'];
  // Painted here, not by cli-table3: its colours follow its own guess (none when CI is set, say), not --no-color/NO_COLOR.
  const paint = painter(color);
  const table = new Table({ head: head.map((h) => paint('cyan', h)), style: { head: [], border: [], compact: true } });
  const { rows, folded } = summaryRows(s.databases, maxRows);
  for (const d of rows) {
    table.push([
      d.name,
      formatBytes(d.sizeBytes),
      formatSeconds(d.dumpSeconds),
      formatSeconds(d.restoreSeconds),
      formatSeconds(d.verifySeconds),
      formatCount(d.rows),
      ...(hasDeferred ? [formatSeconds(d.regularSeconds), formatSeconds(d.totalSeconds)] : []),
      d.status === 'failed' ? paint('red', d.status) : d.status,
    ]);
  }
  const lines: string[] = [];
  if (s.databases.length > 0) lines.push(table.toString());
  if (folded > 0) lines.push(`${String(folded)} more databases verified: see \`pg-migrate status\` or --json`);
  const verified = s.databases.filter((d) => d.status === 'verified').length;
  lines.push(
    `${verified} of ${s.databases.length} databases verified; globals: ${s.globals.status}${s.globals.skippedExisting ? ` (${s.globals.skippedExisting} already existed)` : ''}`,
  );
  if (hasDeferred) lines.push(`regular phase: ${formatSeconds(s.regularElapsedSeconds)} (databases usable), total: ${formatSeconds(s.elapsedSeconds)}`);
  else lines.push(`total elapsed: ${formatSeconds(s.elapsedSeconds)}`);
  if (s.parallelism) {
    const p = s.parallelism;
    lines.push(
      `parallelism: dump ${p.dumpParallel}×${p.dumpJobs} jobs, restore ${p.restoreParallel}×${p.restoreJobs} jobs, verify ${p.verifyConcurrency}; compression ${s.compression}`,
    );
  }
  for (const e of s.globals.errors) lines.push(`globals error: ${e}`);
  for (const r of s.globals.rolesLeftAlone ?? []) {
    lines.push(
      `role ${r.name} existed on the target and was left as it is${r.differences.length > 0 ? `; differs from the source: ${r.differences.join('; ')}` : ''}`,
    );
  }
  for (const t of s.globals.tablespacesLeftAlone ?? []) lines.push(`tablespace ${t} existed on the target and was left as it is`);
  if ((s.globals.rolesWithoutPassword ?? []).length > 0) {
    lines.push(
      `login roles created without a password (the source user may not read passwords): ${(s.globals.rolesWithoutPassword ?? []).join(', ')}; set them on the target with ALTER ROLE … PASSWORD`,
    );
  }
  for (const n of s.globals.rolesNotGranted ?? []) lines.push(`role ${n.role}: not granted ${n.what} (the target user is not a superuser)`);
  for (const d of s.skipped ?? []) lines.push(`left out ${d.name}: ${d.reason}`);
  for (const d of s.databases) {
    if (d.status === 'failed') lines.push(`FAILED ${d.name}: ${d.reason ?? 'unknown reason'}`);
    if (d.status === 'not migrated') lines.push(`NOT MIGRATED ${d.name}: ${d.reason ?? ''}`);
    for (const w of d.warnings) lines.push(`warning ${d.name}: ${w}`);
  }
  if (s.error) lines.push(`error: ${s.error}`);
  if (s.tuning.reverted) lines.push(`target tuning reverted to its earlier values. ${s.tuning.notice ?? ''}`);
  if (s.exitCode === ExitCode.interrupted) lines.push('interrupted: run the same command again to resume where it stopped');
  else if (s.exitCode === ExitCode.failed)
    lines.push('some work did not complete; fix what is named above and run the same command again: verified databases are not redone');
  return lines.join('\n');
}
