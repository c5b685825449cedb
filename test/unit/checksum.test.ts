import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  addChecksums,
  CHECKSUM_RANGE_BYTES,
  checksumOptions,
  checksumRanges,
  checksumSql,
  compareChecksums,
  floatsComparable,
  formatChecksum,
  settingsSql,
} from '../../src/pipeline/checksum.ts';
import { compareObjects, type DatabaseObjects } from '../../src/pipeline/objects.ts';

describe('checksumSql', () => {
  it('hashes the whole row (alias.*, never a bare alias that a column could shadow), sums two 64-bit halves, counts', () => {
    const sql = checksumSql('"s"."t"', { only: true });
    assert.match(sql, /md5\(convert_to\(\(pgm_row\.\*\)::text, 'UTF8'\)\) as h from only "s"\."t" pgm_row\)/);
    assert.match(sql, /count\(\*\)::text as n/);
    assert.match(sql, /substr\(h, 1, 16\)\)::bit\(64\)::bigint::numeric/);
    assert.match(sql, /substr\(h, 17, 16\)\)::bit\(64\)::bigint::numeric/);
    assert.doesNotMatch(sql, /where/);
  });
  it('with both servers 11+ in a UTF8 database: hashtextextended with two seeds, summed (exact numeric sums of bigints)', () => {
    const sql = checksumSql('"s"."t"', { only: true, fast: true });
    assert.match(sql, /sum\(hashtextextended\(h, 0\)\)/);
    assert.match(sql, /sum\(hashtextextended\(h, 1\)\)/);
    assert.match(sql, /select \(pgm_row\.\*\)::text as h from only "s"\."t" pgm_row\)/);
    assert.doesNotMatch(sql, /md5/);
    assert.equal(checksumOptions(11, 18).fastHash, true);
    assert.equal(checksumOptions(10, 18).fastHash, false);
  });
  it('a page range reads only its pages; without only for a table whose children count', () => {
    const sql = checksumSql('"s"."t"', { only: false, range: { from: 10, to: 20 } });
    assert.match(sql, /from "s"\."t" pgm_row where ctid >= '\(10,0\)'::tid and ctid < '\(20,0\)'::tid\) s$/);
    assert.match(checksumSql('x', { only: true, range: { from: 20, to: null } }), /where ctid >= '\(20,0\)'::tid\) s$/);
  });
});

describe('settingsSql', () => {
  it('pins every setting that steers the text of floats, dates, intervals, bytea and money', () => {
    const sql = settingsSql({ floatDigits: 3 });
    for (const k of ['extra_float_digits', 'DateStyle', 'IntervalStyle', 'TimeZone', 'bytea_output', 'lc_monetary'])
      assert.match(sql, new RegExp(`set_config\\('${k}', '[^']+', false\\)`));
    assert.match(sql, /'TimeZone', 'UTC'/);
    assert.match(sql, /'DateStyle', 'ISO, YMD'/);
  });
  it('floats exact (extra_float_digits 3) between servers on the same side of 12, rounded alike (0) across it', () => {
    assert.ok(floatsComparable(12, 18));
    assert.ok(floatsComparable(10, 11));
    assert.ok(!floatsComparable(11, 12));
    assert.deepEqual(checksumOptions(12, 18), { floatDigits: 3, fastHash: true });
    assert.deepEqual(checksumOptions(10, 11), { floatDigits: 3, fastHash: false });
    assert.deepEqual(checksumOptions(10, 18), { floatDigits: 0, fastHash: false });
    assert.match(settingsSql(checksumOptions(18, 10)), /set_config\('extra_float_digits', '0', false\)/);
  });
});

describe('checksumRanges', () => {
  const pagesOf = (bytes: number): number => Math.ceil(bytes / 8192);
  it('one range for a small table or a server without TID range scans', () => {
    assert.deepEqual(checksumRanges(pagesOf(CHECKSUM_RANGE_BYTES), 8192, 18, 16), [null]);
    assert.deepEqual(checksumRanges(pagesOf(10 * CHECKSUM_RANGE_BYTES), 8192, 13, 16), [null]);
    assert.deepEqual(checksumRanges(0, 8192, 18, 16), [null]);
  });
  it('a big table in ranges by size, at most the concurrency, covering every page', () => {
    const pages = pagesOf(3 * CHECKSUM_RANGE_BYTES);
    const r = checksumRanges(pages, 8192, 14, 16);
    assert.equal(r.length, 3);
    assert.equal(r[0]?.from, 0);
    assert.equal(r.at(-1)?.to, null);
    assert.equal(checksumRanges(pagesOf(100 * CHECKSUM_RANGE_BYTES), 8192, 16, 4).length, 4);
  });
});

