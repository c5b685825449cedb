import assert from 'node:assert/strict';
import os from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import { ExitCode, UsageError } from '../../src/errors.ts';
import { parseSize, resolveOptions, type MigrateOptions } from '../../src/options.ts';
import { CEILINGS, connectionsNeeded, planParallelism, type Parallelism } from '../../src/plan.ts';

const ENV = { HOME: '/home/operator' } as NodeJS.ProcessEnv;

/** The parts of an endpoint the messages and state use (its spec aside). */
const parts = (e: MigrateOptions['from']) => ({ host: e.host, port: e.port, user: e.user, password: e.password, database: e.database });

function usageError(fn: () => unknown): UsageError {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof UsageError, `expected a UsageError, got ${String(err)}`);
    return err;
  }
  assert.fail('expected a UsageError, nothing was thrown');
}

describe('resolveOptions', () => {
  it('refuses a --report that is a directory (the report would only fail to be written at the end)', () => {
    const err = usageError(() => resolveOptions({ toHost: 't', report: os.tmpdir() }, ENV));
    assert.match(err.message, /--report .* is a directory; pass the path of the file to write/);
    assert.equal(err.exitCode, ExitCode.usage);
  });
  it('applies the defaults', () => {
    const o = resolveOptions({ toHost: 'target.example' }, ENV);
    assert.deepEqual(parts(o.from), { host: 'localhost', port: 5432, user: 'postgres', password: undefined, database: 'postgres' });
    assert.deepEqual(parts(o.to), { host: 'target.example', port: 5432, user: 'postgres', password: undefined, database: 'postgres' });
    assert.equal(o.from.spec.params.connect_timeout, '30');
    assert.equal(o.targetGiven, true);
    assert.equal(o.verifyConcurrency, 16);
    assert.equal(o.dumpRoot, path.resolve('pg_dumps'));
    assert.ok(path.isAbsolute(o.dumpRoot));
    assert.equal(o.stateDir, '/home/operator');
    assert.equal(o.migrateGlobals, true);
    assert.equal(o.disableDstOptimizations, false);
    assert.equal(o.fresh, false);
    assert.equal(o.fastVerify, false);
    assert.equal(o.verify, 'count');
    assert.equal(o.splitTableBytes, 256 * 1024 * 1024);
    assert.equal(o.removeDumps, false);
    assert.deepEqual(o.includeDb, []);
    assert.deepEqual(o.excludeDb, []);
    assert.deepEqual(o.redoDb, []);
    assert.deepEqual(o.delayTableData, []);
    assert.equal(o.pgBinDir, undefined);
    assert.equal(o.compression, undefined);
    assert.equal(o.report, undefined);
    // Parallelism is left for planParallelism.
    assert.equal(o.dumpJobs, undefined);
    assert.equal(o.restoreJobs, undefined);
    assert.equal(o.maxParallel, undefined);
    assert.equal(o.dumpParallel, undefined);
    assert.equal(o.restoreParallel, undefined);
  });

  it('--verify: count or checksum, and checksum not with --fast-verify', () => {
    assert.equal(resolveOptions({ toHost: 't', verify: 'checksum' }, ENV).verify, 'checksum');
    assert.throws(() => resolveOptions({ toHost: 't', verify: 'hash' }, ENV), /--verify must be one of count, checksum/);
    assert.throws(
      () => resolveOptions({ toHost: 't', verify: 'checksum', fastVerify: true }, ENV),
      /--fast-verify .* and --verify checksum exclude each other/,
    );
  });

  it('takes the state dir default from the env argument, not from process.env', () => {
    assert.equal(resolveOptions({ toHost: 't' }, { HOME: '/srv/other-home' }).stateDir, '/srv/other-home');
  });

  it('keeps given values and resolves relative paths against the working directory', () => {
    const o = resolveOptions(
      {
        fromHost: 'src.example',
        fromPort: 6432,
        fromUser: 'admin',
        fromPass: 's:e\\cret',
        fromDb: 'maint',
        toHost: '/var/run/postgresql',
        toPort: 5433,
        toUser: 'Admin',
        toDb: 'template1',
        dumpJobs: 3,
        restoreJobs: 4,
        maxParallel: 5,
        verifyConcurrency: 1,
        dumpRoot: 'rel/dumps',
        stateDir: 'rel/state',
        pgBinDir: 'bin',
        report: 'out/report.json',
        compression: 'lz4',
        migrateGlobals: false,
        includeDb: ['shop*'],
        delayTableData: ['shop.events'],
      },
      ENV,
    );
    assert.deepEqual(parts(o.from), { host: 'src.example', port: 6432, user: 'admin', password: 's:e\\cret', database: 'maint' });
    assert.equal(o.to.host, '/var/run/postgresql');
    assert.equal(o.to.user, 'Admin');
    assert.equal(o.dumpJobs, 3);
    assert.equal(o.restoreJobs, 4);
    assert.equal(o.maxParallel, 5);
    assert.equal(o.verifyConcurrency, 1);
    assert.equal(o.dumpRoot, path.resolve('rel/dumps'));
    assert.equal(o.stateDir, path.resolve('rel/state'));
    assert.equal(o.pgBinDir, path.resolve('bin'));
    assert.equal(o.report, path.resolve('out/report.json'));
    assert.equal(o.compression, 'lz4');
    assert.equal(o.migrateGlobals, false);
    assert.deepEqual(o.includeDb, ['shop*']);
    assert.equal(o.delayTableData.length, 1);
    assert.equal(o.delayTableData[0]!.database, 'shop');
    assert.equal(o.delayTableData[0]!.table, 'events');
  });

  it('requires --to-host', () => {
    const err = usageError(() => resolveOptions({}, ENV));
    assert.match(err.message, /--to-host/);
    assert.equal(err.exitCode, ExitCode.usage);
    assert.equal(err.exitCode, 2);
    usageError(() => resolveOptions({ toHost: '' }, ENV));
  });

  it('rejects a blank --to-host like a blank --from-host', () => {
    // --from-host '  ' is rejected ("must not be empty"); a blank --to-host should be too.
    usageError(() => resolveOptions({ toHost: 't', fromHost: '  ' }, ENV));
    const err = usageError(() => resolveOptions({ toHost: '   ' }, ENV));
    assert.match(err.message, /--to-host/);
  });

  it('reports every problem at once in one UsageError', () => {
    const err = usageError(() =>
      resolveOptions({ toHost: 't', fromPort: 0, dumpJobs: -1, delayTableData: ['mydb.a.b.c'], toPort: 65536, verifyConcurrency: 1.5 }, ENV),
    );
    assert.equal(err.exitCode, 2);
    assert.match(err.message, /--from-port/);
    assert.match(err.message, /got 0/);
    assert.match(err.message, /--dump-jobs/);
    assert.match(err.message, /got -1/);
    assert.match(err.message, /--to-port/);
    assert.match(err.message, /--verify-concurrency/);
    assert.match(err.message, /--delay-table-data/);
    assert.match(err.message, /mydb\.a\.b\.c/);
    // One line per problem.
    assert.equal(err.message.split('\n').filter((l) => l.startsWith('  - ')).length, 5);
  });

  it('lists a missing --to-host together with other problems', () => {
    const err = usageError(() => resolveOptions({ fromPort: 0, includeDb: [''], dumpRoot: ' ' }, ENV));
    assert.match(err.message, /--to-host/);
    assert.match(err.message, /--from-port/);
    assert.match(err.message, /--include-db/);
    assert.match(err.message, /--dump-root/);
  });

  it('rejects non-numbers and out-of-range values', () => {
    usageError(() => resolveOptions({ toHost: 't', fromPort: Number.NaN }, ENV));
    usageError(() => resolveOptions({ toHost: 't', restoreJobs: 0 }, ENV));
    usageError(() => resolveOptions({ toHost: 't', maxParallel: 257 }, ENV));
    usageError(() => resolveOptions({ toHost: 't', delayTableData: ['"unterminated.t'] }, ENV));
    usageError(() => resolveOptions({ toHost: 't', redoDb: [''] }, ENV));
    // Boundaries are accepted.
    const o = resolveOptions({ toHost: 't', fromPort: 1, toPort: 65535, dumpJobs: 256, verifyConcurrency: 1024 }, ENV);
    assert.equal(o.from.port, 1);
    assert.equal(o.to.port, 65535);
    assert.equal(o.dumpJobs, 256);
  });
});

