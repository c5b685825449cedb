/** The `plan` command's report: what the run would do, and every problem that keeps it from starting. */
import Table from 'cli-table3';
import type { Inspection } from '../pipeline/preflight.ts';
import type { ServerFacts } from '../pipeline/facts.ts';
import { formatBytes } from './format.ts';

const server = (label: string, f: ServerFacts | undefined, who: string): string =>
  f === undefined
    ? `${label}: not reached`
    : `${label}: ${who}, ${f.version} (system identifier ${f.identity.systemIdentifier})${f.superuser ? ', superuser' : ''}${f.inRecovery ? ', standby' : ''}`;

/** The plan as lines for a terminal or a log. */
export function renderPlan(r: Inspection, who: { source: string; target: string }): string {
  const lines: string[] = [server('source', r.sourceFacts, who.source), server('target', r.targetFacts, who.target)];
  if (r.tools) lines.push(`client programs: ${r.tools.pgDump.version} (${r.tools.pgDump.path.replace(/\/pg_dump$/, '')})`);
  const plan = r.plan;
  if (plan) {
    const p = plan.parallelism;
    lines.push(
      `parallelism: dump ${String(p.dumpParallel)}×${String(p.dumpJobs)} jobs, restore ${String(p.restoreParallel)}×${String(p.restoreJobs)} jobs, verify ${String(p.verifyConcurrency)}; compression ${plan.compression}; ${String(plan.cores)} cores`,
    );
    const table = new Table({
      head: ['Database', 'Size', 'Path', 'Jobs', 'Deferred tables'],
      style: { head: [], border: [], compact: true },
    });
    for (const d of plan.databases) {
      const deferred = r.deferredSizes?.[d.name] ?? [];
      table.push([
        d.name,
        formatBytes(d.sizeBytes),
        d.inPlace === true ? 'in place' : d.dataPath,
        `${String(d.dumpJobs)}/${String(d.restoreJobs)}`,
        deferred.length === 0 ? '' : deferred.map((t) => `${t.table} ${formatBytes(t.bytes)}`).join(', '),
      ]);
    }
    lines.push(`${String(plan.databases.length)} databases to migrate:`, table.toString());
  }
  for (const d of r.notMigrated ?? []) lines.push(`not migrated ${d.name}: ${d.reason}`);
  for (const d of r.skipped ?? []) lines.push(`left out ${d.name}: ${d.reason}`);
  if (r.budget) {
    const b = r.budget;
    lines.push(
      `connections: the source needs ${String(b.source.needed)} of ${String(b.source.available)} free (max_connections ${String(b.source.maxConnections)}); the target needs ${String(b.target.needed)} of ${String(b.target.available)} free (max_connections ${String(b.target.maxConnections)})`,
    );
  }
  if (r.disk) {
    const n = r.disk.databases.length;
    lines.push(
      n === 0
        ? 'disk: no database on the file path, the dumps need no room'
        : `disk: the dumps of ${String(n)} databases on the file path are planned at ${formatBytes(r.disk.needed)}; ${r.disk.dumpRoot} has ${formatBytes(r.disk.free)} free`,
    );
  }
  if (r.tuning) {
    const values = Object.entries(r.tuning.values)
      .map(([k, v]) => `${k}=${v}`)
      .join(' ');
    lines.push(r.tuning.skipped === undefined ? `tuning of the target during the run: ${values}` : `no tuning of the target: ${r.tuning.skipped}`);
    if (r.tuning.pending) lines.push('the target still carries the tuning of an interrupted run: the next migrate (or pg-migrate cleanup) reverts it first');
  }
  if (r.roles) {
    lines.push(`roles to create: ${r.roles.create.join(', ') || 'none'}`);
    for (const role of r.roles.leftAlone) {
      lines.push(
        `role ${role.name} exists on the target and will be left as it is${role.differences.length > 0 ? `; differs from the source: ${role.differences.join('; ')}` : ''}`,
      );
    }
  }
  for (const w of r.warnings) lines.push(`warning: ${w}`);
  if (r.problems.length > 0) {
    lines.push('the run could not start:');
    for (const p of r.problems) lines.push(`  - ${p}`);
  } else lines.push('the run can start: nothing was changed by this plan');
  return lines.join('\n');
}
