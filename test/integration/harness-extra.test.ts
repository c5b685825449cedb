/**
 * The harness extras against real servers: PostgreSQL 10, TLS (hostssl only, CA files), extra
 * pg_hba.conf lines, logical-replication settings, restart() / reload(), libpq service files.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import * as fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import pg from 'pg';
import { startCluster, type Cluster } from '../harness/cluster.ts';
import { writeServiceFile } from '../harness/libpq.ts';
import { dumpRows, seedSample, tableCounts } from '../harness/seed.ts';

const PSQL = path.join(process.env.PGM_TEST_BIN ?? '/usr/lib/postgresql/15/bin', 'psql');

const started: Cluster[] = [];
let v10: Cluster; // PostgreSQL 10, tls (plain TCP still allowed), settings wal_level=logical, an hba reject line
let tls: Cluster; // system (15), tls hostsslOnly, an hba reject line
let logical: Cluster; // 18, logical: true

before(async () => {
  const t0 = Date.now();
  const results = await Promise.allSettled([
    startCluster({ version: '10', name: 'hx10', tls: true, settings: { wal_level: 'logical' }, hba: ['host all blocked 127.0.0.1/32 reject'] }),
    startCluster({ name: 'hxtls', tls: { hostsslOnly: true }, hba: ['hostssl all blocked 127.0.0.1/32 reject'] }),
    startCluster({ version: '18', name: 'hxlogical', logical: true }),
  ]);
  for (const r of results) if (r.status === 'fulfilled') started.push(r.value);
  for (const r of results) if (r.status === 'rejected') throw r.reason;
  [v10, tls, logical] = started as [Cluster, Cluster, Cluster];
  console.log(`3 clusters started in ${Date.now() - t0} ms`);
});

after(async () => {
  await Promise.all(started.map((c) => c.stop()));
});

interface PsqlResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** psql -X -A -t -c sql with only the given PG* variables (none inherited from this process). */
function psql(args: string[], pgEnv: Record<string, string>): Promise<PsqlResult> {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('PG') && v !== undefined) env[k] = v;
  Object.assign(env, { PGCONNECT_TIMEOUT: '10' }, pgEnv);
  return new Promise((resolve) => {
    execFile(PSQL, ['-X', '-A', '-t', ...args], { env, timeout: 30_000 }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : 1) : 0;
      resolve({ code, stdout: stdout.trim(), stderr });
    });
  });
}

const SSL_SQL = 'select ssl from pg_stat_ssl where pid = pg_backend_pid()';

/** A replication connection (walsender, database mode) runs IDENTIFY_SYSTEM and makes a temporary logical slot. */
async function checkReplication(c: Cluster): Promise<void> {
  const client = new pg.Client({ ...c.connectionConfig(), replication: 'database' } as pg.ClientConfig);
  await client.connect();
  try {
    const id = await client.query('IDENTIFY_SYSTEM');
    assert.equal(String(id.rows[0].systemid), c.systemIdentifier);
    assert.equal(id.rows[0].dbname, 'postgres');
    const slot = await client.query('CREATE_REPLICATION_SLOT hx_slot TEMPORARY LOGICAL pgoutput');
    assert.equal(slot.rows[0].slot_name, 'hx_slot');
  } finally {
    await client.end();
  }
}

async function rejectsLogin(cfg: pg.ClientConfig, re: RegExp): Promise<void> {
  const client = new pg.Client(cfg);
  client.on('error', () => undefined);
  await assert.rejects(client.connect(), re);
  await client.end().catch(() => undefined);
}

