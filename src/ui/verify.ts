/** The `verify` command's report: a header, the databases compared, and every difference. */
import Table from 'cli-table3';
import type { ServerComparison } from '../pipeline/compare.ts';
import { formatCount, formatSeconds } from './format.ts';

export function renderComparison(r: ServerComparison): string {
  const side = (s: ServerComparison['source']): string => `${s.host}:${String(s.port)} (PostgreSQL ${s.version})`;
  const lines: string[] = [
    `verify (${r.mode === 'checksum' ? 'row counts and content checksums' : 'row counts'}, sequences, large objects): source ${side(r.source)} → target ${side(r.target)}`,
    ...r.notes.map((n) => `note: ${n}`),
  ];
  if (r.databases.length > 0) {
    const table = new Table({
      head: ['Database', 'Tables', 'Checksummed', 'Rows', 'Sequences', 'Large objects', 'Differences', 'Time'],
      style: { head: [], border: [], compact: true },
    });
    for (const d of r.databases) {
      table.push([
        d.name,
        formatCount(d.tables),
        formatCount(d.checksummed),
        formatCount(d.rows),
        formatCount(d.sequences),
        formatCount(d.largeObjects),
        formatCount(d.differences.length),
        formatSeconds(d.seconds),
      ]);
    }
    lines.push(table.toString());
  }
  for (const n of r.notCompared) lines.push(`not compared: ${n.name}: ${n.reason}`);
  if (r.differences.length === 0) {
    lines.push(`equal: ${String(r.databases.length)} database(s) compared in ${formatSeconds(r.seconds)}, no difference`);
  } else {
    lines.push(`${String(r.differences.length)} difference(s):`);
    for (const d of r.differences) lines.push(`  ${d.database}: ${d.difference}`);
    lines.push(`(if either server was written to during the comparison, some of these differences may come from those writes)`);
  }
  return lines.join('\n');
}