type ParOpts = Pick<MigrateOptions, 'dumpJobs' | 'restoreJobs' | 'maxParallel' | 'dumpParallel' | 'restoreParallel' | 'verifyConcurrency'>;
const AUTO: ParOpts = {
  dumpJobs: undefined,
  restoreJobs: undefined,
  maxParallel: undefined,
  dumpParallel: undefined,
  restoreParallel: undefined,
  verifyConcurrency: 16,
};
const PLENTY = { available: 10_000 };

function fits(p: Parallelism, source: number, target: number): void {
  assert.ok(connectionsNeeded(p.dumpParallel, p.dumpJobs, p.verifyConcurrency) <= source, `source side ${JSON.stringify(p)} needs more than ${source}`);
  assert.ok(connectionsNeeded(p.restoreParallel, p.restoreJobs, p.verifyConcurrency) <= target, `target side ${JSON.stringify(p)} needs more than ${target}`);
}

describe('connectionsNeeded', () => {
  it('is parallel × (2 + jobs) + verify + 2', () => {
    assert.equal(connectionsNeeded(1, 1, 0), 5);
    assert.equal(connectionsNeeded(6, 24, 16), 6 * 26 + 16 + 2);
    assert.equal(connectionsNeeded(3, 4, 10), 30);
  });
});

