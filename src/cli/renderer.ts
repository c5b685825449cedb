import { plainReporter, ttyReporter, type Reporter } from '../ui/progress.ts';

export type ProgressMode = 'auto' | 'tty' | 'plain';
export const PROGRESS_MODES: readonly ProgressMode[] = ['auto', 'tty', 'plain'];

/** The one place that picks the renderer: the live display on a terminal, timestamped lines otherwise (CI, containers, pipes). */
export function createReporter(out: NodeJS.WriteStream, mode: ProgressMode, env: NodeJS.ProcessEnv = process.env): Reporter {
  const tty = mode === 'tty' || (mode === 'auto' && out.isTTY && env.CI === undefined && env.TERM !== 'dumb');
  return tty ? ttyReporter(out) : plainReporter(out);
}
