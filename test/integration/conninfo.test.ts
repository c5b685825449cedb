/**
 * One ConnectionSpec, two kinds of client, the same behaviour: node-postgres (connectSpec) and psql 15
 * (`--dbname=<toLibpqConninfo>` with a private passfile and clientProgramEnv) against a TLS server that
 * accepts TCP only over TLS (hostssl) and a server without TLS. Independent of the pipeline.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { connectSpec } from '../../src/pg/conninfo-node.ts';
import {
  clientProgramEnv,
  conninfoPassfileLines,
  resolveConnection,
  toLibpqConninfo,
  type ConnectionInput,
  type ConnectionSpec,
} from '../../src/pg/conninfo.ts';
import { freePort, startCluster, type Cluster } from '../harness/cluster.ts';
import { writeServiceFile } from '../harness/libpq.ts';

const PSQL = path.join(process.env.PGM_TEST_BIN ?? '/usr/lib/postgresql/15/bin', 'psql');
const SQL = "select ssl::text || ' ' || current_setting('port') as r from pg_stat_ssl where pid = pg_backend_pid()";
const DEFAULTS = { host: 'localhost', port: 5432, user: 'postgres', dbname: 'postgres' };

let tls: Cluster; // TLS, hostssl only: TCP connections must use TLS
let plain: Cluster; // no TLS at all
const tmp = mkdtempSync(path.join(os.tmpdir(), 'pgm-conninfo-'));
const home = mkdtempSync(path.join(tmp, 'home-')); // no ~/.postgresql/ for the node-postgres side

before(async () => {
  [tls, plain] = await Promise.all([startCluster({ name: 'cinfo-tls', tls: { hostsslOnly: true } }), startCluster({ name: 'cinfo-plain' })]);
});
after(async () => {
  await Promise.all([tls, plain].map((c) => c.stop()));
  rmSync(tmp, { recursive: true, force: true });
});

const spec = (input: ConnectionInput, env: NodeJS.ProcessEnv = {}): ConnectionSpec => resolveConnection('source', input, { HOME: home, ...env }, DEFAULTS);

/** What a session saw: TLS or not, and the server port; or the error. */
type Outcome = { ok: true; ssl: boolean; port: number } | { ok: false; error: string };

async function viaNode(s: ConnectionSpec): Promise<Outcome> {
  try {
    const { client } = await connectSpec(s, s.params.dbname ?? '', 'pgm-conninfo-test', { home });
    try {
      const r = await client.query<{ r: string }>(SQL);
      const [ssl, port] = (r.rows[0]?.r ?? '').split(' ');
      return { ok: true, ssl: ssl === 'true', port: Number(port) };
    } finally {
      await client.end();
    }
  } catch (err) {
    return { ok: false, error: (err as Error).message };
  }
}

let passfiles = 0;
function viaPsql(s: ConnectionSpec): Promise<Outcome> {
  const passfile = path.join(tmp, `pgpass-${String(++passfiles)}`);
  writeFileSync(passfile, `${conninfoPassfileLines(s).join('\n')}\n`, { mode: 0o600 });
  const env = { ...clientProgramEnv(process.env), PGPASSFILE: passfile };
  const dbname = toLibpqConninfo(s, s.params.dbname ?? '', { application_name: 'pgm-conninfo-test' });
  return new Promise((resolve) => {
    execFile(PSQL, ['-X', '-A', '-t', '-w', `--dbname=${dbname}`, '-c', SQL], { env, timeout: 30_000 }, (err, stdout, stderr) => {
      const [ssl, port] = stdout.trim().split(' ');
      resolve(err ? { ok: false, error: stderr } : { ok: true, ssl: ssl === 'true', port: Number(port) });
    });
  });
}

/** Both clients, side by side. */
async function both(s: ConnectionSpec): Promise<{ node: Outcome; psql: Outcome }> {
  const [node, psql] = await Promise.all([viaNode(s), viaPsql(s)]);
  return { node, psql };
}

const connected = (c: Cluster, ssl: boolean): Outcome => ({ ok: true, ssl, port: c.port });

