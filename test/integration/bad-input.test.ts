/**
 * A new user's bad input, run as the CLI: each mistake gets one clear message naming the fix and the
 * documented exit code, no stack trace, and nothing changes on a server.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, test } from 'node:test';
import { runCli } from './delayed-helpers.ts';

const dirs: string[] = [];
afterEach(async () => {
  await Promise.all(dirs.splice(0).map((d) => fs.rm(d, { recursive: true, force: true })));
});
async function tempDir(label: string): Promise<string> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), `pgm-bad-${label}-`));
  dirs.push(dir);
  return dir;
}

/** No stack trace, no internal error wording. */
function assertNoTrace(output: string): void {
  assert.doesNotMatch(output, /\n\s+at .+:\d+:\d+/, output);
  assert.doesNotMatch(output, /unexpected error/, output);
}

test("a PG_MIGRATE_* variable of another command's option (the container's PG_MIGRATE_DUMP_ROOT) does not stop status; one that names no option does", async () => {
  const dir = await tempDir('env');
  const env = { PG_MIGRATE_STATE_DIR: dir, PG_MIGRATE_DUMP_ROOT: path.join(dir, 'dumps'), PG_MIGRATE_DUMP_JOBS: '2' };
  const r = await runCli(['status'], env);
  assert.equal(r.code, 0, r.output);
  assert.match(r.stdout, new RegExp(`no migration state in ${dir}/pg_migrate_state`), r.output);
  const typo = await runCli(['status'], { ...env, PG_MIGRATE_JOBS: '3' });
  assert.equal(typo.code, 2, typo.output);
  assert.match(typo.stderr, /unknown option from the environment variable PG_MIGRATE_JOBS/, typo.output);
  // On the command line, an option the command does not take is still refused.
  const flag = await runCli(['status', '--dump-root', dir], env);
  assert.equal(flag.code, 2, flag.output);
  assert.match(flag.stderr, /unknown option --dump-root/, flag.output);
  assertNoTrace(r.output + typo.output + flag.output);
});
