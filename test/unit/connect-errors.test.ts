import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { describeConnectError } from '../../src/pg/connect-errors.ts';
import { resolveEndpoint } from '../../src/pg/endpoint.ts';

const endpoint = resolveEndpoint('source', { host: 'db.example', port: 5433 }, { HOME: '/nonexistent' }, true).endpoint;
if (endpoint === undefined) throw new Error('no endpoint');
const server = { side: 'source' as const, endpoint, appName: 'pg-migrate/test' };
const explain = (err: unknown): string => describeConnectError(err, server, 'postgres').message;

describe('describeConnectError', () => {
  it("names connect_timeout for node-postgres' own timeout", () => {
    assert.match(explain(new Error('timeout expired')), /did not answer within connect_timeout \(30 s, from the default\)/);
  });

  it('does not call a server error about a timeout (a statement timeout of the role or database) a connect timeout', () => {
    const err = Object.assign(new Error('canceling statement due to statement timeout'), { code: '57014' });
    const text = explain(err);
    assert.doesNotMatch(text, /connect_timeout/);
    assert.match(text, /canceling statement due to statement timeout/);
  });
});
