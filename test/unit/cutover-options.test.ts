import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { cutoverProblems } from '../../src/cli/commands/cutover.ts';

describe('cutoverProblems', () => {
  it('accepts the defaults and no grace', () => {
    assert.deepEqual(cutoverProblems({ graceSeconds: 3, catchupTimeout: 60 }), []);
    assert.deepEqual(cutoverProblems({ graceSeconds: 0, catchupTimeout: 1, fenceRoles: ['app'] }), []);
  });
  it('names a negative grace, a catch-up timeout that is no number or zero, and an empty role', () => {
    assert.deepEqual(cutoverProblems({ graceSeconds: -5, catchupTimeout: Number.NaN, fenceRoles: [''] }), [
      '--grace-seconds must be a whole number of seconds from 0 to 3600 (got -5)',
      '--catchup-timeout must be a whole number of seconds from 1 to 86400 (got something that is not a number)',
      '--fence-roles must name a role (it was empty)',
    ]);
    assert.equal(cutoverProblems({ graceSeconds: 1.5, catchupTimeout: 0 }).length, 2);
  });
});
