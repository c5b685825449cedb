/**
 * Where the output goes (real servers, the CLI as a subprocess): --log-file keeps every event with a
 * timestamp and the client programs' stderr lines, never a password; stdout holds only the summary or
 * the JSON report, progress goes to stderr; NO_COLOR and --no-color leave no escape sequence, on a
 * terminal too.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import * as fs from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { test } from 'node:test';
import { CLI, NODE, REPO_ROOT } from './cli.ts';
import { PG_BIN, cliEnv, migrateArgs, runCli } from './delayed-helpers.ts';
import { fixtures } from './safety-helpers.ts';
import { progressFromRows, sampleSql } from '../../src/pipeline/sampler.ts';

const { setUp, tempDir } = fixtures();
const ESC = '\u001b';

/**
 * Client programs that are the system's, but pg_dump first writes a line to stderr holding the
 * passfile's line (its password): the log must keep the line and mask the password.
 */
async function noisyBinDir(dir: string): Promise<string> {
  for (const p of ['pg_restore', 'pg_dumpall', 'psql']) await fs.symlink(path.join(PG_BIN, p), path.join(dir, p));
  const wrapper = `#!/bin/sh
case "$*" in *--version*) ;; *) echo "wrapper-note: passfile says $(head -n 1 "$PGPASSFILE" 2>/dev/null)" >&2 ;; esac
exec ${path.join(PG_BIN, 'pg_dump')} "$@"
`;
  await fs.writeFile(path.join(dir, 'pg_dump'), wrapper, { mode: 0o755 });
  return dir;
}

