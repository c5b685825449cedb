import { Listr, type ListrTaskWrapper, type DefaultRenderer, type SimpleRenderer } from 'listr2';
import type { MigrateEvent, Phase } from '../events.ts';
import { formatBytes, formatSeconds } from './format.ts';

export interface Reporter {
  onEvent(event: MigrateEvent): void;
  /** Stops the live display (if any) and waits for it to settle. */
  close(): Promise<void>;
}

type Out = NodeJS.WritableStream;

/** Plain lines with timestamps, for logs (CI, containers, pipes). */
export function plainReporter(out: Out): Reporter {
  const started = new Map<string, number>();
  const line = (text: string): void => void out.write(`${new Date().toISOString()} ${text}\n`);
  return {
    onEvent(e) {
      switch (e.type) {
        case 'stage':
          line(`${e.stage}: ${e.status}${e.message ? ` — ${e.message}` : ''}`);
          break;
        case 'plan':
          line(
            `plan: ${e.databases.length} databases (${e.databases.map((d) => `${d.name} ${formatBytes(d.sizeBytes)}${d.deferred ? `, ${d.deferred} deferred tables` : ''}`).join('; ')}); ` +
              `dump ${e.parallelism.dumpParallel}×${e.parallelism.dumpJobs} jobs, restore ${e.parallelism.restoreParallel}×${e.parallelism.restoreJobs} jobs, verify ${e.parallelism.verifyConcurrency}, compression ${e.compression}, client programs ${e.toolsVersion}`,
          );
          for (const nm of e.notMigrated) line(`not migrated: ${nm.name}: ${nm.reason}`);
          break;
        case 'phase': {
          const since = started.get(e.db) ?? performance.now();
          started.set(e.db, since);
          const el = (performance.now() - since) / 1000;
          line(`[${e.db}] ${e.phase} (${formatSeconds(el)})${e.detail ? `: ${e.detail}` : ''}`);
          break;
        }
        case 'warning':
          line(`warning${e.db ? ` [${e.db}]` : ''}: ${e.message}`);
          break;
        case 'info':
          line(e.message);
          break;
      }
    },
    close: () => Promise.resolve(),
  };
}

interface DbRow {
  name: string;
  size: string;
  phase: Phase;
  startedAt?: number;
  task?: ListrTaskWrapper<unknown, typeof DefaultRenderer, typeof SimpleRenderer>;
  settle?: (err?: Error) => void;
  lastDetail?: string;
}

/** listr2 on a terminal: one line per database with its phase, size and elapsed time, and the total. */
export function ttyReporter(out: Out): Reporter {
  const t0 = performance.now();
  const rows = new Map<string, DbRow>();
  let list: Listr<unknown, typeof DefaultRenderer, typeof SimpleRenderer> | undefined;
  let running: Promise<unknown> | undefined;
  let finishTotal: (() => void) | undefined;
  let totalTask: DbRow['task'];
  let tick: NodeJS.Timeout | undefined;
  const early = plainReporter(out);
  const title = (r: DbRow): string => {
    const el = r.startedAt === undefined ? '' : ` ${formatSeconds((performance.now() - r.startedAt) / 1000)}`;
    return `${r.name} (${r.size}) — ${r.phase}${el}`;
  };
  const refresh = (): void => {
    for (const r of rows.values()) if (r.task && r.phase !== 'verified' && r.phase !== 'failed') r.task.title = title(r);
    if (totalTask) totalTask.title = `total elapsed ${formatSeconds((performance.now() - t0) / 1000)}`;
  };
  return {
    onEvent(e) {
      if (e.type === 'plan') {
        early.onEvent(e);
        for (const d of e.databases) rows.set(d.name, { name: d.name, size: formatBytes(d.sizeBytes), phase: 'queued' });
        list = new Listr<unknown, typeof DefaultRenderer, typeof SimpleRenderer>(
          [
            {
              title: 'total elapsed',
              task: (_ctx, task) => {
                totalTask = task;
                return new Promise<void>((resolve) => (finishTotal = resolve));
              },
            },
            ...[...rows.values()].map((r) => ({
              title: title(r),
              task: (_ctx: unknown, task: DbRow['task']) => {
                r.task = task;
                return new Promise<void>(
                  (resolve, reject) =>
                    (r.settle = (err?: Error) => {
                      if (err) reject(err);
                      else resolve();
                    }),
                );
              },
            })),
          ],
          { concurrent: true, exitOnError: false, registerSignalListeners: false, rendererOptions: { collapseErrors: false } },
        );
        running = list.run().catch(() => undefined);
        tick = setInterval(refresh, 1000);
        tick.unref();
        return;
      }
      if (e.type === 'phase') {
        const r = rows.get(e.db);
        if (!r) return;
        if (r.startedAt === undefined && e.phase !== 'queued') r.startedAt = performance.now();
        r.phase = e.phase;
        if (r.task) r.task.title = title(r);
        if (e.phase === 'verified') r.settle?.();
        if (e.phase === 'failed') r.settle?.(new Error(`${r.name}: ${e.detail ?? 'failed'}`));
        return;
      }
      const dbTask = e.type === 'warning' && e.db !== undefined ? rows.get(e.db)?.task : undefined;
      if (e.type === 'warning' && dbTask) {
        dbTask.output = `warning: ${e.message}`;
        return;
      }
      if (!list) early.onEvent(e);
      else if (totalTask) totalTask.output = e.type === 'stage' ? `${e.stage}: ${e.status}` : e.message;
    },
    async close() {
      if (tick) clearInterval(tick);
      refresh();
      for (const r of rows.values()) if (r.phase !== 'verified' && r.phase !== 'failed') r.settle?.(new Error(`${r.name}: not finished`));
      finishTotal?.();
      await running;
    },
  };
}
