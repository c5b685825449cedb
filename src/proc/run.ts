import { existsSync } from 'node:fs';
import { mkdir, rm } from 'node:fs/promises';
import path from 'node:path';
import { execa, type ResultPromise } from 'execa';
import { AbortError, MigrateError, isAborted } from '../errors.ts';

/**
 * The client programs one run has started (one instance per run, held by its context). Every child
 * runs in its own process group, so cancelling reaches pg_dump/pg_restore -j workers too.
 */
export class ChildRegistry {
  private readonly running = new Set<ResultPromise>();
  /** Called whenever the set of running children changes (the run records them in its lock). */
  onChange: ((pids: number[]) => void) | undefined;

  add(child: ResultPromise): void {
    this.running.add(child);
    this.onChange?.(this.pids());
  }

  delete(child: ResultPromise): void {
    this.running.delete(child);
    this.onChange?.(this.pids());
  }

  /** Waits until every child has exited (after a cancellation, before anything is cleaned up). */
  async settled(): Promise<void> {
    while (this.running.size > 0) await Promise.allSettled([...this.running]);
  }

  /** Process groups of children still running. */
  pids(): number[] {
    return [...this.running].map((c) => c.pid).filter((p): p is number => typeof p === 'number');
  }

  /** Sends SIGKILL to every child's whole process group at once (used when the operator insists). */
  killAllNow(): void {
    for (const pid of this.pids()) killGroup(pid, 'SIGKILL');
  }
}

export interface RunOptions {
  env: NodeJS.ProcessEnv;
  /** Where the child is registered (so that a second Ctrl-C can kill it). */
  children: ChildRegistry;
  signal?: AbortSignal;
  /** Called with each stderr line as it arrives. */
  onStderrLine?: (line: string) => void;
  /** Keep stdout and return it (otherwise it is discarded). */
  captureStdout?: boolean;
  /** Working directory of the program. */
  cwd?: string;
}

export interface RunResult {
  stdout: string;
  /** The last stderr lines (at most 200). */
  stderrTail: string[];
  /** stderr lines that report an error (`error:`, `ERROR:`, `FATAL:`), all of them up to 1,000. */
  errorLines: string[];
  exitCode: number;
  /** The signal that killed the program, if one did. */
  signal?: string;
}

function killGroup(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pid, signal);
  } catch {
    // already gone
  }
}

const ERROR_LINE = /(^|\s)(error|ERROR|FATAL|PANIC):/;
/** Lines that belong to the error before them: libpq's detail/hint lines and their tab-indented continuations. */
const ERROR_CONTINUATION = /^(\S+:\s+)?(detail|DETAIL|hint|HINT|CONTEXT|LINE \d+):|^\t|^ {2,}\S/;

/**
 * util-linux's setpriv, when the machine has it (Linux): a child started through it gets SIGKILL the
 * moment this process dies, even by kill -9, so no client program of a killed run goes on creating
 * databases or loading rows that nobody records. Elsewhere children are ended by the next run.
 */
const SETPRIV = ['/usr/bin/setpriv', '/bin/setpriv'].find((p) => existsSync(p));

/** The program and arguments to spawn: through setpriv --pdeathsig KILL where it exists. */
function withParentDeathSignal(file: string, args: string[]): [string, string[]] {
  return SETPRIV === undefined ? [file, args] : [SETPRIV, ['--pdeathsig', 'KILL', '--', file, ...args]];
}
/** How long a cancelled child may take to exit after SIGTERM before its group gets SIGKILL. */
const KILL_GRACE_MS = 5000;

/**
 * Runs a PostgreSQL client program in its own process group. Cancelling (signal) sends SIGTERM to the
 * whole group (pg_dump/pg_restore -j workers included), SIGKILL after 5 s, and waits for the exit.
 * A non-zero exit becomes a ToolError carrying the error lines and the tail of stderr.
 */
