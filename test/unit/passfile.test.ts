import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { conninfoPassfileLines, resolveConnection } from '../../src/pg/conninfo.ts';
import { endpointOf, type Endpoint } from '../../src/pg/endpoint.ts';
import { prepareChildAuth } from '../../src/pg/passfile.ts';

const DEFAULTS = { port: 5432, user: 'postgres', dbname: 'postgres' };
const ep = (host: string, user = 'postgres', port = 5432, password?: string): Endpoint =>
  endpointOf(resolveConnection('source', { host, user, port, password }, {}, DEFAULTS));
const passfileLine = (e: Endpoint, pw: string): string =>
  conninfoPassfileLines(endpointOf(resolveConnection('source', { host: e.host, user: e.user, port: e.port, password: pw }, {}, DEFAULTS)).spec).join('\n');

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

describe('prepareChildAuth', () => {
  const base = {
    HOME: '/nonexistent',
    PATH: '/usr/bin',
    PGHOST: 'elsewhere',
    PGPASSWORD: 'from-env',
    PGSSLMODE: 'disable',
    PGTZ: 'UTC',
    PG_MIGRATE_FROM_PASS: 'secret',
    PG_MIGRATE_TO_HOST: 'x',
  } as NodeJS.ProcessEnv;

  it('gives the children no libpq connection variable and no PG_MIGRATE_* one: the conninfo says it all', async () => {
    const auth = await prepareChildAuth([ep('src.example'), ep('dst.example')], base);
    try {
      for (const k of ['PGHOST', 'PGPASSWORD', 'PGSSLMODE', 'PG_MIGRATE_FROM_PASS', 'PG_MIGRATE_TO_HOST', 'PGPASSFILE'])
        assert.equal(auth.env[k], undefined, k);
      assert.equal(auth.env.PGTZ, 'UTC');
      assert.equal(auth.env.PATH, '/usr/bin');
      assert.equal(auth.dir, undefined, 'no passfile when no side holds a password');
    } finally {
      await auth.dispose();
    }
  });

  it("writes the sides' passwords to a private 0600 passfile, removed by dispose", async () => {
    const auth = await prepareChildAuth([ep('src.example', 'app', 6432, 'pa:ss'), ep('dst.example')], base);
    const file = auth.env.PGPASSFILE;
    assert.ok(file !== undefined && auth.dir !== undefined);
    assert.equal(statSync(file).mode & 0o777, 0o600);
    assert.equal(readFileSync(file, 'utf8'), 'src.example:6432:*:app:pa\\:ss\n');
    assert.equal(libpqLookup(readFileSync(file, 'utf8'), 'src.example', 6432, 'shop', 'app', '/tmp'), 'pa:ss');
    await auth.dispose();
    assert.ok(!existsSync(auth.dir));
  });
});
