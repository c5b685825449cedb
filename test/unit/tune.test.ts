import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { tuningFor } from '../../src/pipeline/tune.ts';

describe('tuningFor', () => {
  it('turns parallel index-build workers off on a machine of at most 4 cores', () => {
    for (const cores of [1, 2, 4]) assert.equal(tuningFor(cores)['max_parallel_maintenance_workers'], '0', `${cores} cores`);
  });
  it("leaves the server's parallel index builds alone on a larger machine", () => {
    for (const cores of [5, 64]) assert.equal(tuningFor(cores)['max_parallel_maintenance_workers'], undefined, `${cores} cores`);
  });
  it('always turns fsync, synchronous_commit, full_page_writes and autovacuum off', () => {
    for (const cores of [2, 64]) {
      const t = tuningFor(cores);
      assert.deepEqual([t['fsync'], t['synchronous_commit'], t['full_page_writes'], t['autovacuum']], ['off', 'off', 'off', 'off']);
    }
  });
});
