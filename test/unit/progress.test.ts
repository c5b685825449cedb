import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Parallelism } from '../../src/plan.ts';
import { columns, formatEta, formatRate, formatShortCount } from '../../src/ui/format.ts';
import { ProgressModel, etaOf, rateOf } from '../../src/ui/progress-model.ts';
import { liveLines, plainProgressLines, totalsLine } from '../../src/ui/progress-lines.ts';
import { progressFromRows } from '../../src/pipeline/sampler.ts';
import { redact } from '../../src/ui/redact.ts';
import { useColor } from '../../src/cli/renderer.ts';

const MB = 1024 ** 2;
const parallelism: Parallelism = {
  dumpParallel: 6,
  restoreParallel: 6,
  dumpJobs: 2,
  restoreJobs: 2,
  verifyConcurrency: 4,
};

/** A model with `n` databases planned (long names), `inFlight` of them started and sampled twice 10 s apart. */
function model(n: number, inFlight: number, failed = 0): { m: ProgressModel; now: number } {
  const m = new ProgressModel(0);
  const names = Array.from({ length: n }, (_, i) => `customer_database_with_a_long_name_${String(i).padStart(3, '0')}`);
  m.onEvent(
    {
      type: 'plan',
      databases: names.map((name) => ({ name, sizeBytes: 1024 * MB, deferred: 0 })),
      notMigrated: [],
      parallelism,
      compression: 'zstd:5',
      toolsVersion: '17.2',
    },
    0,
  );
  for (const name of names.slice(0, inFlight + failed)) m.onEvent({ type: 'phase', db: name, phase: 'restoring' }, 1000);
  for (const name of names.slice(inFlight, inFlight + failed))
    m.onEvent({ type: 'phase', db: name, phase: 'failed', detail: 'restoring: pg_restore exited with status 1: ERROR: something long went wrong here' }, 2000);
  const active = names.slice(0, inFlight);
  m.onEvent({ type: 'progress', at: 10_000, databases: active.map((db) => ({ db, targetBytes: 100 * MB, copies: 3, copyRows: 1_234_567 })) }, 10_000);
  m.onEvent(
    {
      type: 'progress',
      at: 20_000,
      databases: active.map((db) => ({ db, targetBytes: 200 * MB, copies: 2, copyRows: 2_345_678, indexes: 1, indexDone: 0.42 })),
    },
    20_000,
  );
  return { m, now: 20_000 };
}

describe('formatting of rates, ETAs and counts', () => {
  it('formats an ETA short, with ? when unknown', () => {
    assert.equal(formatEta(0), '0s');
    assert.equal(formatEta(44.2), '45s');
    assert.equal(formatEta(725), '12m05s');
    assert.equal(formatEta(3 * 3600 + 5 * 60 + 59), '3h05m');
    assert.equal(formatEta(500 * 3600), '> 99h');
    assert.equal(formatEta(undefined), '?');
    assert.equal(formatEta(Number.POSITIVE_INFINITY), '?');
  });
  it('formats a rate in bytes per second', () => {
    assert.equal(formatRate(12.5 * MB), '12.5 MB/s');
    assert.equal(formatRate(0), '0 B/s');
    assert.equal(formatRate(undefined), '-');
  });
  it('formats row counts short', () => {
    assert.equal(formatShortCount(950), '950');
    assert.equal(formatShortCount(12_345), '12.3k');
    assert.equal(formatShortCount(4_500_000), '4.5M');
  });
});

