/** A ConnectionSpec for node-postgres with libpq's semantics: the sslmode matrix, default files, hosts, passwords. */
import assert from 'node:assert/strict';
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import type { ConnectionOptions, PeerCertificate } from 'node:tls';
import type pg from 'pg';
import { ConninfoError } from '../../src/pg/conninfo-parse.ts';
import { connectTimeoutMillis, sessionMatches, toClientConfig, toClientConfigs, type TargetSessionAttrs } from '../../src/pg/conninfo-node.ts';
import { resolveConnection, type ConnectionSpec } from '../../src/pg/conninfo.ts';
import { passfileHost, passfilePassword } from '../../src/pg/pgpass.ts';

const tmp = mkdtempSync(path.join(os.tmpdir(), 'pgm-conninfo-node-'));
after(() => {
  rmSync(tmp, { recursive: true, force: true });
});
/** A home directory, with ~/.postgresql/ files when given. */
function home(files: Record<string, string> = {}, mode = 0o600): string {
  const dir = mkdtempSync(path.join(tmp, 'home-'));
  mkdirSync(path.join(dir, '.postgresql'));
  for (const [name, text] of Object.entries(files)) writeFileSync(path.join(dir, '.postgresql', name), text, { mode });
  return dir;
}
const spec = (conninfo: string, extra: { password?: string } = {}): ConnectionSpec =>
  resolveConnection('source', { conninfo, ...extra }, { HOME: '/nonexistent' }, { host: 'db.example', port: 5432, user: 'postgres', dbname: 'postgres' });
const attempts = (conninfo: string, h = home()): pg.ClientConfig[] => toClientConfigs(spec(conninfo), 'db', 'app', { home: h })[0]?.attempts ?? [];
const tlsOf = (c: pg.ClientConfig | undefined): ConnectionOptions => (typeof c?.ssl === 'object' ? c.ssl : assert.fail(`no TLS options in ${String(c?.ssl)}`));
/** What an attempt does: plain, TLS without verification, TLS verifying the chain (ca), or chain and host name (full). */
function kind(c: pg.ClientConfig): string {
  if (c.ssl === false) return 'plain';
  const t = tlsOf(c);
  if (t.rejectUnauthorized !== true) return 'tls';
  const cert = { subject: { CN: 'other' }, subjectaltname: 'DNS:other.example' } as unknown as PeerCertificate;
  return t.checkServerIdentity?.('db.example', cert) === undefined ? 'ca' : 'full';
}
function problem(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof ConninfoError, `expected a ConninfoError, got ${String(err)}`);
    return err.message;
  }
  return assert.fail('expected a ConninfoError');
}

