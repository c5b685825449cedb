/** pg_service.conf read as libpq 15 reads it (behaviour checked against libpq with PQconnectStart). */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { ConninfoError } from '../../src/pg/conninfo-parse.ts';
import { DEFAULT_SYSCONFDIR, lookupService, parseServiceFile, readTextIfExists, serviceFileLocations } from '../../src/pg/servicefile.ts';
import { writeServiceFile } from '../harness/libpq.ts';

function problem(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof ConninfoError, `expected a ConninfoError, got ${String(err)}`);
    return err.message;
  }
  return assert.fail('expected a ConninfoError');
}

describe('parseServiceFile', () => {
  const text = [
    '# a comment',
    '[other]',
    'host=wrong',
    '  [old] anything after the bracket',
    '  host=db-old.example  ',
    '   # indented comment',
    '',
    'port=5433',
    'host=ignored: the first value wins',
    'options=-c search_path=a,b',
    '[new]',
    'host=db-new.example',
  ].join('\n');

  it('takes the keywords of the named section as written (trimmed lines, first value wins)', () => {
    assert.deepEqual(parseServiceFile(text, 'old', 'f'), { host: 'db-old.example', port: '5433', options: '-c search_path=a,b' });
    assert.deepEqual(parseServiceFile(text, 'new', 'f'), { host: 'db-new.example' });
    assert.equal(parseServiceFile(text, 'missing', 'f'), undefined);
    assert.equal(parseServiceFile(text, 'ol', 'f'), undefined);
  });

  it('refuses what libpq refuses, naming the file and line', () => {
    assert.match(
      problem(() => parseServiceFile('[s]\nhost = a\n', 's', '/x/pg_service.conf')),
      /syntax error in service file "\/x\/pg_service.conf", line 2/,
    );
    assert.match(
      problem(() => parseServiceFile('[s]\nhots=a\n', 's', 'f')),
      /line 2: invalid keyword "hots" \(did you mean host\?\)/,
    );
    assert.match(
      problem(() => parseServiceFile('[s]\nhost\n', 's', 'f')),
      /line 2: expected keyword=value/,
    );
    assert.match(
      problem(() => parseServiceFile('[s]\nservice=t\n', 's', 'f')),
      /nested service specifications not supported in service file "f", line 2/,
    );
    assert.match(
      problem(() => parseServiceFile(`[s]\nhost=${'x'.repeat(1020)}\n`, 's', 'f')),
      /line 2 too long/,
    );
    // Lines of other sections are not looked at.
    assert.deepEqual(parseServiceFile('[t]\nhost = a\n[s]\nhost=b\n', 's', 'f'), { host: 'b' });
  });
});

describe('serviceFileLocations', () => {
  it('uses servicefile, else PGSERVICEFILE, else ~/.pg_service.conf; PGSYSCONFDIR, else the compiled-in directory', () => {
    assert.deepEqual(serviceFileLocations({}, '/home/op'), {
      user: '/home/op/.pg_service.conf',
      named: false,
      system: path.join(DEFAULT_SYSCONFDIR, 'pg_service.conf'),
    });
    assert.deepEqual(serviceFileLocations({ PGSERVICEFILE: '/etc/my.conf', PGSYSCONFDIR: '/opt/pg' }, '/home/op'), {
      user: '/etc/my.conf',
      named: true,
      system: '/opt/pg/pg_service.conf',
    });
    assert.equal(serviceFileLocations({ PGSERVICEFILE: '/etc/my.conf' }, '/home/op', '/kw.conf', '/sys').user, '/kw.conf');
    assert.equal(serviceFileLocations({}, '/home/op', undefined, '/sys').system, '/sys/pg_service.conf');
  });
});

describe('lookupService', () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'pgm-service-'));
  after(() => {
    rmSync(dir, { recursive: true, force: true });
  });
  const userFile = path.join(dir, 'user.conf');
  const systemFile = path.join(dir, 'pg_service.conf');

  it('takes the per-user definition, else the system-wide one', async () => {
    await writeServiceFile(userFile, { a: { host: 'user-a' } });
    await writeServiceFile(systemFile, { a: { host: 'system-a', port: '1' }, b: { host: 'system-b' } });
    const files = { user: userFile, named: true, system: systemFile };
    // Found in the user file: the system file is not consulted, not even for keywords the user's section lacks.
    assert.deepEqual(lookupService('a', files), { name: 'a', file: userFile, params: { host: 'user-a' } });
    assert.deepEqual(lookupService('b', files), { name: 'b', file: systemFile, params: { host: 'system-b' } });
  });

  it('skips a missing ~/.pg_service.conf and a missing system file, but not a named file', () => {
    const missing = path.join(dir, 'nope.conf');
    assert.equal(lookupService('b', { user: missing, named: false, system: systemFile }).file, systemFile);
    assert.match(
      problem(() => lookupService('b', { user: missing, named: true, system: systemFile })),
      /service file ".*nope.conf" not found/,
    );
    const m = problem(() => lookupService('zz', { user: userFile, named: true, system: path.join(dir, 'none', 'pg_service.conf') }));
    assert.match(m, /definition of service "zz" not found \(searched .*user\.conf and .*none\/pg_service\.conf\)/);
  });

  it('reads files through the reader it is given', () => {
    const read = (f: string): string | undefined => (f === '/u' ? '[s]\nport=7\n' : undefined);
    assert.deepEqual(lookupService('s', { user: '/u', named: false, system: '/s' }, read).params, { port: '7' });
    assert.equal(readTextIfExists(path.join(dir, 'absent')), undefined);
  });
});
