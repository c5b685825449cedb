/**
 * Preflight: every problem stops the run with exit 3 before anything changes, with one message on
 * stderr that names the problem and its fix. Usage errors exit 2.
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { freePort, startCluster, type Cluster } from '../harness/cluster.ts';
import {
  autoConf,
  baseArgs,
  describeRun,
  makeDirs,
  markersDir,
  passwordEnv,
  PG15_BIN,
  removeDirs,
  runCli,
  stopAll,
  userDatabases,
  type CliResult,
  type Dirs,
} from './cli.ts';

let src: Cluster | undefined;
let dst: Cluster | undefined;
const allDirs: Dirs[] = [];

before(async () => {
  [src, dst] = await Promise.all([startCluster({ name: 'pf-src' }), startCluster({ name: 'pf-dst' })]);
  await src.query('CREATE DATABASE tiny');
  await src.query('CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 100) g', undefined, 'tiny');
  await dst.query(`ALTER SYSTEM SET maintenance_work_mem = '77MB'`);
  await dst.query('select pg_reload_conf()');
});

after(async () => {
  await stopAll([src, dst]);
  await Promise.all(allDirs.map(removeDirs));
});

/** The CLI as a user runs it: passwords in the environment, not on the command line. */
function runEnv(args: string[], env: Record<string, string> = {}): Promise<CliResult> {
  return runCli(args, { env: { ...passwordEnv(src!, dst!), ...env } });
}

/** Connection, state and dump arguments without passwords (see runEnv). */
const argsOf = (d: Dirs, opts: { pgBinDir?: string } = {}): string[] => baseArgs(src!, dst!, d, { passwords: 'env', ...opts });

async function dirs(): Promise<Dirs> {
  const d = await makeDirs('pf');
  allDirs.push(d);
  return d;
}

/**
 * Runs `fn` (which runs the CLI) and asserts it exited 3 with one preflight message matching every
 * pattern, and that the target is exactly as before: same databases, same postgresql.auto.conf, no
 * tuning backup, no run left behind.
 */
async function expectPreflightFailure(d: Dirs, run: () => Promise<CliResult>, patterns: RegExp[]): Promise<CliResult> {
  const dbsBefore = await userDatabases(dst!);
  const confBefore = await autoConf(dst!);
  const r = await run();
  assert.equal(r.exitCode, 3, describeRun(r));
  const lines = r.stderr.trim().split('\n');
  assert.equal(lines.length, 1, `one message on stderr\n${describeRun(r)}`);
  assert.match(lines[0]!, /^pg-migrate: preflight failed, nothing was changed: /, describeRun(r));
  for (const p of patterns) assert.match(lines[0]!, p, describeRun(r));
  assert.doesNotMatch(r.stdout, /tuning: start|globals: start|\] (dumping|streaming)/, describeRun(r));
  assert.deepEqual(await userDatabases(dst!), dbsBefore, 'no database created on the target');
  assert.deepEqual(await autoConf(dst!), confBefore, 'target postgresql.auto.conf unchanged');
  assert.ok(!existsSync(path.join(markersDir(d), 'tuning.json')), 'no tuning.json left');
  assert.ok(!existsSync(path.join(markersDir(d), 'globals.done')), 'no globals marker');
  return r;
}

