import { test } from 'node:test';
import * as fs from 'node:fs/promises';
import { cliEnv, migrateArgs, runCli } from './delayed-helpers.ts';
import { fixtures } from './safety-helpers.ts';

const { setUp } = fixtures();
test('probe', async () => {
  const { src, dst, ws } = await setUp('probe');
  await src.query('create database big');
  await src.query('create table t (id int primary key, v text); insert into t select g, md5(g::text) from generate_series(1, 1500000) g', [], 'big');
  const r = await runCli(migrateArgs(src, dst, ws, ['--data-path', 'files', '--progress', 'tty']), cliEnv(src, dst), 300_000);
  await fs.writeFile('/tmp/uiprobe/stderr.txt', r.stderr);
  await fs.writeFile('/tmp/uiprobe/stdout.txt', r.stdout);
});
