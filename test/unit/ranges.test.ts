import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { binaryCopy, copiedRows, pageRanges, RANGE_BYTES, rangeCount, rangePredicate } from '../../src/transfer/ranges.ts';

describe('pageRanges', () => {
  it('covers every page exactly once, in order, the last range open-ended', () => {
    for (const [pages, parts] of [
      [65574, 2],
      [10, 3],
      [7, 7],
      [1000, 16],
    ] as const) {
      const r = pageRanges(pages, parts);
      assert.equal(r.length, parts);
      assert.equal(r[0]!.from, 0);
      for (let i = 1; i < r.length; i++) assert.equal(r[i]!.from, r[i - 1]!.to, `ranges ${i - 1} and ${i} of ${pages}/${parts} must touch`);
      assert.equal(r.at(-1)!.to, null);
      for (const x of r.slice(0, -1)) assert.ok(x.to! > x.from, 'no empty range');
    }
  });

  it('splits evenly', () => {
    assert.deepEqual(pageRanges(100, 4), [
      { from: 0, to: 25 },
      { from: 25, to: 50 },
      { from: 50, to: 75 },
      { from: 75, to: null },
    ]);
  });

  it('never more ranges than pages; an empty table is one open range', () => {
    assert.deepEqual(pageRanges(2, 8), [
      { from: 0, to: 1 },
      { from: 1, to: null },
    ]);
    assert.deepEqual(pageRanges(0, 4), [{ from: 0, to: null }]);
  });
});

describe('rangeCount', () => {
  it('one range per job, more for a table over a GiB per job', () => {
    assert.equal(rangeCount(512 * 1024 ** 2, 2), 2);
    assert.equal(rangeCount(10 * RANGE_BYTES, 2), 10);
    assert.equal(rangeCount(10 * RANGE_BYTES + 1, 4), 11);
  });
});

describe('rangePredicate', () => {
  it('bounds a range by tids, the last one only from below', () => {
    assert.equal(rangePredicate({ from: 0, to: 25 }), "ctid >= '(0,0)'::tid and ctid < '(25,0)'::tid");
    assert.equal(rangePredicate({ from: 75, to: null }), "ctid >= '(75,0)'::tid");
  });
});

describe('binaryCopy', () => {
  it('only for built-in types with binary I/O, onto the same or a newer major', () => {
    assert.equal(binaryCopy(15, 15, true), true);
    assert.equal(binaryCopy(14, 18, true), true);
    assert.equal(binaryCopy(18, 15, true), false);
    assert.equal(binaryCopy(15, 15, false), false);
  });
});

describe('copiedRows', () => {
  it("reads the count of psql's COPY line among the other command tags", () => {
    assert.equal(copiedRows('SET\nSET\nBEGIN\nSET\nCOPY 4000000\nCOMMIT\n'), 4000000);
    assert.equal(copiedRows('SET\nCOPY 0\n'), 0);
  });
  it('is undefined when psql printed no COPY line (a copy that did not run)', () => {
    assert.equal(copiedRows('SET\nBEGIN\nSET\n'), undefined);
    assert.equal(copiedRows('ROLLBACK\nCOPY 12 extra\n'), undefined);
  });
});