describe('the same connection for node-postgres and psql', () => {
  it('PGSSLMODE=require encrypts without verifying (no CA given), as libpq does', async () => {
    const s = spec({ host: '127.0.0.1', port: tls.port, password: tls.password }, { PGSSLMODE: 'require' });
    assert.equal(s.params.sslmode, 'require');
    assert.deepEqual(await both(s), { node: connected(tls, true), psql: connected(tls, true) });
  });

  it('verify-full with the right CA works for both, by IP and by name with hostaddr', async () => {
    const uri = `postgresql://postgres@127.0.0.1:${String(tls.port)}/postgres?sslmode=verify-full&sslrootcert=${encodeURIComponent(tls.caFile ?? '')}`;
    assert.deepEqual(await both(spec({ conninfo: uri, password: tls.password })), { node: connected(tls, true), psql: connected(tls, true) });
    const byName = `host=localhost hostaddr=127.0.0.1 port=${String(tls.port)} sslmode=verify-full sslrootcert='${tls.caFile ?? ''}'`;
    assert.deepEqual(await both(spec({ conninfo: byName, password: tls.password })), { node: connected(tls, true), psql: connected(tls, true) });
  });

  it('the wrong CA fails for both: with verify-full, and with require (a root file makes require verify the chain)', async () => {
    for (const mode of ['verify-full', 'require']) {
      const s = spec({ conninfo: `host=127.0.0.1 port=${String(tls.port)} sslmode=${mode} sslrootcert='${tls.wrongCaFile ?? ''}'`, password: tls.password });
      const { node, psql } = await both(s);
      if (node.ok || psql.ok) assert.fail(`${mode}: connected (${JSON.stringify({ node, psql })})`);
      assert.match(node.error, /certificate/, mode);
      assert.match(psql.error, /certificate verify failed/, mode);
    }
  });

  it('a service file with one service per server works for both', async () => {
    const file = path.join(tmp, 'services.conf');
    await writeServiceFile(file, {
      secure: { host: '127.0.0.1', port: String(tls.port), sslmode: 'verify-full', sslrootcert: tls.caFile ?? '', user: 'postgres' },
      old: { host: '127.0.0.1', port: String(plain.port), sslmode: 'disable', password: plain.password },
    });
    const env = { PGSERVICEFILE: file };
    const secure = spec({ conninfo: 'service=secure', password: tls.password }, env);
    assert.equal(secure.origins.sslrootcert?.label, `service "secure" (${file})`);
    assert.deepEqual(await both(secure), { node: connected(tls, true), psql: connected(tls, true) });
    assert.deepEqual(await both(spec({ conninfo: 'service=old' }, env)), { node: connected(plain, false), psql: connected(plain, false) });
    // PGSERVICE names the service when --from does not.
    assert.deepEqual(await both(spec({}, { ...env, PGSERVICE: 'old' })), { node: connected(plain, false), psql: connected(plain, false) });
  });

  it('honours PGHOST, PGPORT and PGPASSWORD over the defaults', async () => {
    const s = spec({}, { PGHOST: '127.0.0.1', PGPORT: String(plain.port), PGPASSWORD: plain.password });
    assert.deepEqual([s.origins.host?.label, s.origins.port?.label], ['PGHOST', 'PGPORT']);
    assert.deepEqual(await both(s), { node: connected(plain, false), psql: connected(plain, false) });
  });

  it('prefer falls back to plain on a server without TLS and takes TLS where offered; allow finds TLS on a hostssl server', async () => {
    const on = (c: Cluster, mode: string): ConnectionSpec => spec({ conninfo: `host=127.0.0.1 port=${String(c.port)} sslmode=${mode}`, password: c.password });
    assert.deepEqual(await both(on(plain, 'prefer')), { node: connected(plain, false), psql: connected(plain, false) });
    assert.deepEqual(await both(on(tls, 'prefer')), { node: connected(tls, true), psql: connected(tls, true) });
    assert.deepEqual(await both(on(tls, 'allow')), { node: connected(tls, true), psql: connected(tls, true) });
    const required = await both(on(plain, 'require'));
    assert.deepEqual([required.node.ok, required.psql.ok], [false, false]);
  });

  it('tries the hosts in order, and checks target_session_attrs after connecting', async () => {
    const closed = await freePort();
    const hosts = `host=127.0.0.1,127.0.0.1 port=${String(closed)},${String(plain.port)}`;
    assert.deepEqual(await both(spec({ conninfo: hosts, password: plain.password })), { node: connected(plain, false), psql: connected(plain, false) });
    const standby = await both(spec({ conninfo: `${hosts} target_session_attrs=standby`, password: plain.password }));
    assert.equal(
      standby.node.ok ? '' : standby.node.error,
      `could not connect (127.0.0.1:${String(closed)} (TLS): connect ECONNREFUSED 127.0.0.1:${String(closed)}; 127.0.0.1:${String(plain.port)}: server is not in hot standby mode)`,
    );
    assert.match(standby.psql.ok ? '' : standby.psql.error, /server is not in hot standby mode/);
    const preferStandby = spec({ conninfo: `${hosts} target_session_attrs=prefer-standby`, password: plain.password });
    assert.deepEqual(await both(preferStandby), { node: connected(plain, false), psql: connected(plain, false) });
  });

  it('reads a password from the passfile named in the connection string, for both', async () => {
    const passfile = path.join(tmp, 'operator-pgpass');
    writeFileSync(passfile, `127.0.0.1:${String(plain.port)}:*:postgres:${plain.password}\n`, { mode: 0o600 });
    const s = spec({ conninfo: `host=127.0.0.1 port=${String(plain.port)} passfile=${passfile}` });
    assert.equal(s.password, undefined);
    assert.deepEqual(await both(s), { node: connected(plain, false), psql: connected(plain, false) });
  });
});
