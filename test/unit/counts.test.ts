import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { compareCounts, estimateUsable } from '../../src/pipeline/counts.ts';
import { tableKey } from '../../src/pg/sql.ts';
import type { TableRef } from '../../src/pg/catalog.ts';

const t = (kind: TableRef['kind'], reltuples: number): TableRef => ({ schema: 'public', name: 't', kind, reltuples, relpages: 10 });

describe('tableKey', () => {
  it('quotes schema and name as SQL would', () => {
    assert.equal(tableKey('public', 'orders'), '"public"."orders"');
    assert.equal(tableKey('My Schema', 'a"b'), '"My Schema"."a""b"');
    assert.notEqual(tableKey('a.b', 'c'), tableKey('a', 'b.c'));
  });
});

describe('compareCounts', () => {
  const a = tableKey('public', 'a');
  const b = tableKey('public', 'b');
  const c = tableKey('s', 'c');

  it('equal counts: ok, rows summed over the source', () => {
    const r = compareCounts({ [a]: 10, [b]: 0, [c]: 5 }, { [a]: 10, [b]: 0, [c]: 5 });
    assert.deepEqual(r, { ok: true, errors: [], warnings: [], rows: 15 });
  });

  it('a table missing on the target is an error', () => {
    const r = compareCounts({ [a]: 10, [b]: 3 }, { [a]: 10 });
    assert.equal(r.ok, false);
    assert.equal(r.errors.length, 1);
    assert.match(r.errors[0]!, /"public"\."b" is missing on the target/);
    assert.match(r.errors[0]!, /3 rows/);
    assert.equal(r.rows, 13);
  });

  it('an empty table missing on the target is still an error', () => {
    const r = compareCounts({ [a]: 0 }, {});
    assert.equal(r.ok, false);
    assert.equal(r.errors.length, 1);
  });

  it('a different count is an error', () => {
    const r = compareCounts({ [a]: 10 }, { [a]: 9 });
    assert.equal(r.ok, false);
    assert.deepEqual(r.warnings, []);
    assert.match(r.errors[0]!, /10 rows on the source, 9 on the target/);
  });

  it('a different estimated count is only a warning', () => {
    const r = compareCounts({ [a]: 1000, [b]: 7 }, { [a]: 990, [b]: 7 }, new Set([a]));
    assert.equal(r.ok, true);
    assert.deepEqual(r.errors, []);
    assert.equal(r.warnings.length, 1);
    assert.match(r.warnings[0]!, /estimate/);
    assert.equal(r.rows, 1007);
  });

  it('an estimated key does not excuse a different count of another table, nor a missing one', () => {
    const r = compareCounts({ [a]: 1000, [b]: 7 }, { [a]: 990, [b]: 8 }, new Set([a]));
    assert.equal(r.ok, false);
    assert.equal(r.errors.length, 1);
    assert.match(r.errors[0]!, /"public"\."b"/);
    const missing = compareCounts({ [a]: 1000 }, {}, new Set([a]));
    assert.equal(missing.ok, false);
  });

  it('a table only on the target is a warning', () => {
    const r = compareCounts({ [a]: 1 }, { [a]: 1, [c]: 4 });
    assert.equal(r.ok, true);
    assert.equal(r.warnings.length, 1);
    assert.match(r.warnings[0]!, /"s"\."c" exists only on the target/);
    assert.equal(r.rows, 1);
  });

  it('reports every problem', () => {
    const r = compareCounts({ [a]: 1, [b]: 2 }, { [a]: 2, [c]: 3 });
    assert.equal(r.errors.length, 2);
    assert.equal(r.warnings.length, 1);
    assert.equal(r.rows, 3);
  });
});

describe('estimateUsable', () => {
  it('trusts only analyzed, non-empty tables and materialized views', () => {
    assert.equal(estimateUsable(t('r', 1234)), true);
    assert.equal(estimateUsable(t('m', 50)), true);
    assert.equal(estimateUsable(t('r', 0.5)), true);
  });
  it('never analyzed (-1), zero and partitioned tables are not usable', () => {
    assert.equal(estimateUsable(t('r', -1)), false);
    assert.equal(estimateUsable(t('r', 0)), false);
    assert.equal(estimateUsable(t('m', -1)), false);
    assert.equal(estimateUsable(t('p', 1_000_000)), false);
    assert.equal(estimateUsable(t('p', -1)), false);
  });
});
