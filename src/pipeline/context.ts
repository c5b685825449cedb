import type PQueue from 'p-queue';
import type { MigrateOptions } from '../options.ts';
import type { DatabasePlan, RunPlan } from '../plan.ts';
import type { ControlConnections, Server } from '../pg/connect.ts';
import type { DatabaseState, StateStore } from '../state/store.ts';
import type { ChildRegistry } from '../proc/run.ts';
import type { Tools } from '../proc/tools.ts';
import type { DbResult, EventSink } from '../events.ts';
import type { WithSnapshot } from '../pg/snapshot.ts';
import type { RelationName } from '../pg/sql.ts';
import type { PairIdentity } from '../state/store.ts';

/** Everything a stage needs, built once per run: no stage keeps state of its own between runs. */
export interface Context {
  options: MigrateOptions;
  source: Server;
  target: Server;
  sourceMajor: number;
  targetMajor: number;
  /** Whether the target user is a superuser (otherwise: no --disable-triggers, no session_replication_role). */
  targetSuperuser: boolean;
  /** Both servers' identities (system identifiers). */
  pair: PairIdentity;
  store: StateStore;
  tools: Tools;
  plan: RunPlan;
  /** Environment for client programs (passfile, application_name). */
  childEnv: NodeJS.ProcessEnv;
  /** The client programs this run started. */
  children: ChildRegistry;
  /** One connection per server to its maintenance database, for cheap checks. */
  control: ControlConnections;
  /** One cap on count queries over both servers. */
  verifyQueue: PQueue;
  signal: AbortSignal;
  emit: EventSink;
}

/** One database on its way through the pipeline: its plan, its state, and the result being built. */
export interface DatabaseJob {
  plan: DatabasePlan;
  state: DatabaseState;
  result: DbResult;
  /** Where the regular phase reads the source (online: the slot's snapshot); an exported snapshot otherwise. */
  snapshot?: WithSnapshot;
  /** Tables whose data the regular phase leaves out besides the deferred ones (online: those copied at cutover). */
  notCopied?: RelationName[];
}

/** pg_restore's --disable-triggers where the target user may use it (a superuser); without, the data goes in before triggers and foreign keys exist. */
export const disableTriggers = (ctx: Pick<Context, 'targetSuperuser'>): string[] => (ctx.targetSuperuser ? ['--disable-triggers'] : []);

/** What every restoring pg_restore gets: --disable-triggers where allowed, --no-owner when asked for. */
export const restoreFlags = (ctx: Pick<Context, 'targetSuperuser' | 'options'>): string[] => [
  ...disableTriggers(ctx),
  ...(ctx.options.owner ? [] : ['--no-owner']),
];

/** The name of a job's database. */
export const dbName = (job: DatabaseJob): string => job.plan.name;

/** Seconds since a performance.now() reading, rounded to hundredths. */
export const secondsSince = (startMs: number): number => Math.round((performance.now() - startMs) / 10) / 100;

/**
 * Runs two tasks at once and waits for both to end (neither is left running unobserved); the main
 * task's failure is the one reported.
 */
export async function together(main: () => Promise<unknown>, side: () => Promise<unknown>): Promise<void> {
  const [m, o] = await Promise.allSettled([main(), side()]);
  if (m.status === 'rejected') throw m.reason;
  if (o.status === 'rejected') throw o.reason;
}
