/**
 * Connection strings parsed as libpq parses them. Every expectation here was checked against libpq 15
 * (PQconninfoParse); test/integration/conninfo-libpq.test.ts repeats the comparison when a C compiler
 * and libpq-fe.h are at hand.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ConninfoError, formatConninfo, isUri, parseConninfo, parseKeywordValue, parseUri, quoteConninfoValue } from '../../src/pg/conninfo-parse.ts';

function problem(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof ConninfoError, `expected a ConninfoError, got ${String(err)}`);
    return err.message;
  }
  return assert.fail('expected a ConninfoError');
}

describe('parseKeywordValue', () => {
  it('reads keyword=value pairs with blanks around "=" and between pairs', () => {
    assert.deepEqual(parseKeywordValue(" host = a   port= 5\tdbname ='my db'\n"), { host: 'a', port: '5', dbname: 'my db' });
  });

  it("unescapes \\' and \\\\ in quoted and unquoted values", () => {
    assert.deepEqual(parseKeywordValue("password='it\\'s a \\\\ test' user=x\\ y application_name=\\'q\\'"), {
      password: "it's a \\ test",
      user: 'x y',
      application_name: "'q'",
    });
    assert.deepEqual(parseKeywordValue('host=a\\'), { host: 'a' });
  });

  it('takes empty values, a keyword right after a closing quote, and the last of repeated keywords', () => {
    assert.deepEqual(parseKeywordValue("host='' port="), { host: '', port: '' });
    assert.deepEqual(parseKeywordValue("host='x'port=5"), { host: 'x', port: '5' });
    assert.deepEqual(parseKeywordValue('host=a host=b'), { host: 'b' });
  });

  it('translates requiressl as libpq does', () => {
    assert.deepEqual(parseKeywordValue('requiressl=1'), { sslmode: 'require' });
    assert.deepEqual(parseKeywordValue('requiressl=0'), { sslmode: 'prefer' });
  });

  it('refuses what libpq refuses, naming the keyword', () => {
    assert.match(
      problem(() => parseKeywordValue('hots=a')),
      /invalid connection option "hots" \(did you mean host\?\)/,
    );
    assert.match(
      problem(() => parseKeywordValue('frobnicate=1')),
      /invalid connection option "frobnicate"$/,
    );
    assert.match(
      problem(() => parseKeywordValue('host')),
      /missing "=" after "host"/,
    );
    assert.match(
      problem(() => parseKeywordValue('host=a b')),
      /missing "=" after "b"/,
    );
    assert.match(
      problem(() => parseKeywordValue("host='open")),
      /unterminated quoted string/,
    );
  });

  it('never echoes a password that was not quoted', () => {
    const a = problem(() => parseKeywordValue('password=top secret'));
    const b = problem(() => parseKeywordValue('password=top secret=x'));
    for (const m of [a, b]) {
      assert.doesNotMatch(m, /secret/);
      assert.match(m, /password='\.\.\.'/);
    }
  });
});

describe('parseUri', () => {
  it('reads the parts of a URI', () => {
    assert.deepEqual(parseUri('postgresql://'), {});
    assert.deepEqual(parseUri('postgres://localhost'), { host: 'localhost' });
    assert.deepEqual(parseUri('postgresql://localhost:5433'), { host: 'localhost', port: '5433' });
    assert.deepEqual(parseUri('postgresql://user:secret@localhost/mydb'), { user: 'user', password: 'secret', host: 'localhost', dbname: 'mydb' });
    assert.deepEqual(parseUri('postgresql://other@localhost/otherdb?connect_timeout=10&application_name=myapp'), {
      user: 'other',
      host: 'localhost',
      dbname: 'otherdb',
      connect_timeout: '10',
      application_name: 'myapp',
    });
    assert.deepEqual(parseUri('postgresql://user@/db'), { user: 'user', dbname: 'db' });
    assert.deepEqual(parseUri('postgresql://:5433/db'), { port: '5433', dbname: 'db' });
  });

  it('reads several hosts, IPv6 in brackets, and ports lists as libpq pairs them', () => {
    assert.deepEqual(parseUri('postgresql://host1:123,host2:456/somedb?target_session_attrs=read-write'), {
      host: 'host1,host2',
      port: '123,456',
      dbname: 'somedb',
      target_session_attrs: 'read-write',
    });
    assert.deepEqual(parseUri('postgresql://[::1]:5432/db'), { host: '::1', port: '5432', dbname: 'db' });
    assert.deepEqual(parseUri('postgresql://[::1],[fe80::1%25eth0]:7/db'), { host: '::1,fe80::1%eth0', port: ',7', dbname: 'db' });
    assert.deepEqual(parseUri('postgresql://h1,h2:5/db'), { host: 'h1,h2', port: ',5', dbname: 'db' });
    assert.deepEqual(parseUri('postgresql://h:5432,/db'), { host: 'h,', port: '5432,', dbname: 'db' });
  });

  it('percent-decodes every part (UTF-8, socket directories), but not "+"', () => {
    assert.deepEqual(parseUri('postgresql://u%40x:p%3Aw@h/d%20b?options=-c%20a%3Db+c'), {
      user: 'u@x',
      password: 'p:w',
      host: 'h',
      dbname: 'd b',
      options: '-c a=b+c',
    });
    assert.deepEqual(parseUri('postgresql://%2Fvar%2Frun%2Fpostgresql/db'), { host: '/var/run/postgresql', dbname: 'db' });
    assert.deepEqual(parseUri('postgresql://h/caf%C3%A9'), { host: 'h', dbname: 'café' });
    assert.deepEqual(parseUri('postgresql://h/db?%73slmode=require'), { host: 'h', dbname: 'db', sslmode: 'require' });
  });

  it('lets query parameters override the authority and path; ssl=true means sslmode=require', () => {
    assert.deepEqual(parseUri('postgresql:///db?host=/var/run/postgresql'), { host: '/var/run/postgresql', dbname: 'db' });
    assert.deepEqual(parseUri('postgresql://h/db?host=other&port=7&dbname=x'), { host: 'other', port: '7', dbname: 'x' });
    assert.deepEqual(parseUri('postgresql://h/db?ssl=true&'), { host: 'h', dbname: 'db', sslmode: 'require' });
    assert.deepEqual(parseUri('postgresql://h/db/extra'), { host: 'h', dbname: 'db/extra' });
  });

  it('follows libpq where a URI is odd', () => {
    // The user part ends at the first "@" before a "/", even past a "?".
    assert.deepEqual(parseUri('postgresql://h?user=a@b'), { user: 'h?user=a', host: 'b' });
    // The password runs to that "@", colons included.
    assert.deepEqual(parseUri('postgresql://u:p:q@h'), { user: 'u', password: 'p:q', host: 'h' });
  });

  it('refuses what libpq refuses', () => {
    assert.match(
      problem(() => parseUri('postgresql://h/db?bogus=1')),
      /invalid URI query parameter "bogus"/,
    );
    assert.match(
      problem(() => parseUri('postgresql://h/db?ssl=false')),
      /invalid URI query parameter "ssl"/,
    );
    assert.match(
      problem(() => parseUri('postgresql://h/db?a')),
      /missing key\/value separator "=" in URI query parameter: "a"/,
    );
    assert.match(
      problem(() => parseUri('postgresql://h/db?a=b=c')),
      /extra key\/value separator "=" in URI query parameter: "a"/,
    );
    assert.match(
      problem(() => parseUri('postgresql://[]/db')),
      /IPv6 host address may not be empty/,
    );
    assert.match(
      problem(() => parseUri('postgresql://[::1/db')),
      /matching "\]"/,
    );
    assert.match(
      problem(() => parseUri('postgresql://[::1]x/db')),
      /unexpected character "x" at position 19/,
    );
    assert.match(
      problem(() => parseUri('postgresql://h/db%zz')),
      /invalid percent-encoded token in "db%zz"/,
    );
    assert.match(
      problem(() => parseUri('postgresql://h/db%00')),
      /forbidden value %00/,
    );
  });

  it('never echoes a password it cannot decode', () => {
    const m = problem(() => parseUri('postgresql://u:s3cr%zzet@h/db'));
    assert.doesNotMatch(m, /s3cr/);
    assert.match(m, /the password/);
  });
});

describe('parseConninfo', () => {
  it('reads URIs by their prefix (case-sensitive, as libpq), anything else as keyword=value', () => {
    assert.equal(isUri('postgresql://h'), true);
    assert.equal(isUri('postgres://h'), true);
    assert.equal(isUri('POSTGRESQL://h'), false);
    assert.deepEqual(parseConninfo('postgres://h/db'), { host: 'h', dbname: 'db' });
    assert.deepEqual(parseConninfo('service=old'), { service: 'old' });
    assert.match(
      problem(() => parseConninfo('old-db')),
      /missing "=" after "old-db"/,
    );
  });
});

describe('formatConninfo', () => {
  it('quotes every value as libpq reads it, in libpq keyword order, leaving empty values out', () => {
    const params = { sslmode: 'require', dbname: "it's \\ here", host: 'h', options: '-c x=1', port: '' };
    const text = formatConninfo(params);
    assert.equal(text, "dbname='it\\'s \\\\ here' host='h' options='-c x=1' sslmode='require'");
    assert.deepEqual(parseKeywordValue(text), { dbname: "it's \\ here", host: 'h', options: '-c x=1', sslmode: 'require' });
    assert.equal(quoteConninfoValue(''), "''");
  });
});
