import type { MigrateEvent } from '../events.ts';
import { formatBytes, formatSeconds } from './format.ts';
import { ProgressModel } from './progress-model.ts';
import { liveLines, plainProgressLines } from './progress-lines.ts';
import { LISTR_MARGIN, painter, startLiveBlock, termSize, type LiveBlock } from './live-block.ts';

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

/**
 * The live display on a terminal, drawn by listr2: lasting lines (stages, warnings) scroll above a block
 * redrawn every second at the bottom: the line of totals, then the failures and the databases in flight.
 * The block keeps to the terminal's width and height, so the totals never scroll away.
 */
export function ttyReporter(out: NodeJS.WriteStream, color: boolean): Reporter {
  const model = new ProgressModel(performance.now());
  const paint = painter(color);
  let block: LiveBlock | undefined;
  let tick: NodeJS.Timeout | undefined;
  /** The block: the totals, then the failures (red) and the databases in flight. */
  const blockNow = (): { totals: string; rest: string[] } => {
    const { columns, rows } = termSize(out);
    const lines = liveLines({ inFlight: model.inFlight(), failed: model.failed(), totals: model.totals(performance.now()) }, columns - LISTR_MARGIN, rows);
    const totals = lines.pop() ?? '';
    return { totals, rest: lines.map((l) => (l.startsWith('✖') ? paint('red', l) : l)) };
  };
  const refresh = (): void => {
    if (!block) return;
    const { totals, rest } = blockNow();
    block.set(totals, rest);
  };
  const lasting = (text: string[]): void => {
    if (block) block.above(text);
    else if (text.length > 0) out.write(`${text.join('\n')}\n`);
  };
  return {
    onEvent(e) {
      model.onEvent(e, performance.now());
      const text = eventText(e, true);
      lasting(e.type === 'warning' ? text.map((l) => paint('yellow', l)) : text);
      if (e.type === 'plan' && !block) {
        const { totals, rest } = blockNow();
        block = startLiveBlock(out, color, totals, rest);
        tick = setInterval(refresh, 1000);
        tick.unref();
      } else if (e.type === 'phase') refresh();
    },
    async close() {
      if (tick) clearInterval(tick);
      refresh();
      await block?.close();
    },
  };
}
