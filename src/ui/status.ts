/** The `status` command's report. */
import Table from 'cli-table3';
import type { MigrationStatus } from '../pipeline/status.ts';
import { formatBytes, formatCount, formatSeconds } from './format.ts';

export function renderStatus(s: MigrationStatus): string {
  if (!s.exists) return `no migration state in ${s.stateDir}`;
  const lines: string[] = [`state: ${s.stateDir}`];
  if (s.pair) {
    const side = (x: { host: string; port: number; systemIdentifier: string }): string =>
      `${x.host}:${String(x.port)} (system identifier ${x.systemIdentifier})`;
    lines.push(`source ${side(s.pair.source)} → target ${side(s.pair.target)}`);
  }
  if (s.run) {
    lines.push(
      s.run.alive
        ? `a run is going: pid ${String(s.run.pid)} on ${s.run.host}, started ${s.run.startedAt} (${s.run.appName})`
        : `the last run (pid ${String(s.run.pid)} on ${s.run.host}, started ${s.run.startedAt}) was killed; the next run or pg-migrate cleanup cleans up after it`,
    );
  } else lines.push('no run is going');
  if (s.tuning) {
    lines.push(
      `the target is tuned${s.tuning.at ? ` since ${s.tuning.at}` : ''}${s.run?.alive === true ? ' by the run that is going' : ' (as far as the state knows: a run killed while reverting may have put it back already): the next run or pg-migrate cleanup puts back'} ${Object.entries(
        s.tuning.previous,
      )
        .map(([k, v]) => `${k}=${v ?? '(unset)'}`)
        .join(' ')}`,
    );
  }
  lines.push(`globals: ${s.globals ? `migrated at ${s.globals.at}` : 'not migrated yet'}`);
  const table = new Table({ head: ['Database', 'Result', 'Step', 'Dump', 'Restore', 'Verify', 'Rows', 'At'], style: { head: [], border: [], compact: true } });
  const order = { failed: 0, interrupted: 1, 'in progress': 2, 'not started': 3, verified: 4 } as const;
  const dbs = [...s.databases].sort((a, b) => order[a.result] - order[b.result] || (a.name < b.name ? -1 : 1));
  for (const d of dbs) {
    table.push([
      d.name,
      d.result,
      d.step,
      formatSeconds(d.dumpSeconds),
      formatSeconds(d.restoreSeconds),
      formatSeconds(d.verifySeconds),
      formatCount(d.rows),
      d.at ?? '-',
    ]);
  }
  if (dbs.length > 0) lines.push(table.toString());
  for (const d of dbs) if (d.error) lines.push(`${d.name} failed at ${d.error.at} while ${d.error.step}: ${d.error.message}`);
  for (const d of dbs) {
    const r = d.replication;
    if (!r) continue;
    const lag =
      r.lagBytes === undefined
        ? ''
        : `; ${r.applying === true ? 'applying' : 'NOT applying (see the target server log)'}, ${r.lagBytes === null ? '?' : formatBytes(r.lagBytes)} behind${r.lagSeconds === null || r.lagSeconds === undefined ? '' : ` (${formatSeconds(r.lagSeconds)})`}`;
    lines.push(`${d.name}: ${r.state} (subscription ${r.subscription}, slot ${r.slot})${lag}`);
  }
  const by = (r: string): number => s.databases.filter((d) => d.result === r).length;
  lines.push(
    `${String(by('verified'))} verified, ${String(by('in progress'))} in progress, ${String(by('failed'))} failed, ${String(by('not started'))} not started${by('interrupted') > 0 ? `, ${String(by('interrupted'))} interrupted (no run is going: run the same command again to resume)` : ''}`,
  );
  return lines.join('\n');
}
