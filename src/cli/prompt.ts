/** The password prompt of a terminal, as psql's: nothing echoed, Enter ends it, Ctrl-C interrupts. */
import { setPasswordPrompt, type PasswordPrompt } from '../pg/connect.ts';
import { UsageError } from '../errors.ts';

/** Reads a line from the terminal without echoing it; undefined when stdin is not a terminal. */
export function terminalPrompt(input: NodeJS.ReadStream = process.stdin, output: NodeJS.WriteStream = process.stderr): PasswordPrompt | undefined {
  if (!input.isTTY || !output.isTTY) return undefined;
  return (question) =>
    new Promise((resolve) => {
      output.write(question);
      let value = '';
      const finish = (answer: string | undefined): void => {
        input.off('data', onData);
        input.setRawMode(false);
        input.pause();
        output.write('\n');
        resolve(answer);
      };
      const onData = (chunk: Buffer | string): void => {
        for (const ch of chunk.toString()) {
          if (ch === '\r' || ch === '\n' || ch === '\u0004') {
            finish(value);
            return;
          }
          if (ch === '\u0003') {
            finish(undefined);
            process.kill(process.pid, 'SIGINT');
            return;
          }
          value = ch === '\u007f' || ch === '\b' ? value.slice(0, -1) : value + ch;
        }
      };
      input.setRawMode(true);
      input.resume();
      input.on('data', onData);
    });
}

/** Installs the prompt for this process: asked when a server wants a password none gave, or up front with --password (-W). */
export function installPasswordPrompt(always: boolean): void {
  const ask = terminalPrompt();
  if (always && ask === undefined)
    throw new UsageError([
      '--password (-W) asks on a terminal, and this one has none: give the passwords in PG_MIGRATE_FROM_PASS/PG_MIGRATE_TO_PASS, PGPASSWORD or ~/.pgpass',
    ]);
  setPasswordPrompt(ask, always);
}