/** Runs the CLI under a pseudo-terminal (script(1)): stdout and stderr are a terminal, as an operator's. */
async function onTerminal(args: string[], env: Record<string, string>): Promise<string> {
  const quote = (s: string): string => `'${s.replaceAll("'", `'\\''`)}'`;
  const cmd = [NODE, CLI, ...args].map(quote).join(' ');
  const clean: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env))
    if (v !== undefined && !k.startsWith('PG_MIGRATE_') && !/^PG[A-Z]+$/.test(k) && k !== 'NO_COLOR') clean[k] = v;
  const r = await promisify(execFile)('script', ['-qefc', cmd, '/dev/null'], { cwd: REPO_ROOT, env: { ...clean, TERM: 'xterm', ...env }, timeout: 120_000 });
  return r.stdout;
}

test('--log-file, stdout against stderr, --json, NO_COLOR and --no-color', async () => {
  const { src, dst, ws } = await setUp('output');
  await src.query('create database app');
  await src.query('create table items (id int primary key, v text); insert into items select g, md5(g::text) from generate_series(1, 1000) g', [], 'app');
  const bin = await noisyBinDir(await tempDir('bin'));
  const log = path.join(await tempDir('log'), 'run.log');
  await fs.writeFile(log, 'an earlier line\n', { mode: 0o600 });
  const args = migrateArgs(src, dst, ws, ['--pg-bin-dir', bin, '--data-path', 'files', '--log-file', log]);

  // 1. --json: stdout is the JSON report and nothing else; progress went to stderr.
  const first = await runCli([...args, '--json'], cliEnv(src, dst));
  assert.equal(first.code, 0, first.output);
  const report = JSON.parse(first.stdout) as {
    tool: { name: string; version: string };
    startedAt: string;
    endedAt: string;
    servers: { source: { version: string; systemIdentifier: string; host: string }; target: { version: string; systemIdentifier: string; port: number } };
    databases: { name: string; status: string; tables: { table: string; phase: string; method: string; source: number; target: number }[] }[];
  };
  assert.equal(report.tool.name, 'pg-migrate');
  assert.match(report.tool.version, /^\d+\.\d+\.\d+/);
  assert.ok(Date.parse(report.startedAt) <= Date.parse(report.endedAt), `${report.startedAt} .. ${report.endedAt}`);
  assert.match(report.servers.source.version, /^PostgreSQL 15/);
  assert.match(report.servers.target.systemIdentifier, /^\d+$/);
  assert.notEqual(report.servers.source.systemIdentifier, report.servers.target.systemIdentifier);
  assert.equal(report.servers.target.port, dst.port);
  const app = report.databases.find((d) => d.name === 'app');
  assert.equal(app?.status, 'verified', first.stdout);
  const items = app.tables.find((t) => t.table.includes('items'));
  assert.ok(items, JSON.stringify(app.tables));
  assert.deepEqual({ ...items, table: undefined }, { table: undefined, phase: 'regular', method: 'count', source: 1000, target: 1000 });
  assert.match(first.stderr, /\[app\] restoring/, first.output);
  assert.doesNotMatch(first.stdout, /\[app\]|preflight: start/);

  // The log: appended to, every line timestamped, the events and pg_dump's stderr line, no password.
  const text = await fs.readFile(log, 'utf8');
  const lines = text.trimEnd().split('\n');
  assert.equal(lines[0], 'an earlier line', 'opened in append mode');
  for (const l of lines.slice(1)) assert.match(l, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z /, l);
  assert.match(text, / preflight: start\n/);
  assert.match(text, / \[app\] dumping/);
  assert.match(text, / \[app\] verified/);
  assert.match(text, / pg_dump\[\d+\] stderr: wrapper-note: passfile says .*:\*{3}$/m);
  assert.match(text, / finished with exit code 0/);
  assert.ok(!text.includes(dst.password), `the target's password is in the log:\n${text}`);
  assert.ok(!text.includes(src.password), `the source's password is in the log:\n${text}`);

  // 2. The summary on stdout, compact, with no timestamped progress line and no escape sequence.
  const newLog = path.join(path.dirname(log), 'new.log');
  const second = await runCli([...args, '--no-color', '--log-file', newLog], cliEnv(src, dst));
  assert.equal(second.code, 0, second.output);
  assert.equal((await fs.stat(newLog)).mode & 0o777, 0o600, 'a new log file is readable by its owner only');
  assert.match(second.stdout, /1 of 1 databases verified/);
  assert.doesNotMatch(second.stdout, /^\d{4}-\d\d-\d\dT/m, 'no progress line on stdout');
  assert.match(second.stderr, /^\d{4}-\d\d-\d\dT.* preflight: start/m);

  // The sampler's one query runs on the server (its errors are ignored in a run, so it is checked here).
  const rows = await dst.query(sampleSql(15), [['app', 'nosuchdb'], 'pg-migrate/test']);
  const progress = progressFromRows(rows, new Map([['app', 1024 ** 3]]));
  assert.ok((progress.get('app')?.targetBytes ?? 0) > 0, JSON.stringify(rows));
  assert.ok(rows.some((r: { kind: string }) => r.kind === 'empty'));

  // 3. On a terminal: colour by default; none with NO_COLOR or --no-color.
  const plain = [...args, '--progress', 'plain'];
  const coloured = await onTerminal(plain, cliEnv(src, dst));
  assert.ok(coloured.includes(`${ESC}[`), `colour expected on a terminal:\n${coloured}`);
  assert.match(coloured, /1 of 1 databases verified/);
  for (const [how, extra, env] of [
    ['NO_COLOR', [], { NO_COLOR: '1' }],
    ['--no-color', ['--no-color'], {}],
  ] as const) {
    const out = await onTerminal([...plain, ...extra], { ...cliEnv(src, dst), ...env });
    assert.match(out, /1 of 1 databases verified/, out);
    assert.ok(!out.includes(ESC), `${how}: an escape sequence in:\n${JSON.stringify(out)}`);
  }

  // 4. The live display (listr2) on a terminal: the final block stays; colour (SGR sequences) by default,
  // none with --no-color or NO_COLOR (only the cursor movements that redraw the block).
  const sgr = new RegExp(`${ESC}\\[[0-9;]*m`);
  const live = [...args, '--progress', 'tty'];
  const liveColoured = await onTerminal(live, cliEnv(src, dst));
  assert.match(liveColoured, /1\/1 done, 0 in flight, 0 queued, 0 failed/, liveColoured);
  assert.match(liveColoured, /preflight: start/);
  assert.ok(sgr.test(liveColoured), `colour expected in the live display:\n${JSON.stringify(liveColoured)}`);
  for (const [how, extra, env] of [
    ['NO_COLOR', [], { NO_COLOR: '1' }],
    ['--no-color', ['--no-color'], {}],
  ] as const) {
    const out = await onTerminal([...live, ...extra], { ...cliEnv(src, dst), ...env });
    assert.match(out, /1 of 1 databases verified/, out);
    assert.match(out, /1\/1 done, 0 in flight, 0 queued, 0 failed/, out);
    assert.ok(!sgr.test(out), `${how}: a colour sequence in the live display:\n${JSON.stringify(out)}`);
  }
});
