import type PQueue from 'p-queue';
import type { MigrateOptions, Parallelism } from '../options.ts';
import type { Server } from '../pg/connect.ts';
import type { StateStore } from '../state/store.ts';
import type { Tools } from '../proc/tools.ts';
import type { EventSink } from '../events.ts';

/** Everything a stage needs, built once by the run. */
export interface Context {
  options: MigrateOptions;
  source: Server;
  target: Server;
  sourceMajor: number;
  targetMajor: number;
  store: StateStore;
  tools: Tools;
  compression: string;
  parallelism: Parallelism;
  /** Environment for client programs (passfile, application_name). */
  childEnv: NodeJS.ProcessEnv;
  verifyQueue: PQueue;
  /** Source size of each database being migrated (bytes). */
  sizes: Map<string, number | null>;
  /** Cores of the machine the tool runs on. */
  cores: number;
  signal: AbortSignal;
  emit: EventSink;
}

/**
 * Runs two tasks at once and waits for both to end (neither is left running unobserved); the main
 * task's failure is the one reported.
 */
export async function together(main: () => Promise<unknown>, side: () => Promise<unknown>): Promise<void> {
  const [m, o] = await Promise.allSettled([main(), side()]);
  if (m.status === 'rejected') throw m.reason;
  if (o.status === 'rejected') throw o.reason;
}
