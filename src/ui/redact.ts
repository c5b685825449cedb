/** Removes passwords from a line before it is written anywhere lasting (the --log-file). */
import { redactSecrets } from '../pipeline/globals-script.ts';

const MASK = '***';

/**
 * Masks the given secrets (of 4 characters or more) wherever they appear, then what redactSecrets
 * masks (PASSWORD '…', md5 and SCRAM hashes, `password=…` in a connection string) and the password of
 * a URI (`postgresql://user:secret@host`).
 */
export function redact(line: string, secrets: readonly string[] = []): string {
  let out = line;
  // A secret of fewer than 4 characters would mask half the line; the patterns below still catch it in a conninfo or a URI.
  for (const s of secrets) if (s.length >= 4) out = out.split(s).join(MASK);
  return redactSecrets(out).replace(/(\bpostgres(?:ql)?:\/\/[^:@/\s]*:)[^@\s]*@/gi, `$1${MASK}@`);
}