describe('planParallelism', () => {
  it('2-core machine with plenty of connections: 2 jobs, 2 databases in flight', () => {
    assert.deepEqual(planParallelism(AUTO, 2, PLENTY, PLENTY), {
      dumpJobs: 2,
      dumpParallel: 2,
      restoreJobs: 2,
      restoreParallel: 2,
      verifyConcurrency: 16,
    });
  });

  it('64-core machine with plenty of connections: capped at 24 / 12 / 6', () => {
    assert.deepEqual(planParallelism(AUTO, 64, PLENTY, PLENTY), {
      dumpJobs: CEILINGS.dumpJobs,
      dumpParallel: CEILINGS.maxParallel,
      restoreJobs: CEILINGS.restoreJobs,
      restoreParallel: CEILINGS.maxParallel,
      verifyConcurrency: 16,
    });
    assert.deepEqual(CEILINGS, { dumpJobs: 24, restoreJobs: 12, maxParallel: 6 });
  });

  it('8-core machine: jobs follow the cores', () => {
    const p = planParallelism(AUTO, 8, PLENTY, PLENTY);
    assert.equal(p.dumpJobs, 8);
    assert.equal(p.restoreJobs, 8);
    assert.equal(p.dumpParallel, 6);
    assert.equal(p.restoreParallel, 6);
  });

  it('0 or 1 cores never yield 0', () => {
    for (const cores of [0, 1]) {
      const p = planParallelism(AUTO, cores, PLENTY, PLENTY);
      assert.ok(p.dumpJobs >= 1 && p.restoreJobs >= 1 && p.dumpParallel >= 1 && p.restoreParallel >= 1, JSON.stringify(p));
    }
  });

  it('shrinks auto values to fit a server with few free connections', () => {
    // 64 cores would want 6 × (2 + 24) + 18 = 174 on the source and 6 × 14 + 18 = 102 on the target.
    const p = planParallelism(AUTO, 64, { available: 100 }, { available: 40 });
    fits(p, 100, 40);
    // Not shrunk more than needed: one more job or one more database would no longer fit.
    assert.ok(connectionsNeeded(p.dumpParallel, p.dumpJobs + 1, 16) > 100);
    assert.ok(connectionsNeeded(p.restoreParallel, p.restoreJobs + 1, 16) > 40);
    assert.ok(connectionsNeeded(p.restoreParallel + 1, p.restoreJobs, 16) > 40);
    // Jobs are lowered first: with 100 free on the source all 6 databases stay in flight.
    assert.equal(p.dumpParallel, 6);
    assert.equal(p.dumpJobs, 11);
    assert.equal(p.restoreJobs, 3);
    assert.equal(p.restoreParallel, 4);
  });

  it('fits every server that can hold the minimum, on any machine', () => {
    for (const cores of [1, 2, 3, 4, 8, 16, 24, 64, 256]) {
      for (let available = 21; available <= 220; available += 7) {
        const p = planParallelism(AUTO, cores, { available }, { available: available + 3 });
        fits(p, available, available + 3);
        assert.ok(p.dumpJobs >= 1 && p.dumpJobs <= Math.min(24, Math.max(1, cores)), JSON.stringify(p));
        assert.ok(p.restoreJobs >= 1 && p.restoreJobs <= Math.min(12, Math.max(1, cores)), JSON.stringify(p));
        assert.ok(p.dumpParallel >= 1 && p.dumpParallel <= 6, JSON.stringify(p));
        assert.ok(p.restoreParallel >= 1 && p.restoreParallel <= 6, JSON.stringify(p));
      }
    }
  });

  it('stops at one job and one database when even that does not fit (preflight reports it)', () => {
    const p = planParallelism(AUTO, 64, { available: 5 }, { available: 5 });
    assert.deepEqual(p, { dumpJobs: 1, dumpParallel: 1, restoreJobs: 1, restoreParallel: 1, verifyConcurrency: 16 });
  });

  it('keeps explicit values untouched even when they do not fit', () => {
    const explicit: ParOpts = { dumpJobs: 40, restoreJobs: 30, maxParallel: undefined, dumpParallel: 8, restoreParallel: 9, verifyConcurrency: 50 };
    const p = planParallelism(explicit, 2, { available: 10 }, { available: 10 });
    assert.deepEqual(p, { dumpJobs: 40, dumpParallel: 8, restoreJobs: 30, restoreParallel: 9, verifyConcurrency: 50 });
  });

  it('keeps an explicit --max-parallel on both sides and lowers only the auto jobs', () => {
    const p = planParallelism({ ...AUTO, maxParallel: 3 }, 64, { available: 40 }, PLENTY);
    assert.equal(p.dumpParallel, 3);
    assert.equal(p.restoreParallel, 3);
    assert.equal(p.restoreJobs, 12);
    // 3 × (2 + j) + 18 <= 40  →  j = 5
    assert.equal(p.dumpJobs, 5);
  });

  it('keeps explicit jobs and lowers only the auto databases in flight', () => {
    const p = planParallelism({ ...AUTO, dumpJobs: 8 }, 64, { available: 30 }, PLENTY);
    assert.equal(p.dumpJobs, 8);
    // p × 10 + 18 <= 30  →  p = 1
    assert.equal(p.dumpParallel, 1);
  });

  it('a side-specific parallel wins over --max-parallel and is kept', () => {
    const p = planParallelism({ ...AUTO, maxParallel: 2, restoreParallel: 5 }, 64, { available: 10_000 }, { available: 30 });
    assert.equal(p.dumpParallel, 2);
    assert.equal(p.restoreParallel, 5);
    // 5 × (2 + j) + 18 <= 30: not even j = 1 fits; explicit parallel kept, jobs stop at 1
    assert.equal(p.restoreJobs, 1);
  });
});

