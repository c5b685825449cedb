/**
 * Helpers of the connection tests: a --pg-bin-dir of wrappers that record how each client program was
 * started (arguments, PGPASSFILE and its mode, the names of PG* variables), a search of files for a
 * secret, and small source databases.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import * as fs from 'node:fs/promises';
import path from 'node:path';
import type { Cluster } from '../harness/cluster.ts';
import { CLI, describeRun, NODE, PG15_BIN, REPO_ROOT, type CliResult } from './cli.ts';

/** One start of a client program, as its wrapper saw it. */
export interface ClientCall {
  tool: string;
  args: string[];
  /** PGPASSFILE as the program got it ('' when unset). */
  passfile: string;
  /** Octal mode of that file ('' when unset or missing). */
  passfileMode: string;
  /** Names of the environment variables starting with PG. */
  pgVariables: string[];
}

/**
 * A bin directory whose pg_dump, pg_dumpall, pg_restore and psql record each call in `<dir>/calls/`
 * (one file per call), then exec the PostgreSQL 15 program with the same arguments.
 */
export async function recordingBinDir(dir: string): Promise<{ binDir: string; calls: () => Promise<ClientCall[]> }> {
  const binDir = path.join(dir, 'bin');
  const callDir = path.join(dir, 'calls');
  await fs.mkdir(binDir, { recursive: true });
  await fs.mkdir(callDir, { recursive: true });
  for (const tool of ['pg_dump', 'pg_dumpall', 'pg_restore', 'psql']) {
    const script = `#!/bin/sh
f=$(mktemp '${callDir}/call.XXXXXX')
{
  echo '${tool}'
  echo "\${PGPASSFILE:-}"
  if [ -n "\${PGPASSFILE:-}" ] && [ -e "$PGPASSFILE" ]; then stat -c %a "$PGPASSFILE"; else echo; fi
  env | sed -n 's/^\\(PG[A-Za-z_]*\\)=.*/\\1/p' | tr '\\n' ' '; echo
  for a in "$@"; do printf '%s\\n' "$a"; done
} > "$f"
exec '${path.join(PG15_BIN, tool)}' "$@"
`;
    await fs.writeFile(path.join(binDir, tool), script, { mode: 0o755 });
  }
  const calls = async (): Promise<ClientCall[]> => {
    const out: ClientCall[] = [];
    for (const name of await fs.readdir(callDir)) {
      const [tool = '', passfile = '', passfileMode = '', vars = '', ...args] = (await fs.readFile(path.join(callDir, name), 'utf8')).split('\n');
      out.push({ tool, passfile, passfileMode, pgVariables: vars.split(' ').filter(Boolean), args: args.slice(0, -1) });
    }
    return out;
  };
  return { binDir, calls };
}

/** Every file under `root` (recursively) whose content includes `needle`. */
export async function filesContaining(root: string, needle: string): Promise<string[]> {
  const found: string[] = [];
  let entries;
  try {
    entries = await fs.readdir(root, { withFileTypes: true, recursive: true });
  } catch {
    return found;
  }
  for (const e of entries) {
    if (!e.isFile()) continue;
    const file = path.join(e.parentPath, e.name);
    if ((await fs.readFile(file)).includes(needle)) found.push(file);
  }
  return found;
}

/**
 * No secret in the run's output, in a file under `roots`, or on a client program's command line; the
 * client programs that connect get it from a private (0600) passfile, removed after the run, and no
 * other PG* variable (PGPASSWORD, PG_MIGRATE_*). Returns those calls.
 */
export async function assertNoSecrets(r: CliResult, calls: ClientCall[], secrets: string[], roots: string[]): Promise<ClientCall[]> {
  for (const secret of secrets) {
    assert.ok(!r.stdout.includes(secret) && !r.stderr.includes(secret), `a password in the output\n${describeRun(r)}`);
    for (const root of roots) assert.deepEqual(await filesContaining(root, secret), [], `a password in ${root}`);
  }
  const connected = calls.filter((c) => c.args.some((a) => a.startsWith('--dbname=')));
  const tools = connected.map((c) => c.tool);
  assert.ok(tools.includes('pg_dump') && tools.includes('pg_restore'), `client programs seen: ${tools.join(', ')}`);
  for (const c of connected) {
    const what = `${c.tool} ${c.args.join(' ')}`;
    for (const secret of secrets) assert.ok(!c.args.some((a) => a.includes(secret)), `a password on the command line: ${what}`);
    assert.ok(!c.args.some((a) => a.includes('password=')), what);
    assert.equal(c.passfileMode, '600', `a private passfile for ${what}`);
    assert.deepEqual(c.pgVariables, ['PGPASSFILE'], `no other PG* variable for ${what}`);
    assert.equal(existsSync(c.passfile), false, `the passfile ${c.passfile} is removed after the run`);
  }
  return connected;
}

/** Small databases on the source, one table of `rows` rows each. */
export async function createDatabases(src: Cluster, names: string[], rows = 1000): Promise<void> {
  for (const db of names) {
    await src.query(`create database ${db}`);
    await src.query(`create table t (id int primary key, v text); insert into t select g, md5(g::text) from generate_series(1, ${String(rows)}) g`, [], db);
  }
}

/** A libpq URI of a harness cluster (user postgres by default), with extra query parameters; every part percent-encoded. */
export function uriOf(c: Cluster, params: Record<string, string>, opts: { host?: string; user?: string; password?: string } = {}): string {
  const user = encodeURIComponent(opts.user ?? 'postgres');
  const auth = opts.password === undefined ? user : `${user}:${encodeURIComponent(opts.password)}`;
  const query = Object.entries(params)
    .map(([k, v]) => `${k}=${encodeURIComponent(v)}`)
    .join('&');
  return `postgresql://${auth}@${opts.host ?? '127.0.0.1'}:${String(c.port)}/postgres${query === '' ? '' : `?${query}`}`;
}

/** Why the CLI cannot be run on a terminal here (no util-linux `script`), or false. */
export const noTerminal: string | false = spawnSync('script', ['--version']).status === 0 ? false : 'no `script` (util-linux) to give the CLI a terminal';

/**
 * Runs the CLI on a terminal (`script` makes one) with `env` only, answering each password question
 * with answer(question) as the operator would type it. stdout and stderr arrive together, as on a terminal.
 */
export function runOnTerminal(args: string[], env: Record<string, string>, answer: (question: string) => string): Promise<CliResult & { questions: string[] }> {
  const quote = (a: string): string => `'${a.replaceAll("'", "'\\''")}'`;
  const command = [NODE, CLI, ...args, '--progress', 'plain'].map(quote).join(' ');
  const child = spawn('script', ['-q', '-e', '-c', command, '/dev/null'], { cwd: REPO_ROOT, env: { PATH: process.env.PATH, TERM: 'dumb', ...env } });
  const t0 = performance.now();
  const questions: string[] = [];
  let stdout = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => {
    stdout += d;
    for (const [question] of [...stdout.matchAll(/Password for user [^\n]*?: /g)].slice(questions.length)) {
      questions.push(question);
      setTimeout(() => child.stdin.write(`${answer(question)}\r`), 200);
    }
  });
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`no exit within 120 s:\n${stdout}`));
    }, 120_000);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ exitCode: code, signal, stdout, stderr: '', ms: Math.round(performance.now() - t0), questions });
    });
  });
}
