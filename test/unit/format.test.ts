import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { formatBytes, formatCount, formatSeconds } from '../../src/ui/format.ts';

describe('formatBytes', () => {
  it('picks the unit and precision', () => {
    assert.equal(formatBytes(0), '0 B');
    assert.equal(formatBytes(1023), '1023 B');
    assert.equal(formatBytes(1024), '1.0 kB');
    assert.equal(formatBytes(1536), '1.5 kB');
    assert.equal(formatBytes(100 * 1024), '100 kB');
    assert.equal(formatBytes(5 * 1024 ** 2), '5.0 MB');
    assert.equal(formatBytes(1.25 * 1024 ** 3), '1.3 GB');
    assert.equal(formatBytes(2 * 1024 ** 4), '2.0 TB');
    assert.equal(formatBytes(2048 * 1024 ** 4), '2048 TB');
  });
  it('shows - for unknown', () => {
    assert.equal(formatBytes(null), '-');
    assert.equal(formatBytes(undefined), '-');
  });
});

describe('formatSeconds', () => {
  it('tenths under a minute', () => {
    assert.equal(formatSeconds(0), '0.0s');
    assert.equal(formatSeconds(1.234), '1.2s');
    assert.equal(formatSeconds(59.9), '59.9s');
  });
  it('minutes and hours', () => {
    assert.equal(formatSeconds(60), '1m00s');
    assert.equal(formatSeconds(125.7), '2m05s');
    assert.equal(formatSeconds(3599), '59m59s');
    assert.equal(formatSeconds(3600), '1h00m00s');
    assert.equal(formatSeconds(3661), '1h01m01s');
    assert.equal(formatSeconds(90000), '25h00m00s');
  });
  it('shows - for unknown', () => {
    assert.equal(formatSeconds(null), '-');
    assert.equal(formatSeconds(undefined), '-');
  });
});

describe('formatCount', () => {
  it('groups thousands', () => {
    assert.equal(formatCount(1234567), '1,234,567');
    assert.equal(formatCount(0), '0');
    assert.equal(formatCount(null), '-');
  });
});
