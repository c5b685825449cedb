/**
 * One run at a time per state directory. A run killed outright (kill -9) leaves its pg_dump and
 * pg_restore children behind, still connected: their sessions (found by the dead run's
 * application_name) are ended on both servers before anything is redone.
 */
import { MigrateError, ExitCode } from '../errors.ts';
import { terminateSessions, type Server } from '../pg/connect.ts';
import type { StateStore } from '../state/store.ts';
import type { EventSink } from '../events.ts';

interface RunLock {
  pid: number;
  appName: string;
  startedAt: string;
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Takes the run lock of the state directory; returns a function that releases it. */
export async function takeOverRun(store: StateStore, source: Server, target: Server, emit: EventSink): Promise<() => Promise<void>> {
  const file = store.lockPath;
  const previous = await store.readDoc<RunLock>(file);
  if (previous && previous.pid !== process.pid && processAlive(previous.pid)) {
    throw new MigrateError(
      `another pg-migrate (pid ${String(previous.pid)}, started ${previous.startedAt}) is using the state in ${store.root}; wait for it or stop it first (if that process is not pg-migrate, remove ${file})`,
      ExitCode.stateMismatch,
    );
  }
  await store.writeDoc(file, { pid: process.pid, appName: source.appName, startedAt: new Date().toISOString() } satisfies RunLock);
  if (previous) {
    const ended = (await Promise.all([source, target].map((s) => terminateSessions(s, previous.appName)))).reduce((a, b) => a + b, 0);
    if (ended > 0) {
      emit({ type: 'info', message: `ended ${String(ended)} sessions left behind by an earlier run that was killed (pid ${String(previous.pid)})` });
      await new Promise((r) => setTimeout(r, 1000)); // let its orphaned client programs notice and exit
    }
  }
  return () => store.removeDoc(file).catch(() => undefined);
}