describe('parseSize', () => {
  it('reads PostgreSQL-style sizes (powers of 1024) and plain bytes', () => {
    assert.equal(parseSize('256MB'), 256 * 1024 ** 2);
    assert.equal(parseSize('1GB'), 1024 ** 3);
    assert.equal(parseSize('2TB'), 2 * 1024 ** 4);
    assert.equal(parseSize('8kB'), 8192);
    assert.equal(parseSize('100'), 100);
    assert.equal(parseSize('100B'), 100);
    assert.equal(parseSize(' 64 MB '), 64 * 1024 ** 2);
  });

  it('off means never', () => {
    assert.equal(parseSize('off'), null);
  });

  it('rejects other units, fractions, negatives and zero with the accepted form', () => {
    for (const bad of ['256mb', '1.5GB', '-1MB', '10 MiB', 'lots', '', '0', '0MB']) {
      assert.throws(() => parseSize(bad), /B, kB, MB, GB or TB|at least 1 byte/, bad);
    }
  });

  it('--split-table-size reaches the options, and a bad one is a usage error naming the flag', () => {
    assert.equal(resolveOptions({ toHost: 't', splitTableSize: '1kB' }, ENV).splitTableBytes, 1024);
    assert.equal(resolveOptions({ toHost: 't', splitTableSize: 'off' }, ENV).splitTableBytes, null);
    const err = usageError(() => resolveOptions({ toHost: 't', splitTableSize: '12 parsecs' }, ENV));
    assert.match(err.message, /--split-table-size: "12 parsecs" is not a size/);
  });
});
