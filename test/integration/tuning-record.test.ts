/**
 * The tuning's record on the target names the run that applied it: a run reverts only its own (real
 * server). A run that lost its target lock while another took the target must not undo that run's tuning.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { startCluster } from '../harness/cluster.ts';
import { applyTuning, revertTuning, targetRecord } from '../../src/pipeline/tune.ts';
import { StateStore } from '../../src/state/store.ts';

const cleanups: (() => Promise<void>)[] = [];
after(async () => {
  for (const c of cleanups) await c();
});

test("revertTuning leaves another run's record (and its settings) alone, and reverts its own", async () => {
  const dst = await startCluster({ name: 'tune-record' });
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'pgm-tune-record-'));
  cleanups.push(
    () => dst.stop(),
    () => fs.rm(dir, { recursive: true, force: true }),
  );
  const store = new StateStore(dir);
  await store.init();
  const identity = { host: dst.host, port: dst.port, systemIdentifier: dst.systemIdentifier };
  await dst.withClient(async (c) => {
    await applyTuning(c, store, identity, { log_min_duration_statement: '12345' }, 'pg-migrate/other-run');
    assert.equal(await revertTuning(c, store, 'pg-migrate/this-run'), 'another run', "not this run's tuning");
    assert.equal((await targetRecord(c))?.by, 'pg-migrate/other-run', "the other run's record stays");
    assert.equal(await revertTuning(c, store, 'pg-migrate/other-run'), 'reverted');
    assert.equal(await revertTuning(c, store, 'pg-migrate/other-run'), 'none');
    assert.equal(await targetRecord(c), undefined);
  });
  const [s] = await dst.query<{ v: string }>("select current_setting('log_min_duration_statement') as v");
  assert.equal(s!.v, '-1', 'put back by the run that applied it');
});
