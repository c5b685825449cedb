import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { chooseCompression, compressionProblem, parseToolVersion } from '../../src/proc/tools.ts';

describe('parseToolVersion', () => {
  it('reads distribution version strings', () => {
    assert.deepEqual(parseToolVersion('pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)'), { major: 15, version: '15.18' });
    assert.deepEqual(parseToolVersion('pg_restore (PostgreSQL) 16.9 (Ubuntu 16.9-0ubuntu0.24.04.1)\n'), { major: 16, version: '16.9' });
  });
  it('reads plain versions from 10 on as one number', () => {
    assert.deepEqual(parseToolVersion('pg_dump (PostgreSQL) 18.1'), { major: 18, version: '18.1' });
    assert.deepEqual(parseToolVersion('pg_dumpall (PostgreSQL) 10.23'), { major: 10, version: '10.23' });
    assert.deepEqual(parseToolVersion('pg_dump (PostgreSQL) 17devel'), { major: 17, version: '17' });
    assert.deepEqual(parseToolVersion('pg_dump (PostgreSQL) 18beta1'), { major: 18, version: '18' });
  });
  it('reads versions before 10 as two numbers (9.6 → 9.6)', () => {
    assert.deepEqual(parseToolVersion('pg_dump (PostgreSQL) 9.6.24'), { major: 9.6, version: '9.6.24' });
    assert.deepEqual(parseToolVersion('pg_dump (PostgreSQL) 9.5.0'), { major: 9.5, version: '9.5.0' });
  });
  it('is undefined for other output', () => {
    assert.equal(parseToolVersion(''), undefined);
    assert.equal(parseToolVersion('pg_dump: command not found'), undefined);
    assert.equal(parseToolVersion('psql 15.2'), undefined);
  });
});

describe('chooseCompression', () => {
  it('zstd:5 from pg_dump 16 on', () => {
    assert.equal(chooseCompression(16), 'zstd:5');
    assert.equal(chooseCompression(17), 'zstd:5');
    assert.equal(chooseCompression(18), 'zstd:5');
  });
  it('gzip level 1 before 16', () => {
    assert.equal(chooseCompression(15), '1');
    assert.equal(chooseCompression(12), '1');
    assert.equal(chooseCompression(10), '1');
  });
  it('gzip level 1 for pg_dump 9.x (major 9.x)', () => {
    assert.equal(chooseCompression(parseToolVersion('pg_dump (PostgreSQL) 9.6.24')!.major), '1');
    assert.equal(chooseCompression(9.4), '1');
  });
});

describe('compressionProblem', () => {
  it('accepts what pg_dump takes for -Z', () => {
    for (const v of ['0', '1', '9']) assert.equal(compressionProblem(v, 15), undefined);
    for (const v of ['5', 'zstd:5', 'gzip', 'gzip:9', 'lz4:1', 'none', 'zstd:level=3,long']) assert.equal(compressionProblem(v, 16), undefined, v);
  });
  it('names a value pg_dump would refuse, with what to write', () => {
    assert.match(compressionProblem('abc', 16) ?? '', /--compression "abc" is not a pg_dump -Z value for pg_dump 16: write a level 0-9 or METHOD\[:LEVEL\]/);
    assert.match(compressionProblem('zstd:5', 15) ?? '', /methods other than gzip need pg_dump 16/);
    assert.notEqual(compressionProblem('10', 15), undefined);
    assert.notEqual(compressionProblem('-1', 17), undefined);
  });
});
