/**
 * Runs one contender's command under /usr/bin/time and measures it.
 *
 * - wall: performance.now() around the child.
 * - client CPU: /usr/bin/time's %U + %S, i.e. getrusage(RUSAGE_CHILDREN) of `time`: the user+sys
 *   seconds of every descendant that was waited for (node, bash, pg_dump and its -j workers,
 *   pg_restore, psql, pgcopydb ...).
 * - largest client process: /usr/bin/time's %M (max RSS of the largest single descendant).
 * - tool peak RSS: VmHWM of the direct child of `time` (node for pg-migrate, bash for the shell
 *   peers, so for those the figure that matters is the largest client process), polled every
 *   100 ms from /proc/<pid>/status; the last value read is kept (VmHWM never decreases).
 */
import { spawn } from 'node:child_process';
import { openSync, closeSync, readFileSync } from 'node:fs';
import * as fs from 'node:fs/promises';
import { allStats } from './servers.ts';

export interface Measured {
  exitCode: number;
  wallSeconds: number;
  clientCpuSeconds: number;
  /** max RSS of the largest descendant (KiB → MiB) */
  largestClientRssMB: number;
  /** VmHWM of the direct child of /usr/bin/time */
  toolPeakRssMB: number;
}

export interface RunSpec {
  argv: string[];
  env: Record<string, string>;
  logFile: string;
  cwd: string;
}

function vmHwmKB(pid: number): number {
  try {
    const m = /VmHWM:\s+(\d+)\s+kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : 0;
  } catch {
    return 0;
  }
}

export async function runMeasured(spec: RunSpec, onStart?: () => void): Promise<Measured> {
  const timeFile = `${spec.logFile}.time`;
  const fd = openSync(spec.logFile, 'a');
  const t0 = performance.now();
  onStart?.();
  const child = spawn('/usr/bin/time', ['-o', timeFile, '-f', '%e %U %S %M', ...spec.argv], {
    cwd: spec.cwd,
    env: spec.env,
    stdio: ['ignore', fd, fd],
    // Own process group: pgcopydb kills its whole process group when it fails, which would take
    // the benchmark (and its servers' safety net) with it.
    detached: true,
  });
  let toolPid = 0;
  let hwm = 0;
  const poll = (): void => {
    if (!child.pid) return;
    if (toolPid === 0) toolPid = allStats().find((s) => s.ppid === child.pid)?.pid ?? 0;
    if (toolPid !== 0) hwm = Math.max(hwm, vmHwmKB(toolPid));
  };
  const timer = setInterval(poll, 100);
  const exitCode = await new Promise<number>((resolve, reject) => {
    child.on('error', reject);
    child.on('exit', (code, signal) => {
      resolve(code ?? (signal ? 128 : 1));
    });
  });
  const wallSeconds = (performance.now() - t0) / 1000;
  clearInterval(timer);
  closeSync(fd);
  const text = (await fs.readFile(timeFile, 'utf8')).trim().split('\n').pop() ?? '';
  const [, user, sys, maxRss] = text.split(/\s+/).map(Number);
  return {
    exitCode,
    wallSeconds,
    clientCpuSeconds: (user ?? 0) + (sys ?? 0),
    largestClientRssMB: (maxRss ?? 0) / 1024,
    toolPeakRssMB: hwm / 1024,
  };
}
