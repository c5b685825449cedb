/**
 * The lines of progress, pure: one per database in flight, one per failure, and one line of totals,
 * each cut to the terminal's width; the live display keeps to the terminal's height.
 */
import type { DbView, Totals } from './progress-model.ts';
import { columns, fit, formatBytes, formatEta, formatRate, formatSeconds, formatShortCount } from './format.ts';

/** Columns given to a database's name in the live display. */
const NAME_WIDTH = 14;
/** The longest phase ("deferred verifying"). */
const PHASE_WIDTH = 18;

const pct = (done: number, total: number | null): string => (total && total > 0 ? `${String(Math.min(100, Math.floor((done * 100) / total)))}%` : '');

/** What the servers tell of the work in flight: the dump written, the COPYs and index builds. */
export function sampleDetail(d: DbView): string {
  const s = d.sample;
  if (!s) return '';
  const parts: string[] = [];
  if (s.copies) parts.push(`COPY ${formatShortCount(s.copyRows ?? 0)} rows`);
  if (s.indexes) parts.push(`index ×${String(s.indexes)}${s.indexDone === undefined ? '' : ` ${String(Math.floor(s.indexDone * 100))}%`}`);
  return parts.join(', ');
}

/** Bytes done of the total, its share, the rate and the ETA of one database (the dump written while it dumps). */
export function dbProgressText(d: DbView): string {
  if (d.sample?.dumpBytes !== undefined && (d.phase === 'dumping' || d.phase === 'deferred dumping')) {
    return `dump ${formatBytes(d.sample.dumpBytes)} written`;
  }
  if (d.doneBytes === 0 && d.rate === undefined) return `of ${formatBytes(d.sizeBytes)}`;
  const rate = d.rate === undefined ? '' : ` ${formatRate(d.rate)}`;
  const eta = d.eta === undefined ? '' : ` ETA ${formatEta(d.eta)}`;
  return `${formatBytes(d.doneBytes)}/${formatBytes(d.sizeBytes)} ${pct(d.doneBytes, d.sizeBytes)}${rate}${eta}`.trimEnd();
}

const padCut = (s: string, n: number): string => fit(s, n).padEnd(n);

/** One database in flight, in columns: name, phase (padded to `phaseWidth`), progress, what the servers tell. */
export function dbLine(d: DbView, width: number, phaseWidth = PHASE_WIDTH): string {
  const detail = sampleDetail(d);
  return fit(`${padCut(d.name, NAME_WIDTH)} ${padCut(d.phase, phaseWidth)} ${dbProgressText(d)}${detail ? ` · ${detail}` : ''}`, width);
}

export function failedLine(d: DbView, width: number): string {
  return fit(`✖ ${d.name}: ${d.reason ?? 'failed'}`, width);
}

/**
 * The one line of totals: counts of databases, bytes, rate, ETA, elapsed. Pieces are dropped from
 * the least useful (elapsed, the rate, the bytes) until it fits; the counts and the ETA stay.
 */
export function totalsLine(t: Totals, width: number): string {
  const counts = `${String(t.done)}/${String(t.databases)} done, ${String(t.inFlight)} in flight, ${String(t.queued)} queued, ${String(t.failed)} failed`;
  const bytes = `${formatBytes(t.doneBytes)}/${formatBytes(t.totalBytes)} ${pct(t.doneBytes, t.totalBytes)}`.trimEnd();
  const pieces = [
    { text: counts, keep: 4 },
    { text: bytes, keep: 2 },
    { text: formatRate(t.rate), keep: 1 },
    { text: `ETA ${formatEta(t.eta)}`, keep: 3 },
    { text: formatSeconds(t.elapsedSeconds), keep: 0 },
  ];
  for (let drop = 0; drop <= 4; drop++) {
    const line = pieces
      .filter((p) => p.keep >= drop)
      .map((p) => p.text)
      .join(' │ ');
    if (columns(line) <= width) return line;
  }
  return fit(counts, width);
}

export interface LiveInput {
  inFlight: DbView[];
  failed: DbView[];
  totals: Totals;
}

/**
 * The live display's lines: the failures, the databases in flight and, last, the totals; never more
 * than `height - 1` lines (the rest named in one line), none wider than `width - 1` columns.
 */
export function liveLines(v: LiveInput, width: number, height: number): string[] {
  const w = Math.max(20, width - 1);
  const room = Math.max(1, height - 2);
  // The phase column as wide as the longest phase shown, so the progress itself keeps its room.
  const phaseWidth = Math.min(PHASE_WIDTH, Math.max(0, ...v.inFlight.map((d) => d.phase.length)));
  const rows = [...v.failed.map((d) => failedLine(d, w)), ...v.inFlight.map((d) => dbLine(d, w, phaseWidth))];
  let shown = rows;
  if (rows.length > room) {
    shown = rows.slice(0, room - 1);
    const hidden = rows.length - shown.length;
    shown.push(fit(`… and ${String(hidden)} more (failed or in flight)`, w));
  }
  return [...shown, totalsLine(v.totals, w)];
}

/** The periodic plain lines (logs, pipes): each database in flight with its progress, then the totals. */
export function plainProgressLines(v: LiveInput): string[] {
  const lines = v.inFlight.map((d) => {
    const detail = sampleDetail(d);
    return `[${d.name}] ${d.phase}: ${dbProgressText(d)}${detail ? `; ${detail}` : ''}`;
  });
  lines.push(`progress: ${totalsLine(v.totals, Number.MAX_SAFE_INTEGER)}`);
  return lines;
}