test('PostgreSQL 10: starts, seeds (same rows as 18), TLS, logical walsender, hba lines', async () => {
  assert.equal(v10.version, '10');
  assert.equal(v10.major, 10);
  const [row] = await v10.query<{ v: string }>("select current_setting('server_version_num') as v");
  assert.match(row!.v, /^10\d{4}$/);
  assert.match(v10.systemIdentifier, /^\d+$/);

  // seedSample on 10 (analytics.events built the PG 10 way) and on 18: same tables, same rows.
  const t0 = Date.now();
  const [seed10, seed18] = await Promise.all([seedSample(v10), seedSample(logical)]);
  console.log(`seeded 10 and 18 in ${Date.now() - t0} ms`);
  assert.deepEqual(seed10, seed18);
  for (const db of seed10.databases) {
    const [c10, c18] = await Promise.all([tableCounts(v10, db), tableCounts(logical, db)]);
    assert.deepEqual([...c10], [...c18], db);
    for (const [table, n] of Object.entries(seed10.expectedCounts[db] ?? {})) assert.equal(c10.get(table), n, `${db} ${table}`);
  }
  const analytics = await tableCounts(v10, 'analytics');
  for (const part of ['events_2024_01', 'events_2024_02', 'events_2024_03', 'events_default']) {
    assert.ok((analytics.get(`public.${part}`) ?? 0) > 0, part);
  }
  for (const [db, table] of [
    ['shop', 'public.orders'],
    ['shop', 'public.customers'],
    ['analytics', 'public.events'],
    ['My "Odd".DB/ñ', '"Sch.ema"."Tab le"'],
  ] as const) {
    assert.equal(await dumpRows(v10, db, table), await dumpRows(logical, db, table), `${db} ${table}`);
  }
  const idx = await v10.query<{ i: string }>("select indexname as i from pg_indexes where tablename like 'events%' order by 1", undefined, 'analytics');
  assert.deepEqual(
    idx.map((r) => r.i),
    [
      'events_2024_01_kind_idx',
      'events_2024_01_pkey',
      'events_2024_02_kind_idx',
      'events_2024_02_pkey',
      'events_2024_03_kind_idx',
      'events_2024_03_pkey',
      'events_default_kind_idx',
      'events_default_pkey',
    ],
  );
  const [ident] = await v10.query<{ a: string }>(
    "select attidentity as a from pg_attribute where attrelid = 'customers'::regclass and attname = 'id'",
    undefined,
    'shop',
  );
  assert.equal(ident!.a, 'd');

  // tls: true (not hostsslOnly): the harness connects with verify-full, plain TCP still works.
  assert.ok(v10.tls && !v10.hostsslOnly && v10.caFile);
  const [ssl] = await v10.query<{ ssl: boolean }>(SSL_SQL);
  assert.equal(ssl!.ssl, true);
  const plain = new pg.Client({ ...v10.connectionConfig(), ssl: false });
  await plain.connect();
  assert.equal((await plain.query(SSL_SQL)).rows[0].ssl, false);
  await plain.end();
  const viaPsql = await psql(['-c', SSL_SQL], v10.psqlEnv());
  assert.equal(viaPsql.code, 0, viaPsql.stderr);
  assert.equal(viaPsql.stdout, 't');

  // wal_level = logical from `settings` alone; the defaults leave room for slots and senders.
  const settings = await v10.query<{ name: string; setting: string }>(
    "select name, setting from pg_settings where name in ('wal_level', 'max_replication_slots', 'max_wal_senders')",
  );
  const s = Object.fromEntries(settings.map((r) => [r.name, r.setting]));
  assert.equal(s.wal_level, 'logical');
  assert.ok(Number(s.max_replication_slots) > 0 && Number(s.max_wal_senders) > 0, JSON.stringify(s));
  await checkReplication(v10);

  // The extra hba line comes first: `blocked` is turned away although its password is right.
  await v10.query("create role blocked login password 'blocked_pw'");
  await rejectsLogin({ ...v10.connectionConfig(), user: 'blocked', password: 'blocked_pw', ssl: false }, /pg_hba\.conf rejects connection/);
  const ok = new pg.Client({ ...v10.connectionConfig(), user: 'postgres2', password: 'postgres2_pw' }); // made by the seed
  await ok.connect();
  await ok.end();
});

