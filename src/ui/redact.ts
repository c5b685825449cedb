/** Removes passwords from a line before it is written anywhere lasting (the --log-file). */

const MASK = '********';

/**
 * Masks the given secrets (of 4 characters or more) wherever they appear, a conninfo's `password=...` value and the password of
 * a URI (`postgresql://user:secret@host`).
 */
export function redact(line: string, secrets: readonly string[] = []): string {
  let out = line;
  // A secret of fewer than 4 characters would mask half the line; the patterns below still catch it in a conninfo or a URI.
  for (const s of secrets) if (s.length >= 4) out = out.split(s).join(MASK);
  return out.replace(/(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s'&]+)/gi, `$1${MASK}`).replace(/(\bpostgres(?:ql)?:\/\/[^:@/\s]*:)[^@\s]*@/gi, `$1${MASK}@`);
}
