import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { DbResult, RunSummary } from '../../src/events.ts';
import { renderSummary, summaryRows } from '../../src/ui/summary.ts';
import { buildReport } from '../../src/ui/report.ts';

function fleet(n: number, failed: number[]): RunSummary {
  const databases: DbResult[] = Array.from({ length: n }, (_, i) => ({
    name: `db${String(i).padStart(2, '0')}`,
    sizeBytes: 8 * 1024 ** 2,
    status: failed.includes(i) ? 'failed' : 'verified',
    ...(failed.includes(i) ? { reason: 'restoring: pg_restore exited with status 1' } : {}),
    rows: 100,
    warnings: [],
  }));
  return {
    databases,
    globals: { status: 'done', errors: [], skippedExisting: 0 },
    tuning: { applied: false, reverted: false },
    regularElapsedSeconds: 10,
    elapsedSeconds: 10,
    exitCode: failed.length > 0 ? 1 : 0,
  };
}

describe('summary', () => {
  it('is compact (no separator between rows) with failures first', () => {
    const out = renderSummary(fleet(5, [3]), false);
    const lines = out.split('\n');
    const rows = lines.filter((l) => /│ db\d\d/.test(l));
    assert.equal(rows.length, 5);
    assert.match(rows[0] ?? '', /db03 .*failed/);
    assert.match(rows[1] ?? '', /db00 .*verified/);
    // One rule under the header and the frame: no ├ line between the rows.
    assert.equal(lines.filter((l) => l.startsWith('├')).length, 1, out);
    assert.ok(!out.includes('\u001b['), 'no colour when not asked');
    assert.match(out, /FAILED db03: restoring: pg_restore exited with status 1/);
  });
  it('is coloured when asked, whatever cli-table3 guesses of the terminal (it guesses none under CI=true)', () => {
    const out = renderSummary(fleet(2, [1]), true);
    const header = out.split('\n').find((l) => l.includes('Database')) ?? '';
    assert.ok(header.includes('\u001b[36mDatabase\u001b[39m'), `a cyan header expected:\n${JSON.stringify(header)}`);
    assert.ok(out.includes('\u001b[31mfailed\u001b[39m'), out);
  });
  it('folds the verified databases of a fleet of 40 into one line, keeping every failure', () => {
    const s = fleet(40, [7, 30]);
    const out = renderSummary(s, false);
    const lines = out.split('\n');
    const rows = lines.filter((l) => /│ db\d\d/.test(l));
    assert.equal(rows.length, 20);
    assert.match(rows[0] ?? '', /db07 .*failed/);
    assert.match(rows[1] ?? '', /db30 .*failed/);
    assert.match(out, /^20 more databases verified: see `pg-migrate status` or --json$/m);
    assert.match(out, /38 of 40 databases verified/);
    assert.ok(lines.length < 35, `${String(lines.length)} lines:\n${out}`);
  });
  it('keeps every database when there is room, and never folds a failure', () => {
    assert.equal(summaryRows(fleet(20, []).databases).folded, 0);
    const many = summaryRows(fleet(30, [1, 2, 3]).databases, 2);
    assert.deepEqual(
      many.rows.map((d) => d.name),
      ['db01', 'db02', 'db03'],
    );
    assert.equal(many.folded, 27);
  });
  it('the JSON report leads with the tool and keeps every database', () => {
    const s = { ...fleet(40, [7]), startedAt: '2026-01-01T00:00:00.000Z', endedAt: '2026-01-01T00:00:10.000Z' };
    const r = buildReport(s, '1.2.3');
    assert.deepEqual(Object.keys(r).slice(0, 4), ['tool', 'startedAt', 'endedAt', 'servers']);
    assert.deepEqual(r.tool, { name: 'pg-migrate', version: '1.2.3' });
    assert.equal(r.databases.length, 40);
  });
});
