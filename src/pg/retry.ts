/**
 * Sessions that must outlive a server's brief absence (a restart, crash recovery): which failures say
 * the server is away rather than refusing us, and withClient retried on those.
 */
import type pg from 'pg';
import { withClient, type Server } from './connect.ts';
import { serverAway } from './connect-errors.ts';

/**
 * Runs `fn` again every second while it fails because the server is away, for up to `seconds`
 * (`onWait` told once); any other failure, the deadline, or `stop()` turning true ends the waiting with
 * the last failure.
 */
export async function retryWhileAway<T>(fn: () => Promise<T>, opts: { seconds: number; onWait?: (why: string) => void; stop?: () => boolean }): Promise<T> {
  const deadline = Date.now() + opts.seconds * 1000;
  let told = false;
  for (;;) {
    try {
      return await fn();
    } catch (err) {
      if (!serverAway(err) || Date.now() >= deadline || opts.stop?.() === true) throw err;
      if (!told) opts.onWait?.((err as Error).message);
      told = true;
      await new Promise((r) => setTimeout(r, 1000));
    }
  }
}

/**
 * withClient for what must happen even when the server is briefly away (restarting, recovering):
 * connection failures that say so are retried every second for up to `seconds`, `onWait` told once.
 */
export function withClientRetrying<T>(
  server: Server,
  database: string,
  fn: (c: pg.Client) => Promise<T>,
  opts: { seconds: number; onWait?: (why: string) => void },
): Promise<T> {
  return retryWhileAway(() => withClient(server, database, fn), opts);
}
