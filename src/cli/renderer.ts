import { plainReporter, ttyReporter, type Reporter } from '../ui/progress.ts';

export type ProgressMode = 'auto' | 'tty' | 'plain';
export const PROGRESS_MODES: readonly ProgressMode[] = ['auto', 'tty', 'plain'];

/** Colour only on a terminal, and never with --no-color or NO_COLOR set to anything but the empty string (no-color.org). */
export function useColor(out: { isTTY?: boolean }, flag: boolean | undefined, env: NodeJS.ProcessEnv = process.env): boolean {
  if (flag === false) return false;
  if (env.NO_COLOR !== undefined && env.NO_COLOR !== '') return false;
  return out.isTTY === true && env.TERM !== 'dumb';
}

/**
 * The one place that picks the renderer: the live display on a terminal, timestamped lines otherwise
 * (CI, containers, pipes). Progress goes to stderr, so stdout holds only the summary or the JSON.
 */
export function createReporter(out: NodeJS.WriteStream, mode: ProgressMode, color: boolean, env: NodeJS.ProcessEnv = process.env): Reporter {
  const tty = mode === 'tty' || (mode === 'auto' && out.isTTY && env.CI === undefined && env.TERM !== 'dumb');
  return tty ? ttyReporter(out, color) : plainReporter(out);
}

/** Several reporters as one (the display and the --log-file). */
export function teeReporter(...reporters: Reporter[]): Reporter {
  return {
    onEvent(e) {
      for (const r of reporters) r.onEvent(e);
    },
    async close() {
      await Promise.all(reporters.map((r) => r.close()));
    },
  };
}
