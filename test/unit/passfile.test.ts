import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Endpoint } from '../../src/options.ts';
import { dbnameConninfo, passfileLines } from '../../src/pg/passfile.ts';

const passfileLine = (e: Parameters<typeof passfileLines>[0], pw: string): string => passfileLines(e, pw).join('\n');

const ep = (host: string, user = 'postgres', port = 5432): Endpoint => ({ host, port, user, password: undefined, database: 'postgres' });

/** Splits one passfile line into its five fields as libpq does (`\` escapes the next character). */
function parseLine(line: string): string[] {
  const fields: string[] = [];
  let cur = '';
  for (let i = 0; i < line.length; i++) {
    const ch = line[i]!;
    if (ch === '\\' && i + 1 < line.length) cur += line.charAt(++i);
    else if (ch === ':' && fields.length < 4) {
      fields.push(cur);
      cur = '';
    } else cur += ch;
  }
  fields.push(cur);
  return fields;
}

/**
 * The password libpq (passwordFromFile, fe-connect.c) would take from these lines: an empty host or
 * the compiled-in default socket directory is looked up as "localhost", any other socket directory
 * by its own path.
 */
function libpqLookup(text: string, host: string, port: number, db: string, user: string, defaultSocketDir: string): string | undefined {
  const lookupHost = host === '' || host === defaultSocketDir ? 'localhost' : host;
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const [h, p, d, u, pw] = parseLine(line);
    const ok = (field: string | undefined, value: string): boolean => field === '*' || field === value;
    if (ok(h, lookupHost) && ok(p, String(port)) && ok(d, db) && ok(u, user)) return pw;
  }
  return undefined;
}

describe('passfileLines', () => {
  it('writes host:port:*:user:password', () => {
    assert.equal(passfileLine(ep('db.example', 'app', 6432), 'secret'), 'db.example:6432:*:app:secret');
  });

  it('escapes : and \\ in every field', () => {
    const line = passfileLine(ep('::1', 'we:ird\\user'), 'pa:ss\\wo:rd');
    assert.equal(line, '\\:\\:1:5432:*:we\\:ird\\\\user:pa\\:ss\\\\wo\\:rd');
    assert.deepEqual(parseLine(line), ['::1', '5432', '*', 'we:ird\\user', 'pa:ss\\wo:rd']);
    assert.equal(libpqLookup(line, '::1', 5432, 'shop', 'we:ird\\user', '/tmp'), 'pa:ss\\wo:rd');
  });

  it('maps the default socket directory to localhost', () => {
    const line = passfileLine(ep('/var/run/postgresql'), 'pw');
    assert.ok(
      line.split('\n').some((l) => l.startsWith('localhost:5432:*:postgres:')),
      line,
    );
    assert.equal(libpqLookup(line, '/var/run/postgresql', 5432, 'shop', 'postgres', '/var/run/postgresql'), 'pw');
    assert.equal(libpqLookup(passfileLine(ep('/tmp'), 'pw'), '/tmp', 5432, 'shop', 'postgres', '/tmp'), 'pw');
  });

  it('lets libpq find the password for a socket directory that is not its default', () => {
    // libpq maps only DEFAULT_PGSOCKET_DIR to "localhost"; any other directory is compared as written.
    const line = passfileLine(ep('/srv/pg/sockets'), 'pw');
    assert.equal(libpqLookup(line, '/srv/pg/sockets', 5432, 'shop', 'postgres', '/var/run/postgresql'), 'pw');
    assert.equal(libpqLookup(line, '/srv/pg/sockets', 5432, 'shop', 'postgres', '/tmp'), 'pw');
  });
});

describe('dbnameConninfo', () => {
  it('quotes the name for a libpq connection string', () => {
    assert.equal(dbnameConninfo('shop'), "dbname='shop'");
    assert.equal(dbnameConninfo("it's"), "dbname='it\\'s'");
    assert.equal(dbnameConninfo('a\\b'), "dbname='a\\\\b'");
    assert.equal(dbnameConninfo("\\'"), "dbname='\\\\\\''");
    assert.equal(dbnameConninfo('my db = x'), "dbname='my db = x'");
    assert.equal(dbnameConninfo('postgresql://evil'), "dbname='postgresql://evil'");
    assert.equal(dbnameConninfo(''), "dbname=''");
  });
});
