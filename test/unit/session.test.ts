import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { sessionOptions } from '../../src/pg/connect.ts';

describe('sessionOptions', () => {
  it('names only settings the server knows (a 9.5 source refuses idle_in_transaction_session_timeout at connect)', () => {
    assert.equal(sessionOptions(90500), '-c statement_timeout=0 -c default_transaction_read_only=off -c lock_timeout=0 -c row_security=off');
    assert.equal(sessionOptions(90200), '-c statement_timeout=0 -c default_transaction_read_only=off');
    assert.match(sessionOptions(100000), /idle_in_transaction_session_timeout=0/);
    assert.doesNotMatch(sessionOptions(160000), /transaction_timeout=0 |-c transaction_timeout/);
    assert.match(sessionOptions(170000), /-c transaction_timeout=0/);
    assert.doesNotMatch(sessionOptions(130000), /idle_session_timeout/);
    assert.match(sessionOptions(140000), /-c idle_session_timeout=0/);
  });
});
