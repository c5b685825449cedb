/**
 * versionProblems (#12): which combinations of client programs, source and target stop the run in
 * preflight, and which only warn.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { OLDEST_TARGET_MAJOR, versionProblems } from '../../src/proc/tools.ts';

/** The tools' version as preflight passes it: the version and the directory of pg_dump. */
const tools = (major: number): string => `${String(major)}.4 in /usr/lib/postgresql/${String(major)}/bin`;

describe('versionProblems', () => {
  it('client programs of 17 or 18 with a target of 16 or older: a problem naming transaction_timeout and --pg-bin-dir', () => {
    for (const clients of [17, 18]) {
      for (const [source, target] of [
        [15, 16],
        [16, 16],
        [12, 14],
        [10, 10],
        [9.6, 13],
      ] as const) {
        const v = versionProblems(clients, tools(clients), source, target);
        const what = `clients ${String(clients)}, source ${String(source)}, target ${String(target)}: ${JSON.stringify(v)}`;
        assert.equal(v.problems.length, 1, what);
        assert.match(v.problems[0]!, /transaction_timeout/, what);
        assert.match(v.problems[0]!, /--pg-bin-dir/, what);
        assert.match(v.problems[0]!, new RegExp(`PostgreSQL ${String(target)}\\b`), `names the target's version: ${what}`);
      }
    }
  });

  it('client programs of 17 or 18, a source of 17 or newer and an older target: a problem naming transaction_timeout (no older pg_dump can read the source)', () => {
    for (const [clients, source, target] of [
      [17, 17, 16],
      [18, 18, 15],
      [18, 17, 14],
    ] as const) {
      const v = versionProblems(clients, tools(clients), source, target);
      const what = `clients ${String(clients)}, source ${String(source)}, target ${String(target)}: ${JSON.stringify(v)}`;
      assert.equal(v.problems.length, 1, what);
      assert.match(v.problems[0]!, /transaction_timeout/, what);
      assert.match(v.problems[0]!, /older major version is not supported/, what);
    }
  });

  it('client programs of 17 or 18 with a target of 17 or newer: no problem', () => {
    for (const [clients, source, target] of [
      [17, 15, 17],
      [18, 15, 18],
      [18, 17, 18],
      [17, 10, 17],
    ] as const) {
      const v = versionProblems(clients, tools(clients), source, target);
      assert.deepEqual(v.problems, [], `clients ${String(clients)}, source ${String(source)}, target ${String(target)}: ${JSON.stringify(v)}`);
    }
  });

  it('client programs of 16, source 15, target 14: no problem, warnings only (pg_restore newer than the target; a downgrade)', () => {
    const v = versionProblems(16, tools(16), 15, 14);
    assert.deepEqual(v.problems, [], JSON.stringify(v));
    assert.ok(v.warnings.length > 0, JSON.stringify(v));
    assert.ok(
      v.warnings.some((w) => /pg_restore 16\.4 .*is newer than the target server \(14\)/.test(w)),
      JSON.stringify(v),
    );
    assert.ok(
      v.warnings.some((w) => w.includes('the target (14) is older than the source (15)')),
      JSON.stringify(v),
    );
  });

  it('client programs older than the source: a problem naming the source version and --pg-bin-dir', () => {
    for (const [clients, source, target] of [
      [15, 16, 16],
      [15, 18, 18],
      [12, 13, 15],
    ] as const) {
      const v = versionProblems(clients, tools(clients), source, target);
      const what = `clients ${String(clients)}, source ${String(source)}, target ${String(target)}: ${JSON.stringify(v)}`;
      assert.equal(v.problems.length, 1, what);
      assert.match(v.problems[0]!, /older than the source server/, what);
      assert.match(v.problems[0]!, new RegExp(`PostgreSQL ${String(source)} or newer`), what);
      assert.match(v.problems[0]!, /--pg-bin-dir/, what);
    }
  });

  it(`a target older than ${String(OLDEST_TARGET_MAJOR)} (9.6): a problem naming the oldest target`, () => {
    assert.equal(OLDEST_TARGET_MAJOR, 10);
    for (const [clients, source] of [
      [15, 9.6],
      [15, 9.5],
      [16, 15],
    ] as const) {
      const v = versionProblems(clients, tools(clients), source, 9.6);
      const what = `clients ${String(clients)}, source ${String(source)}, target 9.6: ${JSON.stringify(v)}`;
      assert.ok(
        v.problems.some((p) => p.includes('the target runs PostgreSQL 9.6; pg-migrate migrates onto PostgreSQL 10 or newer')),
        what,
      );
    }
  });

  it('the same major version everywhere, or newer clients and target than the source: nothing at all', () => {
    for (const [clients, source, target] of [
      [15, 15, 15],
      [15, 10, 15],
      [15, 12, 15],
      [16, 9.6, 16],
      [18, 18, 18],
    ] as const) {
      const v = versionProblems(clients, tools(clients), source, target);
      assert.deepEqual(v, { problems: [], warnings: [] }, `clients ${String(clients)}, source ${String(source)}, target ${String(target)}`);
    }
  });
});
