/**
 * --log-file FILE: every event with an ISO timestamp and every stderr line of the client programs,
 * whatever the display, appended to FILE (created 0600). Every line goes through redact() first.
 */
import { createWriteStream } from 'node:fs';
import { chmod } from 'node:fs/promises';
import { once } from 'node:events';
import type { ChildRegistry } from '../proc/run.ts';
import { plainReporter, type Reporter } from '../ui/progress.ts';
import { redact } from '../ui/redact.ts';

/** Opens the log (append) and ties it to the children's stderr; rejects when the file cannot be opened. */
export async function openLogFile(file: string, children: ChildRegistry, secrets: () => (string | undefined)[]): Promise<Reporter> {
  const stream = createWriteStream(file, { flags: 'a', mode: 0o600 });
  await once(stream, 'open');
  // An existing log keeps the mode it had: make it private too (it holds server messages and names).
  await chmod(file, 0o600).catch(() => undefined);
  // Read at each line: a password asked at the prompt comes after the log is opened.
  const sink = {
    write: (chunk: string): boolean =>
      stream.write(
        redact(
          chunk,
          secrets().filter((s): s is string => s !== undefined),
        ),
      ),
  };
  const events = plainReporter(sink);
  const previous = children.onStderrLine;
  children.onStderrLine = (program, pid, line) => {
    previous?.(program, pid, line);
    sink.write(`${new Date().toISOString()} ${program}[${String(pid ?? '?')}] stderr: ${line}\n`);
  };
  stream.on('error', () => undefined); // a log that fails later must not fail the run
  return {
    onEvent: (e) => {
      events.onEvent(e);
    },
    async close() {
      children.onStderrLine = previous;
      await events.close();
      await new Promise<void>((resolve) => stream.end(resolve));
    },
  };
}
