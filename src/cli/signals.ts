import { ExitCode } from '../errors.ts';
import type { ChildRegistry } from '../proc/run.ts';

/** SIGHUP too: what a dropped ssh session sends. */
const SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;

/** What the command says it does on the first signal, and after a second one. */
export interface SignalWords {
  cleanly: string;
  now: string;
}

/** The migration's words (the default). */
export const MIGRATE_SIGNAL_WORDS: SignalWords = {
  cleanly: 'stopping children, cancelling queries, reverting the target tuning',
  now: 'the next run reverts the tuning and resumes',
};

/**
 * Turns SIGINT, SIGTERM and SIGHUP into an AbortSignal for the duration of `fn`: the first stops the run
 * cleanly, a second kills the children at once and exits.
 */
export async function withSignals<T>(children: ChildRegistry, fn: (signal: AbortSignal) => Promise<T>, words: SignalWords = MIGRATE_SIGNAL_WORDS): Promise<T> {
  const controller = new AbortController();
  let interrupts = 0;
  const onSignal = (sig: NodeJS.Signals): void => {
    interrupts++;
    if (interrupts === 1) {
      process.stderr.write(`\npg-migrate: ${sig}: stopping cleanly (${words.cleanly}); press Ctrl-C again to stop at once\n`);
      controller.abort();
    } else {
      process.stderr.write(`\npg-migrate: stopping now; ${words.now}\n`);
      children.killAllNow();
      process.exit(ExitCode.interrupted);
    }
  };
  // A terminal that went away (a dropped ssh session: SIGHUP) makes writes to it fail with EIO or
  // EPIPE; such an error must not end the process before the run has stopped its children and put
  // the target back. Output is lost then, never the clean-up.
  const ignore = (): void => undefined;
  process.stdout.on('error', ignore);
  process.stderr.on('error', ignore);
  for (const s of SIGNALS) process.on(s, onSignal);
  try {
    return await fn(controller.signal);
  } finally {
    for (const s of SIGNALS) process.off(s, onSignal);
  }
}
