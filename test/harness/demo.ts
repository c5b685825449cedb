/**
 * `npm run demo`: two throwaway PostgreSQL servers on this machine, sample data on the first, a full
 * migration onto the second with the live progress and the summary, then both servers are removed.
 * Extra arguments are passed to pg-migrate (e.g. `npm run demo -- --delay-table-data analytics.events`).
 */
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { startCluster } from './cluster.ts';
import { seedSample } from './seed.ts';

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const binDir = process.env.PGM_TEST_BIN ?? '/usr/lib/postgresql/15/bin';

async function main(): Promise<number> {
  process.stdout.write('starting two throwaway PostgreSQL servers...\n');
  const [source, target] = await Promise.all([startCluster({ name: 'demo-source' }), startCluster({ name: 'demo-target' })]);
  const work = await mkdtemp(path.join(os.tmpdir(), 'pg-migrate-demo-'));
  try {
    process.stdout.write(`source 127.0.0.1:${source.port}, target 127.0.0.1:${target.port}; seeding sample databases...\n`);
    const seeded = await seedSample(source, { scale: 40 });
    process.stdout.write(`databases: ${seeded.databases.join(', ')} (and ${seeded.noConnectDatabases.join(', ')}, which allows no connections)\n\n`);
    const args = [
      path.join(repo, 'dist', 'src', 'cli.js'),
      '--from-host',
      '127.0.0.1',
      '--from-port',
      String(source.port),
      '--to-host',
      '127.0.0.1',
      '--to-port',
      String(target.port),
      '--pg-bin-dir',
      binDir,
      '--state-dir',
      work,
      '--dump-root',
      path.join(work, 'pg_dumps'),
      ...process.argv.slice(2),
    ];
    process.stdout.write(`pg-migrate ${args.slice(1).join(' ')}\n\n`);
    const code = await new Promise<number>((resolve) => {
      const child = spawn(process.execPath, args, {
        stdio: 'inherit',
        // Passwords travel in the environment, never on the command line.
        env: { ...process.env, PG_MIGRATE_FROM_PASS: source.password, PG_MIGRATE_TO_PASS: target.password },
      });
      child.on('exit', (c, sig) => {
        resolve(c ?? (sig ? 130 : 1));
      });
    });
    process.stdout.write(
      `\npg-migrate exited with ${code}${code === 1 ? ' (expected: the sample has a database that allows no connections, reported as not migrated)' : ''}\n`,
    );
    return code === 0 || code === 1 ? 0 : code;
  } finally {
    await Promise.all([source.stop(), target.stop()]);
    await rm(work, { recursive: true, force: true });
  }
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`demo failed: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  },
);
