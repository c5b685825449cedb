import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { maintenanceWorkMem } from '../../src/pipeline/tune.ts';

const GB = 1024 ** 3;

describe('maintenanceWorkMem', () => {
  it('shares shared_buffers among the index builds that can run at once', () => {
    assert.equal(maintenanceWorkMem(1 * GB, 4), '256MB'); // the benchmark's target: 2 jobs × 2 databases
    assert.equal(maintenanceWorkMem(32 * GB, 72), '455MB'); // 12 jobs × 6 databases on a big server
    assert.equal(maintenanceWorkMem(8 * GB, 8), '1024MB');
  });

  it('never below the server default (64 MB) nor above 2 GB', () => {
    assert.equal(maintenanceWorkMem(128 * 1024 ** 2, 4), '64MB');
    assert.equal(maintenanceWorkMem(64 * GB, 2), '2048MB');
    assert.equal(maintenanceWorkMem(1 * GB, 0), '1024MB', 'no builds counted: one');
  });
});
