/** Exit codes of the pg-migrate command. Kept in one place; the README lists them. */
export const ExitCode = {
  ok: 0,
  /** The run finished, but at least one database (or the globals) did not migrate and verify. */
  failed: 1,
  /** The command line or environment is invalid; nothing was done. */
  usage: 2,
  /** A preflight check failed; nothing on either server was changed. */
  preflight: 3,
  /** The state directory belongs to another source/target pair. */
  stateMismatch: 4,
  /** An unexpected error stopped the run (the tuning was reverted where possible). */
  internal: 5,
  /** Interrupted by SIGINT/SIGTERM. */
  interrupted: 130,
} as const;
export type ExitCodeValue = (typeof ExitCode)[keyof typeof ExitCode];

/** An error meant for the operator: its message names the problem and the fix. */
export class MigrateError extends Error {
  readonly exitCode: ExitCodeValue;
  constructor(message: string, exitCode: ExitCodeValue = ExitCode.internal) {
    super(message);
    this.name = 'MigrateError';
    this.exitCode = exitCode;
  }
}

export class UsageError extends MigrateError {
  constructor(problems: string[]) {
    super(problems.length === 1 && problems[0] !== undefined ? problems[0] : `invalid options:\n${problems.map((p) => `  - ${p}`).join('\n')}`, ExitCode.usage);
    this.name = 'UsageError';
  }
}

export class PreflightError extends MigrateError {
  readonly problems: string[];
  constructor(problems: string[]) {
    super(
      problems.length === 1
        ? `preflight failed, nothing was changed: ${problems[0]}`
        : `preflight failed, nothing was changed:\n${problems.map((p) => `  - ${p}`).join('\n')}`,
      ExitCode.preflight,
    );
    this.name = 'PreflightError';
    this.problems = problems;
  }
}

/**
 * A failure before anything was changed (a server out of reach, a login refused) as preflight's kind
 * of problem (exit 3); a lock that another run holds (exit 4) stays as it is.
 */
export function beforeAnyChange(err: unknown): never {
  throw err instanceof MigrateError && err.exitCode === ExitCode.stateMismatch ? err : new PreflightError([errorMessage(err)]);
}

export class AbortError extends MigrateError {
  constructor(message = 'interrupted') {
    super(message, ExitCode.interrupted);
    this.name = 'AbortError';
  }
}

/** Whether a signal has fired (a call, so that type narrowing of an earlier check does not stick across awaits). */
export const isAborted = (signal: AbortSignal | undefined): boolean => signal?.aborted === true;

export function errorMessage(err: unknown): string {
  if (err instanceof Error) return err.message;
  return String(err);
}
