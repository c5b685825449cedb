/**
 * The live display on a terminal (listr2 on a fake terminal stream): the lasting lines above the block,
 * the final block left on screen, the lines within the width, colour only when asked.
 */
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { describe, it } from 'node:test';
import { columns } from '../../src/ui/format.ts';
import { ttyReporter } from '../../src/ui/progress.ts';

const ESC = String.fromCharCode(27);
/** An SGR sequence (colour, bold): what --no-color must never write. */
const SGR = new RegExp(`${ESC}\\[[0-9;]*m`);
const SGR_ALL = new RegExp(SGR.source, 'g');

/** A terminal of `columns` × `rows` that keeps what is written to it. */
function terminal(columns: number, rows: number): { stream: NodeJS.WriteStream; text: () => string } {
  let written = '';
  const w = new Writable({
    write(chunk: Buffer, _enc, done) {
      written += chunk.toString();
      done();
    },
  });
  Object.assign(w, { isTTY: true, columns, rows });
  return { stream: w as unknown as NodeJS.WriteStream, text: () => written };
}

/**
 * What the terminal finally shows (its scrollback too), the cursor movements played: a small emulator
 * of what log-update writes (cursor up/down/left, erase line, erase to its end, modes ignored).
 */
function screen(s: string): string {
  const lines: string[] = [''];
  let row = 0;
  let col = 0;
  const put = (text: string): void => {
    const l = (lines[row] ?? '').padEnd(col);
    lines[row] = l.slice(0, col) + text + l.slice(col + text.length);
    col += text.length;
  };
  for (const m of s.replace(SGR_ALL, '').matchAll(new RegExp(`${ESC}\\[([0-9;?]*)([A-Za-z])|\n|\r|[^${ESC}\n\r]+`, 'g'))) {
    const [all, arg, cmd] = m;
    const n = arg ? Number(arg) : 1;
    if (all === '\n') {
      row++;
      col = 0;
      lines[row] ??= '';
    } else if (all === '\r' || cmd === 'G') col = 0;
    else if (cmd === 'A') row = Math.max(0, row - n);
    else if (cmd === 'B') row += n;
    else if (cmd === 'K') lines[row] = arg === '2' ? '' : (lines[row] ?? '').slice(0, col);
    else if (cmd === 'J') {
      lines[row] = (lines[row] ?? '').slice(0, col);
      lines.length = row + 1;
    } else if (cmd === undefined) put(all);
    lines[row] ??= '';
  }
  return lines.map((l) => l.trimEnd()).join('\n');
}

async function run(color: boolean, columns = 80, rows = 24): Promise<string> {
  const term = terminal(columns, rows);
  const r = ttyReporter(term.stream, color);
  const names = Array.from({ length: 40 }, (_, i) => `db${String(i).padStart(2, '0')}`);
  r.onEvent({ type: 'stage', stage: 'preflight', status: 'start' });
  r.onEvent({
    type: 'plan',
    databases: names.map((name) => ({ name, sizeBytes: 1024 ** 3, deferred: 0 })),
    notMigrated: [],
    parallelism: { dumpParallel: 6, restoreParallel: 6, dumpJobs: 2, restoreJobs: 2, verifyConcurrency: 4 },
    compression: 'zstd:5',
    toolsVersion: '17.2',
  });
  await new Promise((resolve) => setTimeout(resolve, 150));
  for (const db of names.slice(0, 35)) r.onEvent({ type: 'phase', db, phase: 'restoring' });
  r.onEvent({ type: 'phase', db: 'db00', phase: 'failed', detail: 'restoring: pg_restore exited with status 1' });
  r.onEvent({ type: 'warning', db: 'db01', message: 'a table without a primary key' });
  await new Promise((resolve) => setTimeout(resolve, 150));
  r.onEvent({ type: 'stage', stage: 'globals', status: 'done' });
  await r.close();
  return term.text();
}

describe('the live display (listr2)', () => {
  it('prints the lasting lines above the block and leaves the final block, within the width and height', async () => {
    const out = await run(false, 100, 30);
    const shown = screen(out);
    assert.match(shown, /preflight: start\n/);
    assert.match(shown, /plan: 40 databases, 40\.0 GB/);
    assert.match(shown, /warning \[db01\]: a table without a primary key\n/);
    // The final block, printed last: the totals, the failure and the databases in flight, then the queue in one line.
    const final = shown.slice(shown.lastIndexOf('globals: done'));
    const lines = final.split('\n').filter((l) => l.trim() !== '');
    assert.match(lines[1] ?? '', /0\/40 done, 34 in flight, 5 queued, 1 failed/, final);
    assert.match(final, /✖ db00: restoring: pg_restore exited with status 1/);
    assert.match(final, /… and \d+ more \(failed or in flight\)/);
    assert.ok(lines.length - 1 <= 30 - 1, `the block is taller than the terminal:\n${final}`);
    for (const l of lines) assert.ok(columns(l) < 100, `wider than the terminal: ${l}`);
    assert.ok(out.indexOf('preflight: start') < out.indexOf('0/40 done'), 'lasting lines before the block');
  });

  it('no colour at all with --no-color; colour (bold totals, red failures, yellow warnings) by default', async () => {
    const plain = await run(false);
    assert.ok(!SGR.test(plain), `an SGR sequence with --no-color: ${JSON.stringify(SGR.exec(plain))}`);
    const coloured = await run(true);
    assert.ok(coloured.includes(`${ESC}[1m`), 'bold totals');
    assert.ok(coloured.includes(`${ESC}[31m✖ db00`), 'a red failure');
    assert.ok(coloured.includes(`${ESC}[33mwarning [db01]`), 'a yellow warning');
  });

  it('close() before the plan leaves nothing running', async () => {
    const term = terminal(80, 24);
    const r = ttyReporter(term.stream, false);
    r.onEvent({ type: 'stage', stage: 'preflight', status: 'failed', message: 'cannot connect' });
    await r.close();
    assert.equal(term.text(), 'preflight: failed — cannot connect\n');
  });
});