describe('addChecksums / compareChecksums', () => {
  it('adds parts (order does not matter) and keeps big sums exact', () => {
    const big = 2n ** 63n - 1n;
    const a = addChecksums([
      { rows: 2, a: big, b: -5n },
      { rows: 3, a: big, b: 7n },
    ]);
    assert.equal(formatChecksum(a), `5:${String(2n * big)}:2`);
    assert.equal(formatChecksum(addChecksums([])), '0:0:0');
  });
  it('names a table whose rows are as many but whose content differs; a count difference is left to the counts', () => {
    const src = { '"p"."a"': '3:1:2', '"p"."b"': '3:1:2', '"p"."c"': '3:1:2', '"p"."d"': '1:1:1' };
    const dst = { '"p"."a"': '3:1:2', '"p"."b"': '3:1:3', '"p"."c"': '4:1:2' };
    assert.deepEqual(compareChecksums(src, dst, { '"p"."a"': 3, '"p"."b"': 3, '"p"."c"': 4 }), [
      'table "p"."b": same row count (3) but different content (checksums differ)',
    ]);
    // A table counted on the target but not hashed there is not called equal.
    assert.deepEqual(compareChecksums(src, dst, { '"p"."d"': 1 }), [
      'table "p"."b": same row count (3) but different content (checksums differ)',
      'table "p"."d": hashed on the source but not on the target (its content was not compared)',
    ]);
  });
});

describe('compareObjects', () => {
  const objects = (seq: Record<string, [string, boolean]>, count = 0, hash = '0:0'): DatabaseObjects => ({
    sequences: Object.fromEntries(Object.entries(seq).map(([k, [last, called]]) => [k, { last, called }])),
    largeObjects: { count, hash },
  });
  it('equal: nothing to say', () => {
    assert.deepEqual(compareObjects(objects({ s: ['5', true] }, 1, '1:2'), objects({ s: ['5', true] }, 1, '1:2')), { errors: [], warnings: [] });
  });
  it('names a sequence whose value or is_called differs, one missing, and one only on the target', () => {
    const r = compareObjects(objects({ s: ['5', true], t: ['1', false], u: ['1', true] }), objects({ s: ['4', true], t: ['1', true], v: ['1', true] }));
    assert.deepEqual(r.errors, [
      'sequence s: 5 on the source, 4 on the target',
      'sequence t: 1 (not called) on the source, 1 on the target',
      'sequence u is missing on the target',
    ]);
    assert.deepEqual(r.warnings, ['sequence v exists only on the target']);
  });
  it('a target value between the source before and now (a source in use during the copy) is a warning; outside it, an error', () => {
    const ok = compareObjects(objects({ s: ['5', true] }), objects({ s: ['7', true] }), objects({ s: ['9', true] }));
    assert.deepEqual(ok.errors, []);
    assert.match(ok.warnings[0] ?? '', /moved on to 9 while it was copied/);
    const down = compareObjects(objects({ s: ['-5', true] }), objects({ s: ['-7', true] }), objects({ s: ['-9', true] }));
    assert.deepEqual(down.errors, []);
    const bad = compareObjects(objects({ s: ['5', true] }), objects({ s: ['10', true] }), objects({ s: ['9', true] }));
    assert.equal(bad.errors.length, 1);
  });
  it('large objects: count first, then content', () => {
    assert.deepEqual(compareObjects(objects({}, 2, 'a'), objects({}, 1, 'a')).errors, ['large objects: 2 on the source, 1 on the target']);
    assert.deepEqual(compareObjects(objects({}, 2, 'a'), objects({}, 2, 'b')).errors, [
      'large objects: the same number (2) but different content or oids (hashes differ)',
    ]);
  });
});
