/** The JSON report (--json on stdout, --report FILE): the summary with the tool's version first. */
import type { RunSummary } from '../events.ts';

export interface MigrationReport extends RunSummary {
  tool: { name: 'pg-migrate'; version: string };
}

export function buildReport(summary: RunSummary, version: string): MigrationReport {
  const { startedAt, endedAt, servers, ...rest } = summary;
  return { tool: { name: 'pg-migrate', version }, startedAt, endedAt, servers, ...rest };
}