describe('rate and ETA', () => {
  it('measures the rate over the window and derives the ETA', () => {
    const r = rateOf([
      { at: 0, bytes: 0 },
      { at: 10_000, bytes: 100 * MB },
    ]);
    assert.equal(r, 10 * MB);
    assert.equal(etaOf(300 * MB, r), 30);
    assert.equal(etaOf(0, undefined), 0);
    assert.equal(etaOf(5, 0), undefined);
  });
  it('has no rate before two samples a second apart, and forgets samples older than the window', () => {
    assert.equal(rateOf([{ at: 0, bytes: 0 }]), undefined);
    assert.equal(
      rateOf([
        { at: 0, bytes: 0 },
        { at: 500, bytes: MB },
      ]),
      undefined,
    );
    const r = rateOf([
      { at: 0, bytes: 0 },
      { at: 100_000, bytes: 1000 * MB },
      { at: 110_000, bytes: 1010 * MB },
    ]);
    assert.equal(r, MB);
  });
  it('the model gives each database and the run bytes done, a rate and an ETA', () => {
    const { m, now } = model(3, 2);
    const d = m.inFlight()[0];
    assert.ok(d);
    assert.equal(d.doneBytes, 200 * MB);
    assert.equal(d.rate, 10 * MB);
    assert.equal(d.eta, (824 * MB) / (10 * MB));
    const t = m.totals(now);
    assert.deepEqual([t.done, t.inFlight, t.queued, t.failed], [0, 2, 1, 0]);
    assert.equal(t.doneBytes, 400 * MB);
    assert.equal(t.totalBytes, 3 * 1024 * MB);
    assert.equal(t.rate, 20 * MB);
    assert.equal(t.eta, (3 * 1024 * MB - 400 * MB) / (20 * MB));
  });
  it('a verified database counts whole; its bytes never go backwards', () => {
    const { m, now } = model(2, 2);
    const [a, b] = m.inFlight();
    assert.ok(a && b);
    m.onEvent({ type: 'progress', at: now + 3000, databases: [{ db: b.name, targetBytes: 50 * MB }] }, now + 3000);
    assert.equal(m.get(b.name)?.doneBytes, 200 * MB);
    m.onEvent({ type: 'phase', db: a.name, phase: 'verified' }, now + 4000);
    assert.equal(m.totals(now + 4000).doneBytes, 1024 * MB + 200 * MB);
    assert.equal(m.totals(now + 4000).done, 1);
  });
});

describe('the live display', () => {
  it('fits in 80 columns with 6 databases in flight, with bytes, rate, ETA and the totals last', () => {
    const { m, now } = model(10, 6);
    const lines = liveLines({ inFlight: m.inFlight(), failed: m.failed(), totals: m.totals(now) }, 80, 24);
    assert.equal(lines.length, 7);
    for (const l of lines) assert.ok(columns(l) < 80, `${String(columns(l))} columns: ${l}`);
    assert.match(lines[0] ?? '', /^customer_data… restoring 200 MB\/1\.0 GB 19% 10\.0 MB\/s ETA 1m23s · COPY 2\.3M row/);
    const total = lines.at(-1) ?? '';
    assert.match(total, /^0\/10 done, 6 in flight, 4 queued, 0 failed │ 1\.2 GB\/10\.0 GB 11% │ ETA 2m31s$/);
    const wide = liveLines({ inFlight: m.inFlight(), failed: m.failed(), totals: m.totals(now) }, 120, 24);
    assert.match(wide.at(-1) ?? '', /│ 1\.2 GB\/10\.0 GB 11% │ 60\.0 MB\/s │ ETA 2m31s │ 20\.0s$/);
  });
  it('keeps a fleet of 40 to the in-flight and failed databases and one line of totals, within the height', () => {
    const { m, now } = model(40, 6, 2);
    const lines = liveLines({ inFlight: m.inFlight(), failed: m.failed(), totals: m.totals(now) }, 100, 30);
    assert.equal(lines.length, 9, lines.join('\n'));
    assert.equal(lines.filter((l) => l.includes('queued')).length, 1, 'no line per queued database');
    assert.match(lines[0] ?? '', /^✖ customer_database_with_a_long_name_006: restoring: pg_restore/);
    assert.match(lines.at(-1) ?? '', /^0\/40 done, 6 in flight, 32 queued, 2 failed │/);
    const short = liveLines({ inFlight: m.inFlight(), failed: m.failed(), totals: m.totals(now) }, 80, 6);
    assert.equal(short.length, 5);
    assert.match(short[3] ?? '', /… and 5 more \(failed or in flight\)/);
    assert.match(short[4] ?? '', /^0\/40 done/);
  });
  it('drops the least useful pieces of the totals first on a narrow terminal', () => {
    const { m, now } = model(40, 6);
    const t = m.totals(now);
    assert.match(totalsLine(t, 200), /│ 20\.0s$/);
    const narrow = totalsLine(t, 70);
    assert.ok(columns(narrow) <= 70, narrow);
    assert.match(narrow, /ETA/);
    assert.doesNotMatch(narrow, /MB\/s/);
  });
  it('plain lines: each database in flight, then the totals', () => {
    const { m, now } = model(3, 1);
    const lines = plainProgressLines({ inFlight: m.inFlight(), failed: m.failed(), totals: m.totals(now) });
    assert.match(
      lines[0] ?? '',
      /^\[customer_database_with_a_long_name_000\] restoring: 200 MB\/1\.0 GB 19% 10\.0 MB\/s ETA 1m23s; COPY 2\.3M rows, index ×1 42%$/,
    );
    assert.match(lines[1] ?? '', /^progress: 0\/3 done, 1 in flight, 2 queued, 0 failed │ 200 MB\/3\.0 GB 6% │ 10\.0 MB\/s │ ETA/);
  });
});