test('TLS hostsslOnly: plain TCP refused; verify-full with the CA, require work; the wrong CA fails', async () => {
  assert.ok(tls.tls && tls.hostsslOnly);
  const caFile = tls.caFile!;
  const wrongCaFile = tls.wrongCaFile!;
  for (const f of [caFile, wrongCaFile]) {
    const st = await fs.stat(f);
    assert.equal(st.mode & 0o444, 0o444, `${f} is world-readable`);
    assert.ok(!f.startsWith(tls.baseDir), `${f} is outside baseDir`);
    assert.match(await fs.readFile(f, 'utf8'), /^-----BEGIN CERTIFICATE-----/);
  }
  const keyStat = await fs.stat(path.join(tls.baseDir, 'tls', 'server.key'));
  assert.equal(keyStat.mode & 0o777, 0o600);
  if (process.getuid?.() === 0) {
    const { stdout } = await new Promise<{ stdout: string }>((resolve, reject) =>
      execFile('id', ['-u', 'postgres'], (err, out) => {
        if (err) reject(new Error(err.message));
        else resolve({ stdout: out });
      }),
    );
    assert.equal(keyStat.uid, Number(stdout.trim()), 'server.key belongs to the server user');
  }
  const [settings] = await tls.query<{ ssl: string }>("select current_setting('ssl') as ssl");
  assert.equal(settings!.ssl, 'on');

  // The harness's own client speaks TLS.
  const [own] = await tls.query<{ ssl: boolean }>(SSL_SQL);
  assert.equal(own!.ssl, true);

  // node-postgres without TLS: no hba line matches.
  await rejectsLogin({ ...tls.connectionConfig(), ssl: false }, /no pg_hba\.conf entry/);
  // node-postgres with the wrong CA: the certificate is not trusted.
  const wrongCa = await fs.readFile(wrongCaFile, 'utf8');
  await rejectsLogin({ ...tls.connectionConfig(), ssl: { ca: wrongCa, rejectUnauthorized: true } }, /certificate/i);

  const pw = { PGPASSWORD: tls.password };
  const conn = (extra: string) => `host=127.0.0.1 port=${tls.port} user=postgres dbname=postgres ${extra}`;
  const full = await psql(['-c', SSL_SQL, conn(`sslmode=verify-full sslrootcert=${caFile}`)], pw);
  assert.equal(full.code, 0, full.stderr);
  assert.equal(full.stdout, 't');
  const byName = await psql(['-c', SSL_SQL, `host=localhost port=${tls.port} user=postgres dbname=postgres sslmode=verify-full sslrootcert=${caFile}`], pw);
  if (byName.code !== 0)
    assert.match(byName.stderr, /connection refused|could not connect/i); // localhost may resolve to ::1 only
  else assert.equal(byName.stdout, 't');
  const wrong = await psql(['-c', SSL_SQL, conn(`sslmode=verify-full sslrootcert=${wrongCaFile}`)], pw);
  assert.notEqual(wrong.code, 0);
  assert.match(wrong.stderr, /certificate/i);
  const req = await psql(['-c', SSL_SQL, conn('sslmode=require')], pw);
  assert.equal(req.code, 0, req.stderr);
  assert.equal(req.stdout, 't');
  const disable = await psql(['-c', SSL_SQL, conn('sslmode=disable')], pw);
  assert.notEqual(disable.code, 0);
  assert.match(disable.stderr, /no pg_hba\.conf entry/);

  // psqlEnv() and url() carry verify-full and the CA.
  const env = await psql(['-c', SSL_SQL], tls.psqlEnv());
  assert.equal(env.code, 0, env.stderr);
  assert.equal(env.stdout, 't');
  const url = await psql(['-c', SSL_SQL, tls.url()], {});
  assert.equal(url.code, 0, url.stderr);
  assert.equal(url.stdout, 't');
  const viaUrl = new pg.Client({ connectionString: tls.url() });
  await viaUrl.connect();
  assert.equal((await viaUrl.query(SSL_SQL)).rows[0].ssl, true);
  await viaUrl.end();

  // The extra hba line (before the hostssl lines) turns `blocked` away even over TLS.
  await tls.query("create role blocked login password 'blocked_pw'");
  await rejectsLogin({ ...tls.connectionConfig(), user: 'blocked', password: 'blocked_pw' }, /pg_hba\.conf rejects connection/);

  // A libpq service file.
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'pg-migrate-hx-'));
  try {
    const file = path.join(dir, 'pg_service.conf');
    await writeServiceFile(file, {
      hx: { host: '127.0.0.1', port: String(tls.port), user: 'postgres', dbname: 'postgres', sslmode: 'verify-full', sslrootcert: caFile },
      other: { host: '127.0.0.1', port: '1' },
    });
    assert.match(await fs.readFile(file, 'utf8'), /^\[hx\]\nhost=127\.0\.0\.1\nport=\d+\n/);
    const svc = await psql(['-c', SSL_SQL, 'service=hx'], { PGSERVICEFILE: file, PGPASSWORD: tls.password });
    assert.equal(svc.code, 0, svc.stderr);
    assert.equal(svc.stdout, 't');
  } finally {
    await fs.rm(dir, { recursive: true, force: true });
  }
});

