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
