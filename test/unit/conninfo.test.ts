/** One connection per side: precedence, validation, and the conninfo and passfile lines for the client programs. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ConninfoError, parseConninfo } from '../../src/pg/conninfo-parse.ts';
import {
  clientProgramEnv,
  conninfoPassfileLines,
  describeConnection,
  hostTargets,
  resolveConnection,
  toLibpqConninfo,
  type ConnectionInput,
  type ConnectionSpec,
} from '../../src/pg/conninfo.ts';
import { passfilePassword } from '../../src/pg/pgpass.ts';

const DEFAULTS = { host: 'localhost', port: 5432, user: 'postgres', dbname: 'postgres' };
const SERVICES: Record<string, string> = {
  '/home/op/.pg_service.conf': '[old]\nhost=svc-host\nport=6000\nuser=svc-user\nsslmode=verify-ca\ndbname=svc-db\n',
  '/etc/postgresql-common/pg_service.conf': '[sys]\nhost=sys-host\n',
};
const read = (f: string): string | undefined => SERVICES[f];

function resolve(input: ConnectionInput, env: NodeJS.ProcessEnv = {}, side: 'source' | 'target' = 'source', defaults: object = DEFAULTS): ConnectionSpec {
  return resolveConnection(side, input, { HOME: '/home/op', ...env }, { ...DEFAULTS, ...defaults }, { readFile: read });
}
function problems(fn: () => unknown): string[] {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof ConninfoError, `expected a ConninfoError, got ${String(err)}`);
    return err.problems;
  }
  return assert.fail('expected a ConninfoError');
}
const labels = (spec: ConnectionSpec): Record<string, string> => Object.fromEntries(Object.entries(spec.origins).map(([k, o]) => [k, o.label]));

describe('resolveConnection: precedence', () => {
  it('takes the defaults when nothing is given', () => {
    const spec = resolve({});
    assert.deepEqual(spec.params, { host: 'localhost', port: '5432', user: 'postgres', dbname: 'postgres', sslmode: 'prefer' });
    assert.equal(spec.password, undefined);
    assert.deepEqual(new Set(Object.values(spec.origins).map((o) => o.kind)), new Set(['default']));
  });

  it('ranks seed flag > --from string > service > PG* variable > default, keyword by keyword', () => {
    const env = {
      PGHOST: 'env-host',
      PGPORT: '7000',
      PGUSER: 'env-user',
      PGDATABASE: 'env-db',
      PGSSLMODE: 'require',
      PGAPPNAME: 'env-app',
      PGOPTIONS: '-c x=1',
    };
    const spec = resolve({ conninfo: 'service=old host=str-host user=str-user', host: 'flag-host' }, env);
    assert.deepEqual(spec.params, {
      host: 'flag-host',
      user: 'str-user',
      service: 'old',
      port: '6000',
      sslmode: 'verify-ca',
      dbname: 'svc-db',
      application_name: 'env-app',
      options: '-c x=1',
    });
    assert.deepEqual(labels(spec), {
      host: '--from-host',
      user: '--from',
      service: '--from',
      port: 'service "old" (/home/op/.pg_service.conf)',
      sslmode: 'service "old" (/home/op/.pg_service.conf)',
      dbname: 'service "old" (/home/op/.pg_service.conf)',
      application_name: 'PGAPPNAME',
      options: 'PGOPTIONS',
    });
  });

  it('gives every seed flag precedence over the string, for both sides with their own flag names', () => {
    const input = { conninfo: 'postgresql://u:pw@h:1/d', host: 'H', port: 2, user: 'U', password: 'PW', dbname: 'D' };
    const spec = resolve(input, {}, 'target');
    assert.deepEqual([spec.params.host, spec.params.port, spec.params.user, spec.password, spec.params.dbname], ['H', '2', 'U', 'PW', 'D']);
    assert.deepEqual(labels(spec).port, '--to-port');
    assert.equal(resolve({ conninfo: 'postgresql://u:pw@h:1/d' }).password, 'pw');
  });

  it('applies PG* variables to a side that does not set the keyword itself', () => {
    const env = { PGHOST: 'env-host', PGPORT: '7000', PGPASSWORD: 'env-pw', PGSSLROOTCERT: '/ca.crt', PGTARGETSESSIONATTRS: 'read-write' };
    const source = resolve({}, env);
    const target = resolve({ conninfo: 'host=t sslrootcert=/t.crt' }, env, 'target', { host: undefined });
    assert.deepEqual([source.params.host, source.params.port, source.password, source.params.sslrootcert], ['env-host', '7000', 'env-pw', '/ca.crt']);
    assert.deepEqual([target.params.host, target.params.port, target.password, target.params.sslrootcert], ['t', '7000', 'env-pw', '/t.crt']);
    assert.equal(target.params.target_session_attrs, 'read-write');
    assert.equal(target.origins.port?.label, 'PGPORT');
  });

  it('uses PGSERVICE only when the string names no service, under the string but over the other variables', () => {
    const viaEnv = resolve({ conninfo: 'port=1' }, { PGSERVICE: 'old', PGHOST: 'env-host' });
    assert.deepEqual([viaEnv.params.host, viaEnv.params.port, viaEnv.params.service], ['svc-host', '1', 'old']);
    assert.equal(viaEnv.origins.service?.label, 'PGSERVICE');
    assert.equal(resolve({ conninfo: 'service=sys' }, { PGSERVICE: 'old' }).params.host, 'sys-host');
  });

  it('takes PGDATABASE when set (as libpq does), the maintenance database default otherwise', () => {
    assert.equal(resolve({}, { PGDATABASE: 'app' }).params.dbname, 'app');
    assert.equal(resolve({}, { PGDATABASE: 'app' }).origins.dbname?.label, 'PGDATABASE');
    assert.equal(resolve({ dbname: 'maint' }, { PGDATABASE: 'app' }).params.dbname, 'maint');
    assert.equal(resolve({}, {}).params.dbname, 'postgres');
  });

  it('counts empty values as not given', () => {
    const spec = resolve({ conninfo: "host='' port=", host: '' }, { PGHOST: '', PGPORT: '7000' });
    assert.deepEqual([spec.params.host, spec.params.port], ['localhost', '7000']);
  });

  it('follows libpq on sslmode defaults: PGREQUIRESSL, and verify-full with sslrootcert=system', () => {
    assert.equal(resolve({}, { PGREQUIRESSL: '1' }).params.sslmode, 'require');
    assert.equal(resolve({}, { PGREQUIRESSL: '1', PGSSLMODE: 'disable' }).params.sslmode, 'disable');
    assert.equal(resolve({ conninfo: 'sslrootcert=system' }).params.sslmode, 'verify-full');
  });

  it('adds the tool defaults it is given (connect_timeout), and no default host beside a hostaddr', () => {
    assert.equal(resolve({}, {}, 'source', { connect_timeout: 30 }).params.connect_timeout, '30');
    assert.equal(resolve({}, { PGCONNECT_TIMEOUT: '5' }, 'source', { connect_timeout: 30 }).params.connect_timeout, '5');
    const spec = resolve({ conninfo: 'hostaddr=10.0.0.5' });
    assert.equal(spec.params.host, undefined);
    assert.deepEqual(hostTargets(spec), [{ host: '', hostaddr: '10.0.0.5', port: 5432, socket: false }]);
  });
});

describe('resolveConnection: problems', () => {
  it('needs a host for a side without a default host', () => {
    assert.deepEqual(
      problems(() => resolve({}, {}, 'target', { host: undefined })),
      ['the target server has no host: give --to (a URI or host=...), --to-host, a service, or PGHOST'],
    );
    assert.equal(resolve({}, { PGHOST: 'h' }, 'target', { host: undefined }).params.host, 'h');
  });

  it('names the side or variable a bad value came from, and lists every problem', () => {
    assert.deepEqual(
      problems(() => resolve({ conninfo: 'sslmode=verfy-full target_session_attrs=rw' }, { PGCONNECT_TIMEOUT: 'soon' })),
      [
        '--from: sslmode "verfy-full" is not one of disable, allow, prefer, require, verify-ca, verify-full',
        '--from: target_session_attrs "rw" is not one of any, read-write, read-only, primary, standby, prefer-standby',
        'PGCONNECT_TIMEOUT: connect_timeout "soon" is not a whole number',
      ],
    );
    assert.match(problems(() => resolve({ conninfo: 'hots=x' }, {}, 'target'))[0] ?? '', /^--to: invalid connection option "hots" \(did you mean host\?\)/);
    assert.match(problems(() => resolve({ conninfo: 'service=nope' }))[0] ?? '', /^--from: definition of service "nope" not found/);
    assert.deepEqual(
      problems(() => resolve({ conninfo: 'old-db.example' })),
      [
        '--from is neither a URI (postgresql://...) nor keyword=value pairs (host=... port=...); for a host name alone use --from-host NAME or --from host=NAME',
      ],
    );
  });

  it('checks host, hostaddr and port lists as libpq pairs them', () => {
    assert.match(problems(() => resolve({ conninfo: 'host=a,b port=1,2,3' })).join(), /could not match 3 port numbers to 2 hosts/);
    assert.match(problems(() => resolve({ conninfo: 'host=a,b hostaddr=10.0.0.1' })).join(), /could not match 2 host names to 1 hostaddr values/);
    assert.match(problems(() => resolve({ conninfo: 'hostaddr=db.example' })).join(), /not a numeric IP address/);
    assert.match(problems(() => resolve({ port: 70000 })).join(), /--from-port: port "70000" is not a port number/);
    assert.equal(resolve({ conninfo: "port=' 05433 '" }).params.port, '5433');
  });

  it('refuses weak sslmodes where libpq does, and normalizes TLS versions', () => {
    assert.match(problems(() => resolve({ conninfo: 'sslrootcert=system sslmode=require' })).join(), /may not be used with sslrootcert=system/);
    assert.match(problems(() => resolve({ conninfo: 'sslnegotiation=direct' })).join(), /may not be used with sslnegotiation=direct/);
    assert.equal(resolve({ conninfo: 'ssl_min_protocol_version=tlsv1.3' }).params.ssl_min_protocol_version, 'TLSv1.3');
    assert.match(problems(() => resolve({ conninfo: 'ssl_max_protocol_version=TLSv1.1' })).join(), /is below ssl_min_protocol_version "TLSv1.2"/);
  });

  it('refuses settings node-postgres cannot honour, so both kinds of session stay alike', () => {
    for (const text of [
      'channel_binding=require',
      'gssencmode=require',
      'sslcertmode=require',
      'require_auth=scram-sha-256',
      'sslpassword=x',
      'requirepeer=postgres',
    ]) {
      assert.match(problems(() => resolve({ conninfo: text })).join(), /is not supported: pg-migrate's own sessions \(node-postgres\)/, text);
    }
    for (const secret of ['oauth_client_secret', 'sslpassword', 'scram_client_key']) {
      assert.doesNotMatch(problems(() => resolve({ conninfo: `${secret}=hush` })).join(), /hush/, secret);
    }
    assert.equal(resolve({ conninfo: 'channel_binding=disable gssencmode=disable min_protocol_version=3.0' }).params.gssencmode, 'disable');
  });
});

describe('the password', () => {
  it('is kept apart: not enumerable, not in JSON, not in descriptions or conninfo strings', () => {
    const spec = resolve({ conninfo: 'postgresql://u:hunter2@db/app' });
    assert.equal(spec.password, 'hunter2');
    assert.doesNotMatch(JSON.stringify(spec), /hunter2/);
    assert.equal(Object.keys(spec).includes('password'), false);
    assert.doesNotMatch(describeConnection(spec), /hunter2/);
    assert.doesNotMatch(toLibpqConninfo(spec, 'app'), /hunter2/);
    assert.throws(() => toLibpqConninfo(spec, 'app', { password: 'x' } as object), /never goes into a connection string/);
  });
});

describe('hostTargets', () => {
  it('pairs hosts with one port for all or one each, empty meaning 5432 and the default socket', () => {
    const spec = resolve({ conninfo: 'postgresql://a:1,[::1],%2Ftmp%2Fsock:3,/db' });
    assert.deepEqual(hostTargets(spec), [
      { host: 'a', port: 1, socket: false },
      { host: '::1', port: 5432, socket: false },
      { host: '/tmp/sock', port: 3, socket: true },
      { host: '', port: 5432, socket: true },
    ]);
    assert.deepEqual(
      hostTargets(resolve({ conninfo: 'host=a,b hostaddr=10.0.0.1, port=9' })).map((t) => [t.host, t.hostaddr, t.port]),
      [
        ['a', '10.0.0.1', 9],
        ['b', undefined, 9],
      ],
    );
  });
});

describe('toLibpqConninfo', () => {
  it('writes every keyword but the password and the expanded service, with the database and the caller extras', () => {
    const spec = resolve({ conninfo: "service=old sslrootcert='/c a.crt' options='-c x=1'", password: 'pw' }, { PGPASSFILE: '/p' });
    assert.equal(
      toLibpqConninfo(spec, "it's", { application_name: 'pg-migrate-1', connect_timeout: '30' }),
      "user='svc-user' connect_timeout='30' dbname='it\\'s' host='svc-host' port='6000' options='-c x=1' application_name='pg-migrate-1' sslmode='verify-ca' sslrootcert='/c a.crt'",
    );
  });

  it('names the passfile only when the spec holds no password', () => {
    assert.match(toLibpqConninfo(resolve({}, { PGPASSFILE: '/p' }), 'd'), /passfile='\/p'/);
    assert.doesNotMatch(toLibpqConninfo(resolve({ password: 'x' }, { PGPASSFILE: '/p' }), 'd'), /passfile/);
  });

  it('round-trips: parsing the string gives the spec back', () => {
    const inputs: ConnectionInput[] = [
      { conninfo: 'postgresql://u@[::1]:5433,other:5434/d%20b?sslmode=verify-full&sslrootcert=%2Ftmp%2Fca.crt&target_session_attrs=primary' },
      { conninfo: "host=/var/run/postgresql,h2 port=1,2 options='-c a=\\'b\\' -c c=d\\\\e' application_name='x y' connect_timeout=7" },
      { conninfo: 'service=old hostaddr=10.1.2.3 keepalives=0 sslcrl=/crl sslcert=/c sslkey=/k sslsni=0' },
    ];
    for (const input of inputs) {
      const spec = resolve(input, { PGSSLCRL: '/env.crl' });
      const expected = { ...spec.params } as Record<string, string>;
      delete expected.service;
      assert.deepEqual(parseConninfo(toLibpqConninfo(spec, spec.params.dbname ?? '')), expected, input.conninfo);
    }
  });
});

describe('conninfoPassfileLines', () => {
  it('gives one line per host, as libpq looks each up', () => {
    const spec = resolve({ conninfo: 'postgresql://we%3Aird@a:1,%2Fsock/db', password: 'p:w\\d' });
    const lines = conninfoPassfileLines(spec);
    assert.deepEqual(lines, ['a:1:*:we\\:ird:p\\:w\\\\d', '/sock:5432:*:we\\:ird:p\\:w\\\\d', 'localhost:5432:*:we\\:ird:p\\:w\\\\d']);
    const text = lines.join('\n');
    for (const host of ['a', '/sock', 'localhost']) assert.equal(passfilePassword(text, host, host === 'a' ? '1' : '5432', 'any', 'we:ird'), 'p:w\\d');
  });

  it('uses hostaddr when there is no host name, and gives nothing without a password', () => {
    assert.deepEqual(conninfoPassfileLines(resolve({ conninfo: 'hostaddr=10.0.0.1', password: 'pw' })), ['10.0.0.1:5432:*:postgres:pw']);
    assert.deepEqual(conninfoPassfileLines(resolve({})), []);
  });
});

describe('describeConnection', () => {
  it('shows user, hosts, database, sslmode and what else matters, never the password', () => {
    assert.equal(describeConnection(resolve({ password: 'x' })), 'postgres@localhost:5432/postgres sslmode=prefer');
    const spec = resolve({ conninfo: 'service=old host=db,::1 hostaddr=10.0.0.1,::1 target_session_attrs=read-write' });
    assert.equal(describeConnection(spec), 'svc-user@db (10.0.0.1):6000,[::1] (::1):6000/svc-db sslmode=verify-ca target_session_attrs=read-write service=old');
  });
});

describe('clientProgramEnv', () => {
  it("drops libpq's connection variables and keeps the rest", () => {
    const env = {
      PATH: '/bin',
      PGHOST: 'h',
      PGSERVICE: 's',
      PGSERVICEFILE: 'f',
      PGSYSCONFDIR: 'd',
      PGPASSWORD: 'p',
      PGSSLMODE: 'require',
      PGTZ: 'UTC',
      PGREQUIRESSL: '1',
    };
    assert.deepEqual(clientProgramEnv(env), { PATH: '/bin', PGTZ: 'UTC' });
  });
});
