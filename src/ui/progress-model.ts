/**
 * Where the run stands, from its events alone (pure: every time is given): per database its phase and
 * the bytes it has on the target out of its size on the source, for the run the same in total, and
 * rates and ETAs over the last minute of samples. Both displays (live and plain lines) read it.
 */
import type { DbProgress, MigrateEvent, Phase } from '../events.ts';

/** Rates are measured over this window (ms). */
const RATE_WINDOW_MS = 60_000;

interface Point {
  at: number;
  bytes: number;
}

export interface DbView {
  name: string;
  sizeBytes: number | null;
  phase: Phase;
  /** When it left the queue (ms). */
  startedAt?: number;
  /** Bytes on the target (beyond an empty database) out of sizeBytes. */
  doneBytes: number;
  /** Bytes per second over the last minute; undefined until two samples differ in time. */
  rate?: number;
  /** Seconds left at that rate. */
  eta?: number;
  /** What the servers told of the work in flight (dump written, COPYs, index builds). */
  sample?: DbProgress;
  /** Why it failed. */
  reason?: string;
}

export interface Totals {
  databases: number;
  done: number;
  inFlight: number;
  queued: number;
  failed: number;
  doneBytes: number;
  totalBytes: number;
  rate?: number;
  eta?: number;
  elapsedSeconds: number;
}

const FINISHED = new Set<Phase>(['verified', 'failed']);

/** Bytes per second over the points of the window ending at the last one. */
export function rateOf(points: readonly Point[], windowMs = RATE_WINDOW_MS): number | undefined {
  const last = points.at(-1);
  if (!last) return undefined;
  const first = points.find((p) => p.at >= last.at - windowMs);
  if (!first || last.at - first.at < 1000) return undefined;
  return Math.max(0, ((last.bytes - first.bytes) * 1000) / (last.at - first.at));
}

/** Seconds to move `remaining` bytes at `rate`; undefined when nothing moves. */
export function etaOf(remaining: number, rate: number | undefined): number | undefined {
  if (remaining <= 0) return 0;
  return rate === undefined || rate <= 0 ? undefined : remaining / rate;
}

export class ProgressModel {
  private readonly dbs = new Map<string, DbView>();
  private readonly history = new Map<string, Point[]>();
  private readonly total: Point[] = [];
  private readonly t0: number;

  constructor(t0: number) {
    this.t0 = t0;
  }

  get planned(): boolean {
    return this.dbs.size > 0;
  }

  /** Takes an event in (`at`: performance.now() when it arrived). */
  onEvent(e: MigrateEvent, at: number): void {
    if (e.type === 'plan') {
      for (const d of e.databases) this.dbs.set(d.name, { name: d.name, sizeBytes: d.sizeBytes, phase: 'queued', doneBytes: 0 });
    } else if (e.type === 'phase') {
      const d = this.dbs.get(e.db);
      if (!d) return;
      if (d.startedAt === undefined && e.phase !== 'queued') d.startedAt = at;
      // What the servers told belongs to the step that ended (its COPYs, its dump); bytes done stay.
      if (d.phase !== e.phase) d.sample = undefined;
      d.phase = e.phase;
      if (e.phase === 'failed') d.reason = e.detail ?? 'failed';
      if (e.phase === 'verified') {
        d.doneBytes = d.sizeBytes ?? d.doneBytes;
        d.sample = undefined;
        this.record(d, at);
      }
      if (e.phase === 'verified' || e.phase === 'failed') this.recordTotal(at);
    } else if (e.type === 'progress') {
      for (const p of e.databases) {
        const d = this.dbs.get(p.db);
        if (!d || FINISHED.has(d.phase)) continue;
        d.sample = p;
        // Never backwards: a database's size on the target may shrink for a moment (indexes dropped).
        if (p.targetBytes !== undefined) d.doneBytes = Math.max(d.doneBytes, p.targetBytes);
        this.record(d, e.at);
      }
      this.recordTotal(e.at);
    }
  }

  private record(d: DbView, at: number): void {
    const h = this.history.get(d.name) ?? [];
    h.push({ at, bytes: d.doneBytes });
    while (h.length > 2 && (h[0]?.at ?? at) < at - RATE_WINDOW_MS) h.shift();
    this.history.set(d.name, h);
    d.rate = rateOf(h);
    d.eta = d.sizeBytes === null ? undefined : etaOf(d.sizeBytes - d.doneBytes, d.rate);
  }

  private recordTotal(at: number): void {
    this.total.push({ at, bytes: this.sumDone() });
    while (this.total.length > 2 && (this.total[0]?.at ?? at) < at - RATE_WINDOW_MS) this.total.shift();
  }

  private sumDone(): number {
    let n = 0;
    for (const d of this.dbs.values()) n += d.doneBytes;
    return n;
  }

  get(name: string): DbView | undefined {
    return this.dbs.get(name);
  }

  /** Databases in flight, in the order they started. */
  inFlight(): DbView[] {
    return [...this.dbs.values()].filter((d) => d.phase !== 'queued' && !FINISHED.has(d.phase)).sort((a, b) => (a.startedAt ?? 0) - (b.startedAt ?? 0));
  }

  failed(): DbView[] {
    return [...this.dbs.values()].filter((d) => d.phase === 'failed');
  }

  totals(at: number): Totals {
    const all = [...this.dbs.values()];
    const count = (f: (d: DbView) => boolean): number => all.filter(f).length;
    const totalBytes = all.reduce((n, d) => n + (d.sizeBytes ?? 0), 0);
    const doneBytes = this.sumDone();
    const rate = rateOf(this.total);
    const remaining = all.filter((d) => d.phase !== 'failed').reduce((n, d) => n + Math.max(0, (d.sizeBytes ?? 0) - d.doneBytes), 0);
    return {
      databases: all.length,
      done: count((d) => d.phase === 'verified'),
      inFlight: count((d) => d.phase !== 'queued' && !FINISHED.has(d.phase)),
      queued: count((d) => d.phase === 'queued'),
      failed: count((d) => d.phase === 'failed'),
      doneBytes,
      totalBytes,
      rate,
      eta: etaOf(remaining, rate),
      elapsedSeconds: (at - this.t0) / 1000,
    };
  }
}
