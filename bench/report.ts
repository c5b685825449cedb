/** Figures and the printed table. */
import Table from 'cli-table3';

export interface RunRecord {
  contender: string;
  round: number;
  status: 'ok' | 'failed' | 'unavailable';
  error?: string;
  wallSeconds?: number;
  srcCpuSeconds?: number;
  dstCpuSeconds?: number;
  clientCpuSeconds?: number;
  toolPeakRssMB?: number;
  largestClientRssMB?: number;
  droppedCaches?: boolean;
  /** pg-migrate's own figures from its JSON report */
  pgMigrate?: PgMigrateFigures;
  /**
   * Seconds during which applications may not write: the whole run for an offline contender; for an
   * online one the write stop its cutover reports (from the end of the grace period to the end).
   */
  writeStopSeconds?: number;
  /** Online: per writer, its commits and the seconds from its last commit to the end of the run. */
  writers?: { db: string; commits: number; endedBy: string; gapSeconds: number | null; error?: string }[];
  /** Online: the longest of the writers' gaps (what the application saw, grace period included). */
  writerGapSeconds?: number;
}

export interface PgMigrateFigures {
  elapsedSeconds: number;
  regularElapsedSeconds: number;
  parallelism: unknown;
  compression: unknown;
  dumpSecondsSum: number;
  restoreSecondsSum: number;
  verifySecondsSum: number;
  databases: {
    name: string;
    status: string;
    dumpSeconds?: number;
    restoreSeconds?: number;
    verifySeconds?: number;
    regularSeconds?: number;
    totalSeconds?: number;
    rows?: number;
  }[];
}

export interface ContenderSummary {
  contender: string;
  status: string;
  okRuns: number;
  runs: number;
  medianWall?: number;
  minWall?: number;
  maxWall?: number;
  ratioToPgMigrate?: number;
  medianServerCpu?: number;
  medianClientCpu?: number;
  peakToolRssMB?: number;
  peakLargestClientRssMB?: number;
  /** Median seconds during which applications may not write (see RunRecord.writeStopSeconds). */
  medianWriteStop?: number;
  /** Online: median of the writers' longest gap. */
  medianWriterGap?: number;
}

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

export function summarize(runs: RunRecord[], order: string[]): ContenderSummary[] {
  const out: ContenderSummary[] = [];
  for (const name of order) {
    const mine = runs.filter((r) => r.contender === name);
    if (mine.length === 0) continue;
    const ok = mine.filter((r) => r.status === 'ok');
    const s: ContenderSummary = {
      contender: name,
      okRuns: ok.length,
      runs: mine.length,
      status: mine.every((r) => r.status === 'unavailable')
        ? 'unavailable'
        : ok.length === mine.length
          ? 'ok'
          : `failed ${mine.length - ok.length}/${mine.length}`,
    };
    if (ok.length > 0) {
      const walls = ok.map((r) => r.wallSeconds!);
      s.medianWall = median(walls);
      s.minWall = Math.min(...walls);
      s.maxWall = Math.max(...walls);
      s.medianServerCpu = median(ok.map((r) => r.srcCpuSeconds! + r.dstCpuSeconds!));
      s.medianClientCpu = median(ok.map((r) => r.clientCpuSeconds!));
      s.peakToolRssMB = Math.max(...ok.map((r) => r.toolPeakRssMB ?? 0));
      s.peakLargestClientRssMB = Math.max(...ok.map((r) => r.largestClientRssMB ?? 0));
      const stops = ok.map((r) => r.writeStopSeconds).filter((x): x is number => x !== undefined);
      if (stops.length > 0) s.medianWriteStop = median(stops);
      const gaps = ok.map((r) => r.writerGapSeconds).filter((x): x is number => x !== undefined);
      if (gaps.length > 0) s.medianWriterGap = median(gaps);
    }
    out.push(s);
  }
  const base = out.find((s) => s.contender === 'pg-migrate')?.medianWall;
  for (const s of out) if (base && s.medianWall !== undefined) s.ratioToPgMigrate = s.medianWall / base;
  return out;
}

export interface Floor {
  contender: string;
  round: number;
  wallSeconds: number;
  totalCpuSeconds: number;
  cores: number;
  floorSeconds: number;
}

/** Total CPU seconds (both servers + clients) of the fastest run, divided by the cores. */
export function floorOf(runs: RunRecord[], cores: number): Floor | undefined {
  const ok = runs.filter((r) => r.status === 'ok');
  if (ok.length === 0) return undefined;
  const best = ok.reduce((a, b) => (b.wallSeconds! < a.wallSeconds! ? b : a));
  const total = best.srcCpuSeconds! + best.dstCpuSeconds! + best.clientCpuSeconds!;
  return { contender: best.contender, round: best.round, wallSeconds: best.wallSeconds!, totalCpuSeconds: total, cores, floorSeconds: total / cores };
}

const f = (x: number | undefined, d = 1): string => (x === undefined ? '-' : x.toFixed(d));

export function renderTable(summaries: ContenderSummary[]): string {
  const t = new Table({
    head: ['contender', 'median s', 'min s', 'max s', 'ratio', 'write stop s', 'server CPU s', 'client CPU s', 'tool RSS MB', 'max client RSS MB', 'status'],
    style: { head: [], border: [] },
  });
  for (const s of summaries) {
    t.push([
      s.contender,
      f(s.medianWall),
      f(s.minWall),
      f(s.maxWall),
      s.ratioToPgMigrate === undefined ? '-' : s.ratioToPgMigrate.toFixed(2),
      s.medianWriterGap === undefined ? f(s.medianWriteStop) : `${f(s.medianWriteStop)} (writer ${f(s.medianWriterGap)})`,
      f(s.medianServerCpu),
      f(s.medianClientCpu),
      s.contender.startsWith('pg-migrate') ? f(s.peakToolRssMB, 0) : '-',
      f(s.peakLargestClientRssMB, 0),
      `${s.status} (${s.okRuns}/${s.runs})`,
    ]);
  }
  return t.toString();
}
