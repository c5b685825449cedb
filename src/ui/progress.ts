import type { MigrateEvent } from '../events.ts';
import { formatBytes, formatSeconds } from './format.ts';
import { ProgressModel } from './progress-model.ts';
import { liveLines, plainProgressLines } from './progress-lines.ts';

export interface Reporter {
  onEvent(event: MigrateEvent): void;
  /** Stops the live display (if any) and waits for it to settle. */
  close(): Promise<void>;
}

/** Where plain lines go (a stream, or the --log-file's redacting sink). */
interface Out {
  write(chunk: string): unknown;
}

/** How often the plain lines repeat the progress of the databases in flight (ms). */
export const PLAIN_PROGRESS_EVERY_MS = 30_000;

/** The lines of an event (no timestamp; a line may go on, indented, on the next ones); none for phases and progress. */
export function eventText(e: MigrateEvent, brief = false): string[] {
  switch (e.type) {
    case 'stage':
      return [`${e.stage}: ${e.status}${e.message ? ` — ${e.message}` : ''}`];
    case 'plan': {
      const total = e.databases.reduce((n, d) => n + (d.sizeBytes ?? 0), 0);
      const dbs = brief
        ? `${String(e.databases.length)} databases, ${formatBytes(total)}`
        : `${String(e.databases.length)} databases (${e.databases.map((d) => `${d.name} ${formatBytes(d.sizeBytes)}${d.deferred ? `, ${String(d.deferred)} deferred tables` : ''}`).join('; ')})`;
      const p = e.parallelism;
      return [
        `plan: ${dbs}; dump ${String(p.dumpParallel)}×${String(p.dumpJobs)} jobs, restore ${String(p.restoreParallel)}×${String(p.restoreJobs)} jobs, ` +
          `verify ${String(p.verifyConcurrency)}, compression ${e.compression}, client programs ${e.toolsVersion}`,
        ...e.notMigrated.map((nm) => `not migrated: ${nm.name}: ${nm.reason}`),
      ];
    }
    case 'warning':
      return [`warning${e.db ? ` [${e.db}]` : ''}: ${e.message}`];
    case 'info':
      return [e.message];
    default:
      return [];
  }
}

/**
 * Plain lines with timestamps, for logs (CI, containers, pipes, --log-file): every event, and every
 * `progressEveryMs` the progress of each database in flight and the totals.
 */
export function plainReporter(out: Out, progressEveryMs = PLAIN_PROGRESS_EVERY_MS): Reporter {
  const model = new ProgressModel(performance.now());
  let lastProgress = performance.now();
  const line = (text: string): void => void out.write(`${new Date().toISOString()} ${text}\n`);
  return {
    onEvent(e) {
      const now = performance.now();
      model.onEvent(e, now);
      if (e.type === 'phase') {
        const since = model.get(e.db)?.startedAt ?? now;
        line(`[${e.db}] ${e.phase} (${formatSeconds((now - since) / 1000)})${e.detail ? `: ${e.detail}` : ''}`);
      } else if (e.type === 'progress') {
        if (now - lastProgress < progressEveryMs) return;
        lastProgress = now;
        for (const l of plainProgressLines({ inFlight: model.inFlight(), failed: model.failed(), totals: model.totals(now) })) line(l);
      } else for (const l of eventText(e)) line(l);
    },
    close: () => Promise.resolve(),
  };
}

const ESC = '\u001b[';

/**
 * The live display on a terminal: lasting lines (stages, warnings) scroll above a block redrawn every
 * second at the bottom: the failures, the databases in flight, and one line of totals. The block keeps
 * to the terminal's width and height, so the totals never scroll away.
 */
export function ttyReporter(out: NodeJS.WriteStream, color: boolean): Reporter {
  const t0 = performance.now();
  const model = new ProgressModel(t0);
  let drawn = 0;
  let tick: NodeJS.Timeout | undefined;
  const paint = (lasting: string[]): void => {
    let s = drawn > 0 ? `${ESC}${String(drawn)}A\r${ESC}J` : '';
    for (const l of lasting) s += `${l}\n`;
    const lines = model.planned
      ? liveLines({ inFlight: model.inFlight(), failed: model.failed(), totals: model.totals(performance.now()) }, out.columns || 80, out.rows || 24)
      : [];
    const last = lines.length - 1;
    lines.forEach((l, i) => {
      const styled = !color ? l : i === last ? `${ESC}1m${l}${ESC}22m` : l.startsWith('✖') ? `${ESC}31m${l}${ESC}39m` : l;
      s += `${styled}\n`;
    });
    drawn = lines.length;
    out.write(s);
  };
  return {
    onEvent(e) {
      model.onEvent(e, performance.now());
      const lasting = eventText(e, true);
      if (e.type === 'plan' && !tick) {
        tick = setInterval(() => {
          paint([]);
        }, 1000);
        tick.unref();
      }
      if (lasting.length > 0) paint(color && e.type === 'warning' ? lasting.map((l) => `${ESC}33m${l}${ESC}39m`) : lasting);
      else if (e.type === 'phase') paint([]);
    },
    close() {
      if (tick) clearInterval(tick);
      if (model.planned) paint([]);
      return Promise.resolve();
    },
  };
}