test('logical: true sets wal_level and room for slots; replication connections work with the default hba', async () => {
  const rows = await logical.query<{ name: string; setting: string }>(
    "select name, setting from pg_settings where name in ('wal_level', 'max_replication_slots', 'max_wal_senders', 'max_logical_replication_workers', 'max_worker_processes')",
  );
  assert.deepEqual(Object.fromEntries(rows.map((r) => [r.name, r.setting])), {
    wal_level: 'logical',
    max_replication_slots: '20',
    max_wal_senders: '20',
    max_logical_replication_workers: '8',
    max_worker_processes: '16',
  });
  assert.equal(logical.tls, false);
  assert.equal(logical.caFile, undefined);
  assert.equal(logical.connectionConfig().ssl, undefined);
  assert.doesNotMatch(logical.url(), /sslmode/);
  assert.match(await fs.readFile(logical.hbaFile, 'utf8'), /^host\s+replication\s+all\s+127\.0\.0\.1\/32\s+scram-sha-256\s*$/m);
  await checkReplication(logical);
});

test('restart() keeps port, data and TLS; reload() applies ALTER SYSTEM and pg_hba.conf edits', async () => {
  const port = tls.port;
  const id = tls.systemIdentifier;
  await tls.query('create table kept (v text); insert into kept values ($$before restart$$)');
  const [t0] = await tls.query<{ t: string }>('select pg_postmaster_start_time()::text as t');
  await tls.query("alter system set work_mem = '7MB'"); // ALTER SYSTEM: one statement per query
  await tls.query('alter system set max_prepared_transactions = 3');

  const r0 = Date.now();
  await tls.restart();
  console.log(`restart in ${Date.now() - r0} ms`);
  assert.equal(tls.port, port);
  assert.equal(tls.running, true);
  const [after1] = await tls.query<{ t: string; v: string; ssl: boolean; id: string; mpt: string }>(
    `select pg_postmaster_start_time()::text as t, (select v from kept) as v, (${SSL_SQL}) as ssl,
            (select system_identifier::text from pg_control_system()) as id, current_setting('max_prepared_transactions') as mpt`,
  );
  assert.notEqual(after1!.t, t0!.t);
  assert.equal(after1!.v, 'before restart');
  assert.equal(after1!.ssl, true);
  assert.equal(after1!.id, id);
  assert.equal(after1!.mpt, '3');

  // reload: a sighup setting, and a new first pg_hba.conf line.
  await tls.query("alter system set work_mem = '9MB'");
  await tls.query("create role late login password 'late_pw'");
  const late = { ...tls.connectionConfig(), user: 'late', password: 'late_pw' };
  const ok = new pg.Client(late);
  await ok.connect();
  await ok.end();
  await fs.writeFile(tls.hbaFile, `hostssl all late 127.0.0.1/32 reject\n${await fs.readFile(tls.hbaFile, 'utf8')}`);
  await tls.reload();
  const [wm] = await tls.query<{ w: string }>("select current_setting('work_mem') as w");
  assert.equal(wm!.w, '9MB');
  await rejectsLogin(late, /pg_hba\.conf rejects connection/);

  // restart() works on 10 too.
  const p10 = v10.port;
  await v10.restart();
  assert.equal(v10.port, p10);
  const [c] = await v10.query<{ n: string }>('select count(*)::text as n from orders', undefined, 'shop');
  assert.equal(c!.n, '2000');
});

test('stop() removes baseDir and the published CA files', async () => {
  const files = [tls.caFile!, tls.wrongCaFile!];
  for (const f of files) assert.ok(existsSync(f));
  await tls.stop();
  await tls.stop();
  for (const f of [...files, tls.baseDir]) assert.equal(existsSync(f), false, f);
  await assert.rejects(tls.restart(), /not running/);
});