describe('preflight refuses, exit 3, nothing changed', () => {
  test('unreachable source', async () => {
    const d = await dirs();
    const deadPort = await freePort();
    const args = argsOf(d).map((a) => (a === String(src!.port) ? String(deadPort) : a));
    await expectPreflightFailure(d, () => runEnv(args), [
      new RegExp(`source server \\(postgres@127\\.0\\.0\\.1:${deadPort}/postgres`),
      /refused/,
      /--from-host|--from-port/,
    ]);
  });

  test('wrong target password', async () => {
    const d = await dirs();
    const env = { ...passwordEnv(src!, dst!), PG_MIGRATE_TO_PASS: 'definitely-wrong' };
    await expectPreflightFailure(d, () => runCli(argsOf(d), { env }), [
      new RegExp(`target server \\(postgres@127\\.0\\.0\\.1:${dst!.port}/postgres`),
      /password/,
      /--to-pass|PG_MIGRATE_TO_PASS/,
    ]);
  });

  test('target user is not a superuser and may not give the objects their owner', async () => {
    const d = await dirs();
    await dst!.query(`CREATE ROLE plain_user LOGIN PASSWORD 'plain_pw' CREATEDB`);
    try {
      const args = [...argsOf(d), '--to-user', 'plain_user'];
      await expectPreflightFailure(d, () => runEnv(args, { PG_MIGRATE_TO_PASS: 'plain_pw' }), [
        /role postgres owns objects in tiny on the source and is a superuser on the target, which "plain_user" \(not a superuser\) may not make an owner/,
        /REASSIGN OWNED BY postgres/,
        /--to-user/,
      ]);
    } finally {
      await dst!.query('DROP ROLE plain_user');
    }
  });

  test('a database already exists on the target and this migration did not create it', async () => {
    const d = await dirs();
    await dst!.query('CREATE DATABASE tiny');
    try {
      const r = await expectPreflightFailure(d, () => runEnv(argsOf(d)), [/"tiny"/, /already exists on the target/, /DROP DATABASE|--exclude-db/]);
      assert.doesNotMatch(r.stderr, /not a superuser|refused/);
      // The existing database was left alone.
      assert.ok((await userDatabases(dst!)).includes('tiny'));
    } finally {
      await dst!.query('DROP DATABASE tiny');
    }
  });

  test("the source's postgres holds objects whose names the target's own postgres already has", async () => {
    const d = await dirs();
    await src!.query('CREATE TABLE app_settings (k text); CREATE SCHEMA tools; CREATE FUNCTION tools.f(int) RETURNS int LANGUAGE sql AS $$ select $1 $$');
    await dst!.query('CREATE TABLE app_settings (x int); CREATE SCHEMA tools; INSERT INTO app_settings VALUES (42)');
    try {
      await expectPreflightFailure(d, () => runEnv(argsOf(d)), [
        /restored into the target's own postgres/,
        /relation public\.app_settings/,
        /schema tools/,
        /--exclude-db postgres/,
      ]);
      // The target's own objects were left as they were.
      assert.deepEqual(await dst!.query('select x from app_settings'), [{ x: 42 }]);
    } finally {
      await src!.query('DROP TABLE app_settings; DROP SCHEMA tools CASCADE');
      await dst!.query('DROP TABLE app_settings; DROP SCHEMA tools');
    }
  });

  test('explicit --dump-jobs that do not fit max_connections', async () => {
    const d = await dirs();
    const [row] = await src!.query<{ max: string }>(`select current_setting('max_connections') as max`);
    const max = row!.max;
    assert.equal(max, '200');
    await expectPreflightFailure(d, () => runEnv([...argsOf(d), '--dump-jobs', '200']), [/source/, /max_connections 200/, /--dump-jobs/]);
  });

  test('a --pg-bin-dir without psql (the range copies run in it)', async () => {
    const d = await dirs();
    const bin = path.join(d.dumpRoot, 'bin-without-psql');
    await fs.mkdir(bin, { recursive: true });
    for (const tool of ['pg_dump', 'pg_dumpall', 'pg_restore']) await fs.symlink(path.join(PG15_BIN, tool), path.join(bin, tool));
    await expectPreflightFailure(d, () => runEnv(argsOf(d, { pgBinDir: bin })), [/psql is not in --pg-bin-dir/, /--pg-bin-dir/]);
  });
});

test('usage error: missing --to-host exits 2 and touches nothing', async () => {
  const d = await dirs();
  const args = baseArgs(src!, dst!, d).filter((a, i, all) => a !== '--to-host' && all[i - 1] !== '--to-host');
  assert.ok(!args.includes('--to-host'));
  const confBefore = await autoConf(dst!);
  const r = await runCli(args);
  assert.equal(r.exitCode, 2, describeRun(r));
  assert.match(r.stderr, /to-host/, describeRun(r));
  assert.equal(r.stdout, '', describeRun(r));
  assert.deepEqual(await autoConf(dst!), confBefore);
  assert.ok(!existsSync(markersDir(d)), 'no state written');
});