describe('toClientConfigs: the sslmode matrix of libpq', () => {
  const withRoot = home({ 'root.crt': 'CA' });
  const cases: [string, string[], string[] | RegExp][] = [
    // sslmode, without a root certificate, with ~/.postgresql/root.crt
    ['disable', ['plain'], ['plain']],
    ['allow', ['plain', 'tls'], ['plain', 'ca']],
    ['prefer', ['tls', 'plain'], ['ca', 'plain']],
    ['require', ['tls'], ['ca']],
    ['verify-ca', [], ['ca']],
    ['verify-full', [], ['full']],
  ];
  for (const [mode, none, root] of cases) {
    it(`sslmode=${mode}`, () => {
      if (none.length === 0)
        assert.match(
          problem(() => attempts(`sslmode=${mode}`)),
          /root certificate file ".*root.crt" does not exist/,
        );
      else assert.deepEqual(attempts(`sslmode=${mode}`).map(kind), none);
      assert.deepEqual(attempts(`sslmode=${mode}`, withRoot).map(kind), root);
    });
  }

  it('verifies against sslrootcert when its file exists, and ignores a missing one below verify-ca (as libpq)', () => {
    const ca = path.join(tmp, 'ca.crt');
    writeFileSync(ca, 'MY CA');
    const [c] = attempts(`sslmode=require sslrootcert=${ca}`);
    assert.equal(kind(c ?? {}), 'ca');
    assert.equal(tlsOf(c).ca, 'MY CA');
    assert.deepEqual(attempts(`sslmode=require sslrootcert=${path.join(tmp, 'none.crt')}`).map(kind), ['tls']);
  });

  it('uses the system store for sslrootcert=system (verify-full)', () => {
    const [c] = attempts('sslrootcert=system');
    assert.equal(kind(c ?? {}), 'full');
    assert.ok(Array.isArray(tlsOf(c).ca) && (tlsOf(c).ca as string[]).length > 0);
  });

  it('checks the host name, not the address, with hostaddr; needs a host name for verify-full', () => {
    const [c] = attempts('host=db.example hostaddr=10.0.0.7 sslmode=verify-full', home({ 'root.crt': 'CA' }));
    assert.equal(c?.host, '10.0.0.7');
    assert.equal(tlsOf(c).servername, 'db.example');
    const good = { subject: { CN: 'x' }, subjectaltname: 'DNS:db.example' } as unknown as PeerCertificate;
    assert.equal(tlsOf(c).checkServerIdentity?.('10.0.0.7', good), undefined);
    assert.match(
      problem(() => attempts('hostaddr=10.0.0.7 sslmode=verify-full', home({ 'root.crt': 'CA' }))),
      /host name must be specified/,
    );
  });

  it('never uses TLS on a unix socket, whatever the sslmode (as libpq)', () => {
    assert.deepEqual(attempts('host=/var/run/postgresql sslmode=verify-full').map(kind), ['plain']);
  });

  it('sets CRLs, client certificates and TLS versions as libpq does', () => {
    const h = home({ 'root.crt': 'CA', 'root.crl': 'CRL', 'postgresql.crt': 'CERT', 'postgresql.key': 'KEY' });
    const t = tlsOf(attempts('sslmode=require ssl_max_protocol_version=TLSv1.3', h)[0]);
    assert.deepEqual([t.crl, t.cert, t.key, t.minVersion, t.maxVersion], [['CRL'], 'CERT', 'KEY', 'TLSv1.2', 'TLSv1.3']);
    const other = path.join(tmp, 'other.crl');
    writeFileSync(other, 'OTHER');
    assert.deepEqual(tlsOf(attempts(`sslmode=require sslcrl=${other}`, h)[0]).crl, ['OTHER']);
    assert.equal(tlsOf(attempts('sslmode=require sslcertmode=disable', h)[0]).cert, undefined);
    assert.equal(tlsOf(attempts('sslmode=require')[0]).cert, undefined);
  });

  it('refuses a client key others may read, or a certificate without its key', () => {
    assert.match(
      problem(() => attempts('sslmode=require', home({ 'postgresql.crt': 'C', 'postgresql.key': 'K' }, 0o644))),
      /has group or world access/,
    );
    assert.match(
      problem(() => attempts('sslmode=require', home({ 'postgresql.crt': 'C' }))),
      /certificate present, but not private key file/,
    );
  });
});