describe('sampler rows', () => {
  it('subtracts an empty database, caps at the source size, sums COPYs and keeps the furthest index', () => {
    const p = progressFromRows(
      [
        { kind: 'empty', db: null, a: 7 * MB, b: 0 },
        { kind: 'size', db: 'a', a: 107 * MB, b: 0 },
        { kind: 'size', db: 'b', a: 5000 * MB, b: 0 },
        { kind: 'copy', db: 'a', a: 10, b: 0 },
        { kind: 'copy', db: 'a', a: 5, b: 0 },
        { kind: 'index', db: 'b', a: 1, b: 4 },
        { kind: 'index', db: 'b', a: 3, b: 4 },
      ],
      new Map([
        ['a', 1024 * MB],
        ['b', 2048 * MB],
      ]),
    );
    assert.deepEqual(p.get('a'), { db: 'a', targetBytes: 100 * MB, copies: 2, copyRows: 15 });
    assert.deepEqual(p.get('b'), { db: 'b', targetBytes: 2048 * MB, indexes: 2, indexDone: 0.75 });
  });
});

describe('redact', () => {
  it('masks known passwords, conninfo passwords, URI passwords and password hashes', () => {
    assert.equal(redact('connecting with s3cret!pw', ['s3cret!pw']), 'connecting with ***');
    assert.equal(redact("host=x password='a b\\'c' user=u"), 'host=x password=*** user=u');
    assert.equal(redact('host=x password=abc user=u'), 'host=x password=*** user=u');
    assert.equal(redact('postgresql://bob:hunter2@db:5432/app'), 'postgresql://bob:***@db:5432/app');
    assert.equal(redact('postgresql://bob@db/app'), 'postgresql://bob@db/app');
    assert.equal(redact("LINE 1: ALTER ROLE a PASSWORD 'SCRAM-SHA-256$4096:abc'"), "LINE 1: ALTER ROLE a PASSWORD '***'");
  });
});

describe('colour', () => {
  const tty = { isTTY: true };
  const pipe = { isTTY: false };
  it('only on a terminal, never with --no-color or NO_COLOR', () => {
    assert.equal(useColor(tty, true, {}), true);
    assert.equal(useColor(pipe, true, {}), false);
    assert.equal(useColor(tty, false, {}), false);
    assert.equal(useColor(tty, true, { NO_COLOR: '1' }), false);
    assert.equal(useColor(tty, true, { NO_COLOR: '' }), true, 'an empty NO_COLOR does not count (no-color.org)');
    assert.equal(useColor(tty, true, { TERM: 'dumb' }), false);
  });
});