export async function runTool(file: string, args: string[], options: RunOptions): Promise<RunResult> {
  const { signal } = options;
  if (signal?.aborted) throw new AbortError();
  const stderrTail: string[] = [];
  const errorLines: string[] = [];
  let inError = false;
  const [program, argv] = withParentDeathSignal(file, args);
  const child = execa(program, argv, {
    env: options.env,
    extendEnv: false,
    cwd: options.cwd,
    detached: true,
    stdin: 'ignore',
    stdout: options.captureStdout ? 'pipe' : 'ignore',
    maxBuffer: { stdout: 512 * 1024 * 1024 },
    stderr: [
      function* (line: unknown) {
        const text = String(line);
        stderrTail.push(text);
        if (stderrTail.length > 200) stderrTail.shift();
        if (ERROR_LINE.test(text)) inError = true;
        else if (!ERROR_CONTINUATION.test(text)) inError = false;
        if (inError && errorLines.length < 1000) errorLines.push(text);
        options.onStderrLine?.(text);
        yield* [];
      },
    ],
    reject: false,
  });
  options.children.add(child);
  let killTimer: NodeJS.Timeout | undefined;
  const onAbort = (): void => {
    if (child.pid === undefined) return;
    const pid = child.pid;
    killGroup(pid, 'SIGTERM');
    killTimer = setTimeout(() => {
      killGroup(pid, 'SIGKILL');
    }, KILL_GRACE_MS);
    killTimer.unref();
  };
  signal?.addEventListener('abort', onAbort, { once: true });
  try {
    const result = await child;
    if (child.pid !== undefined) killGroup(child.pid, 'SIGKILL'); // workers orphaned by a crashed leader
    if (signal?.aborted) throw new AbortError();
    const exitCode = result.exitCode ?? -1;
    const out: RunResult = {
      stdout: typeof result.stdout === 'string' ? result.stdout : '',
      stderrTail,
      errorLines,
      exitCode,
      ...(result.signal ? { signal: result.signal } : {}),
    };
    if (result.failed) {
      const shown = (errorLines.length > 0 ? errorLines : stderrTail).slice(0, 30);
      const more = errorLines.length > 30 ? `\n    ... and ${String(errorLines.length - 30)} more error lines` : '';
      const why = result.signal
        ? `was killed by ${result.signal}`
        : exitCode === -1
          ? `could not run (${result.shortMessage})`
          : `exited with status ${String(exitCode)}`;
      throw new ToolError(`${shortName(file)} ${why}${shown.length ? `:\n    ${shown.join('\n    ')}${more}` : ''}`, out);
    }
    return out;
  } finally {
    signal?.removeEventListener('abort', onAbort);
    if (killTimer) clearTimeout(killTimer);
    options.children.delete(child);
  }
}

/**
 * The failure to report of several that ended together: one on its own account first (not stopped
 * because of another, not a writer killed by SIGPIPE, which only says that its reader went away),
 * then any but a stop, then the first.
 */
export function mainFailure(errors: Error[]): Error | undefined {
  const stopped = (e: Error): boolean => e instanceof AbortError || e.name === 'AbortError';
  const brokenPipe = (e: Error): boolean => e instanceof ToolError && e.result.signal === 'SIGPIPE';
  return errors.find((e) => !stopped(e) && !brokenPipe(e)) ?? errors.find((e) => !stopped(e)) ?? errors[0];
}

export class ToolError extends MigrateError {
  readonly result: RunResult;
  constructor(message: string, result: RunResult) {
    super(message);
    this.name = 'ToolError';
    this.result = result;
  }
}

function shortName(file: string): string {
  return file.split('/').pop() ?? file;
}

export interface PipeSide {
  file: string;
  args: string[];
  /** Working directory (a program that names the FIFO relative to it runs in the FIFO's directory). */
  cwd?: string;
  captureStdout?: boolean;
}

/**
 * Runs a writer and a reader joined by a FIFO (`fifo`, created afresh, removed afterwards): the data
 * goes from one program to the other through the kernel and never through this process. A reader or
 * a writer alone would wait forever on the FIFO, so a failure on one side stops the other; the error
 * reported is the one of the side that failed on its own account.
 */
export async function runPiped(
  fifo: string,
  writer: PipeSide,
  reader: PipeSide,
  options: { env: NodeJS.ProcessEnv; children: ChildRegistry; signal: AbortSignal },
): Promise<[RunResult, RunResult]> {
  const { signal } = options;
  if (signal.aborted) throw new AbortError();
  await mkdir(path.dirname(fifo), { recursive: true });
  await rm(fifo, { force: true });
  await execa('mkfifo', ['-m', '600', fifo]);
  const both = new AbortController();
  const onAbort = (): void => {
    both.abort();
  };
  signal.addEventListener('abort', onAbort, { once: true });
  const run = async (side: PipeSide): Promise<RunResult> => {
    try {
      return await runTool(side.file, side.args, {
        env: options.env,
        children: options.children,
        signal: both.signal,
        cwd: side.cwd,
        captureStdout: side.captureStdout,
      });
    } catch (err) {
      // A writer killed by SIGPIPE means the reader closed the FIFO and is ending on its own: stopping
      // it now would lose its words (why it ended) for an AbortError.
      if (!(err instanceof ToolError && err.result.signal === 'SIGPIPE')) both.abort();
      throw err;
    }
  };
  try {
    const [w, r] = await Promise.allSettled([run(writer), run(reader)]);
    if (isAborted(signal)) throw new AbortError();
    const failed = [w, r].filter((s): s is PromiseRejectedResult => s.status === 'rejected').map((s) => s.reason as Error);
    const own = mainFailure(failed);
    if (own) throw own;
    if (w.status !== 'fulfilled' || r.status !== 'fulfilled') throw new MigrateError('a piped program ended without a result');
    return [w.value, r.value];
  } finally {
    signal.removeEventListener('abort', onAbort);
    await rm(fifo, { force: true });
  }
}