describe('toClientConfigs: everything else', () => {
  it('sets every field node-postgres would otherwise read from process.env', () => {
    const c = toClientConfig(spec('options=-cx=1 keepalives=0 channel_binding=disable client_encoding=UTF8', { password: 'pw' }), 'mydb', 'pg-migrate-1');
    assert.deepEqual(
      { ...c, ssl: typeof c.ssl },
      {
        host: 'db.example',
        port: 5432,
        user: 'postgres',
        database: 'mydb',
        password: 'pw',
        application_name: 'pg-migrate-1',
        fallback_application_name: undefined,
        options: '-cx=1',
        client_encoding: 'UTF8',
        connectionTimeoutMillis: 0,
        keepAlive: false,
        enableChannelBinding: false,
        sslnegotiation: 'postgres',
        ssl: 'object',
      },
    );
    assert.equal(toClientConfig(spec('application_name=mine'), 'd').application_name, 'mine');
    assert.equal(tlsOf(toClientConfig(spec('sslmode=require'), 'd')).rejectUnauthorized, false);
    assert.equal(toClientConfig(spec('sslnegotiation=direct sslmode=require'), 'd').sslnegotiation, 'direct');
  });

  it('maps connect_timeout as libpq reads it (0: forever; at least 2 s)', () => {
    assert.deepEqual([undefined, '0', '-3', '1', '2', ' 10 '].map(connectTimeoutMillis), [0, 0, 0, 2000, 2000, 10000]);
  });

  it('lists hosts in order, or shuffled with load_balance_hosts=random; an empty host is the default socket', () => {
    const hosts = (text: string, random?: () => number): string[] =>
      toClientConfigs(spec(text), 'd', 'a', { random, defaultSocketDir: '/run/pg' }).map((p) => `${p.attempts[0]?.host ?? ''}:${String(p.attempts[0]?.port)}`);
    assert.deepEqual(hosts('host=a,b,,/tmp port=1,2,3,4'), ['a:1', 'b:2', '/run/pg:3', '/tmp:4']);
    assert.deepEqual(
      hosts('host=a,b,c load_balance_hosts=random', () => 0),
      ['b:5432', 'c:5432', 'a:5432'],
    );
  });

  it('looks a missing password up in the passfile as libpq does, when the server asks for one', async () => {
    const file = path.join(tmp, 'pgpass');
    writeFileSync(file, '# comment\nother:*:*:*:no\ndb.example:5432:*:postgres:found\\:it\n', { mode: 0o600 });
    const password = toClientConfig(spec(`passfile=${file}`), 'd').password;
    assert.equal(typeof password === 'function' ? await password() : password, 'found:it');
    chmodSync(file, 0o644);
    assert.equal(typeof password, 'function');
    if (typeof password === 'function') await assert.rejects(async () => password(), /no password supplied for user "postgres".*group or world access/);
  });
});

describe('passfilePassword', () => {
  it("matches fields as libpq's passwordFromFile: literal or *, \\ escapes, first match, comments skipped", () => {
    const text = ['#h:5432:*:u:comment', 'h:5432:db:u:exact', 'h:*:*:u:any\\:port', '*:*:*:*:fallback:extra', ''].join('\r\n');
    assert.equal(passfilePassword(text, 'h', '5432', 'db', 'u'), 'exact');
    assert.equal(passfilePassword(text, 'h', '5433', 'x', 'u'), 'any:port');
    assert.equal(passfilePassword(text, 'z', '1', 'x', 'v'), 'fallback');
    assert.equal(passfilePassword('a\\:b:5432:*:u:pw', 'a:b', '', 'd', 'u'), 'pw');
    assert.equal(passfilePassword('h:5432:*:u:pw', 'h', '5432', '', 'u'), undefined);
  });

  it('looks no host and the default socket directory up as localhost', () => {
    assert.deepEqual(
      [
        passfileHost('', undefined, '/run/pg'),
        passfileHost('/run/pg', undefined, '/run/pg'),
        passfileHost('/tmp', undefined, '/run/pg'),
        passfileHost('', '10.0.0.1', '/x'),
      ],
      ['localhost', 'localhost', '/tmp', '10.0.0.1'],
    );
  });
});

describe('sessionMatches', () => {
  const server = (readOnly: boolean, recovery: boolean): Pick<pg.ClientBase, 'query'> =>
    ({
      query: (sql: string) => Promise.resolve({ rows: [sql.startsWith('SHOW') ? { transaction_read_only: readOnly ? 'on' : 'off' } : { recovery }] }),
    }) as unknown as Pick<pg.ClientBase, 'query'>;
  it('runs the check libpq runs for each target_session_attrs', async () => {
    const primary = server(false, false);
    const standby = server(true, true);
    const readOnlyPrimary = server(true, false);
    const table: [TargetSessionAttrs, boolean, boolean, boolean][] = [
      ['any', true, true, true],
      ['read-write', true, false, false],
      ['read-only', false, true, true],
      ['primary', true, false, true],
      ['standby', false, true, false],
      ['prefer-standby', false, true, false],
    ];
    for (const [attrs, p, s, r] of table) {
      assert.deepEqual(
        [await sessionMatches(primary, attrs), await sessionMatches(standby, attrs), await sessionMatches(readOnlyPrimary, attrs)],
        [p, s, r],
        attrs,
      );
    }
  });
});
