/**
 * One run at a time: per state directory (a lock file taken with O_EXCL) and per target server (a
 * session advisory lock held for the whole run, so that two runs with different state directories
 * never tune or write one target at once). A holder that is dead, including one just killed and not
 * yet reaped, is recognised without asking anyone to delete files; what it left behind (its sessions
 * on both servers, its client programs, its passfile) is ended or removed by the run that takes over.
 */
import { open, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import type pg from 'pg';
import { MigrateError, ExitCode, errorMessage } from '../errors.ts';
import { connect, terminateSessions, type Server } from '../pg/connect.ts';
import { retryWhileAway } from '../pg/retry.ts';
import type { StateStore } from '../state/store.ts';
import { readJson } from '../state/files.ts';

/** What the lock file says about the run holding it. */
export interface RunLock {
  pid: number;
  /** The process's start time in clock ticks since boot (Linux /proc), to tell a reused pid apart. */
  startTicks: string | null;
  host: string;
  appName: string;
  startedAt: string;
  /** The private passfile directory of that run (removed when a later run takes over). */
  passfileDir?: string;
  /** Process groups of the client programs it started (killed when a later run takes over). */
  children?: { pid: number; startTicks: string | null }[];
}

/** Field 22 of /proc/<pid>/stat (start time), and whether the process is a zombie; undefined when it does not exist. */
async function procStat(pid: number): Promise<{ startTicks: string; zombie: boolean } | undefined> {
  try {
    const stat = await readFile(`/proc/${String(pid)}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return { startTicks: fields[19] ?? '', zombie: fields[0] === 'Z' || fields[0] === 'X' };
  } catch {
    return undefined;
  }
}

/** The start time of a process (null off Linux). */
export async function startTicksOf(pid: number): Promise<string | null> {
  return (await procStat(pid))?.startTicks ?? null;
}

/** Whether the process that wrote a lock (pid and start time on this host) still runs. */
export async function holderAlive(holder: { pid: number; startTicks: string | null; host?: string }): Promise<boolean> {
  if (holder.host !== undefined && holder.host !== os.hostname()) return true; // another machine's process: cannot tell
  const stat = await procStat(holder.pid);
  if (stat !== undefined) return !stat.zombie && (holder.startTicks === null || stat.startTicks === holder.startTicks);
  try {
    process.kill(holder.pid, 0); // no /proc: ask the kernel
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** The state directory's lock, held by this run. */
export class StateLock {
  private readonly file: string;
  private info: RunLock;

  private constructor(file: string, info: RunLock) {
    this.file = file;
    this.info = info;
  }

  /**
   * Takes the lock atomically; a lock left by a dead run is taken over (its previous holder is
   * returned so that what it left can be cleaned up). A live holder is refused (exit 4).
   */
  static async take(store: StateStore, appName: string): Promise<{ lock: StateLock; previous: RunLock | undefined }> {
    await store.ensureRoot();
    const info: RunLock = { pid: process.pid, startTicks: await startTicksOf(process.pid), host: os.hostname(), appName, startedAt: new Date().toISOString() };
    const file = store.lockPath;
    let previous: RunLock | undefined;
    for (let attempt = 0; attempt < 3; attempt++) {
      try {
        const handle = await open(file, 'wx', 0o600);
        await handle.writeFile(JSON.stringify(info));
        await handle.sync();
        await handle.close();
        return { lock: new StateLock(file, info), previous };
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw store.unwritable(err);
      }
      const holder = await readJson<RunLock>(file).catch(() => undefined);
      if (holder && (await holderAlive(holder))) {
        throw new MigrateError(
          `another pg-migrate (pid ${String(holder.pid)} on ${holder.host}, started ${holder.startedAt}) is using the state in ${store.root}; wait for it or stop it first`,
          ExitCode.stateMismatch,
        );
      }
      previous = holder ?? previous;
      await rm(file, { force: true });
    }
    throw new MigrateError(
      `could not take the run lock ${file}: other runs keep taking it; run one pg-migrate at a time per --state-dir`,
      ExitCode.stateMismatch,
    );
  }

  /** Records the run's passfile and client programs in the lock, for the run that would take over after a crash. */
  async update(patch: Partial<Pick<RunLock, 'passfileDir' | 'children'>>): Promise<void> {
    this.info = { ...this.info, ...patch };
    const handle = await open(this.file, 'w', 0o600);
    try {
      await handle.writeFile(JSON.stringify(this.info));
    } finally {
      await handle.close();
    }
  }

  async release(): Promise<void> {
    await rm(this.file, { force: true }).catch(() => undefined);
  }
}

/**
 * Ends what a dead run left: its client programs (process groups still running with the recorded
 * start time), its sessions on both servers (by its application_name), its passfile. Returns a line
 * for the operator, or undefined when nothing was left.
 */
export async function endLeftovers(previous: RunLock, servers: Server[]): Promise<string | undefined> {
  let killed = 0;
  for (const child of previous.children ?? []) {
    if (!(await holderAlive({ ...child, host: previous.host }))) continue;
    try {
      process.kill(-child.pid, 'SIGKILL');
      killed++;
    } catch {
      // gone meanwhile
    }
  }
  const ended = (await Promise.all(servers.map((s) => terminateSessions(s, previous.appName)))).reduce((a, b) => a + b, 0);
  if (previous.passfileDir?.includes('pg-migrate-')) await rm(previous.passfileDir, { recursive: true, force: true });
  if (killed === 0 && ended === 0) return undefined;
  if (ended > 0) await new Promise((r) => setTimeout(r, 1000)); // let its orphaned client programs notice and exit
  return `ended what an earlier run that was killed (pid ${String(previous.pid)}) left behind: ${String(killed)} client programs, ${String(ended)} sessions`;
}

/** The advisory lock key every pg-migrate run takes on its target ('pgmg', 1). */
const TARGET_LOCK = [0x70676d67, 1] as const;

/** The target's advisory lock, held on a session of its own for the whole run. */
export class TargetLock {
  private client: pg.Client;
  private readonly target: Server;
  private released = false;
  private lostHandler: ((why: string) => void) | undefined;
  /** A loss before anyone listened (the session ended while the run was still starting). */
  private lostEarly: string | undefined;

  private constructor(client: pg.Client, target: Server) {
    this.client = client;
    this.target = target;
    this.watch(client);
  }

  /**
   * The advisory lock lives as long as its session: one ended under the run (a restart of the target,
   * pg_terminate_backend) leaves the lock free for another run, which the run must be told of.
   */
  private watch(client: pg.Client): void {
    let first: unknown;
    client.on('error', (err: unknown) => {
      first ??= err;
    });
    client.on('end', () => {
      if (this.released || client !== this.client) return;
      const why = first === undefined ? 'its session ended' : errorMessage(first);
      if (this.lostHandler) this.lostHandler(why);
      else this.lostEarly = why;
    });
  }

  /** Calls `fn` each time the session holding the lock ends without release() (at once for a loss before). */
  onLost(fn: (why: string) => void): void {
    this.lostHandler = fn;
    const early = this.lostEarly;
    this.lostEarly = undefined;
    if (early !== undefined) fn(early);
  }

  /** Takes the lock, or refuses (exit 4) naming the run that holds it. */
  static async take(target: Server): Promise<TargetLock> {
    return new TargetLock(await TargetLock.acquire(target), target);
  }

  private static async acquire(target: Server): Promise<pg.Client> {
    // A name of its own: ending the run's sessions (application_name = the run's) leaves the lock held.
    const client = await connect({ ...target, appName: `${target.appName}/lock` }, target.endpoint.database);
    try {
      const got = (await client.query<{ ok: boolean }>('select pg_try_advisory_lock($1, $2) as ok', [...TARGET_LOCK])).rows[0]?.ok === true;
      if (got) return client;
      const holder = (
        await client.query<{ pid: number; app: string | null; addr: string | null; since: string | null }>(
          `select a.pid, a.application_name as app, a.client_addr::text as addr, a.backend_start::text as since
             from pg_locks l join pg_stat_activity a on a.pid = l.pid
            where l.locktype = 'advisory' and l.classid = $1 and l.objid = $2 and l.granted`,
          [...TARGET_LOCK],
        )
      ).rows[0];
      const who = holder
        ? ` (${holder.app ?? 'pg-migrate'}, server pid ${String(holder.pid)}${holder.addr ? ` from ${holder.addr}` : ''}, connected since ${holder.since ?? '?'})`
        : '';
      throw new MigrateError(
        `another pg-migrate run${who} is working on the target ${target.endpoint.host}:${String(target.endpoint.port)}; two runs must never tune or write one target at once: wait for it or stop it`,
        ExitCode.stateMismatch,
      );
    } catch (err) {
      await client.end().catch(() => undefined);
      throw err;
    }
  }

  /**
   * Takes the lock again after its session ended, waiting up to `seconds` for a target that is away
   * (restarting); refuses (exit 4) when another run took it meanwhile. Nothing once released.
   */
  async retake(seconds: number): Promise<void> {
    if (this.isReleased()) return;
    let client: pg.Client;
    try {
      client = await retryWhileAway(() => TargetLock.acquire(this.target), { seconds, stop: () => this.isReleased() });
    } catch (err) {
      if (this.isReleased()) return; // the run ended meanwhile: nothing to hold any more
      throw err;
    }
    // release() may have come while the session was being opened.
    if (this.isReleased()) {
      await client.end().catch(() => undefined);
      return;
    }
    this.client = client;
    this.watch(client);
  }

  private isReleased(): boolean {
    return this.released;
  }

  /** The session that holds the lock (queries on the target's --to-db may use it). */
  get session(): pg.Client {
    return this.client;
  }

  async release(): Promise<void> {
    this.released = true;
    await this.client.end().catch(() => undefined);
  }
}
