import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { countsFile, decodeName, encodeName, MARKERS, type CountsKind, type CountsVariant } from '../../src/state/names.ts';

const TRICKY = [
  'shop',
  'Shop',
  'SHOP',
  'shop2',
  'my_db-1',
  'a"b',
  '"quoted"',
  "it's",
  'a.b',
  'a%2Eb',
  'a%2eb',
  '%',
  '%%',
  '%25',
  'my db',
  ' ',
  'a/b',
  '../etc',
  '/',
  '\\',
  'ÄÖÜ',
  'äöü',
  'データベース',
  '🐘',
  '..',
  '.',
  '',
  '-',
  '-x',
  '_',
  'x-',
  'CON',
  'con',
  'tab\there',
  'new\nline',
  'a:b',
  'a*b',
  'a?b',
  'a.dumped',
  'shop.delayed',
  'A',
  'a',
  '%41',
];

describe('encodeName / decodeName', () => {
  it('leaves ordinary names unchanged', () => {
    for (const n of ['shop', 'shop2', 'my_db-1', '_', 'x-', '0', 'a_b_c']) assert.equal(encodeName(n), n);
    assert.equal(countsFile('src', ''), 'src_counts.json');
    assert.equal(countsFile('dst', 'fast'), 'dst_counts.fast.json');
    assert.equal(countsFile('src', 'delayed'), 'src_counts.delayed.json');
    assert.equal(countsFile('dst', 'delayed.fast'), 'dst_counts.delayed.fast.json');
  });

  it('encodes other bytes as upper-case %XX', () => {
    assert.equal(encodeName('a.b'), 'a%2Eb');
    assert.equal(encodeName('Shop'), '%53hop');
    assert.equal(encodeName('a b'), 'a%20b');
    assert.equal(encodeName('a/b'), 'a%2Fb');
    assert.equal(encodeName('ä'), '%C3%A4');
    assert.equal(encodeName('a%2Eb'), 'a%252%45b');
    assert.equal(encodeName(''), '%');
  });

  it('round-trips every tricky name', () => {
    for (const n of TRICKY) assert.equal(decodeName(encodeName(n)), n, `round trip of ${JSON.stringify(n)}`);
  });

  it('never collides, not even on a case-insensitive file system', () => {
    const encoded = TRICKY.map(encodeName);
    assert.equal(new Set(encoded).size, TRICKY.length);
    assert.equal(new Set(encoded.map((e) => e.toLowerCase())).size, TRICKY.length);
    assert.equal(new Set(encoded.map((e) => e.toUpperCase())).size, TRICKY.length);
  });

  it('stays inside its directory and keeps the suffix unambiguous', () => {
    for (const n of TRICKY) {
      const e = encodeName(n);
      assert.ok(e.length > 0, JSON.stringify(n));
      assert.ok(!e.includes('/'), `${JSON.stringify(n)} → ${e}`);
      assert.ok(!e.includes('\\'), `${JSON.stringify(n)} → ${e}`);
      assert.ok(!e.includes('.'), `${JSON.stringify(n)} → ${e}`);
      assert.notEqual(e, '.');
      assert.notEqual(e, '..');
      assert.match(e, /^[a-z0-9_%A-F-]+$/, `${JSON.stringify(n)} → ${e}`);
      // Upper case only ever appears as a hex digit right after %.
      assert.ok(!/(?<!%[0-9A-F]?)[A-Z]/.test(e), `${JSON.stringify(n)} → ${e}`);
    }
  });

  it('marks every non-ordinary name with a % and never starts a file name with -', () => {
    // The module's contract: "an encoded name always holds a `%` and an ordinary one never does";
    // an ordinary name does not start with `-`.
    for (const n of TRICKY) {
      const e = encodeName(n);
      if (e === n) assert.match(n, /^[a-z0-9_][a-z0-9_-]*$/, `${JSON.stringify(n)} left unencoded`);
      else assert.ok(e.includes('%'), `${JSON.stringify(n)} → ${e}`);
      assert.ok(!e.startsWith('-'), `${JSON.stringify(n)} → ${e}`);
    }
  });

  it('decodes an ordinary name to itself and % to the empty name', () => {
    assert.equal(decodeName('shop'), 'shop');
    assert.equal(decodeName('%'), '');
    assert.equal(decodeName('a%2Eb'), 'a.b');
    assert.equal(decodeName('a%252%45b'), 'a%2Eb');
    assert.equal(decodeName('%E3%83%87'), 'デ');
  });

  it('stays under 255 bytes for a 63-byte name (the name of its state directory)', () => {
    const names = ['データベース名前二十一文字まであと少し足りない'.slice(0, 21), 'Ä'.repeat(31) + 'x', 'A'.repeat(63), '.'.repeat(63)];
    for (const n of names) assert.ok(Buffer.byteLength(n, 'utf8') <= 63 && Buffer.byteLength(n, 'utf8') >= 62, n);
    for (const n of names) {
      const dir = encodeName(n);
      assert.ok(Buffer.byteLength(dir, 'utf8') < 255, `${dir} is ${Buffer.byteLength(dir, 'utf8')} bytes`);
      assert.ok(!dir.includes('/') && dir !== '.' && dir !== '..');
    }
  });
});

describe('file names inside a database directory', () => {
  it('one file per marker, all distinct, none a counts file', () => {
    assert.equal(new Set(MARKERS).size, MARKERS.length);
    const counts: string[] = [];
    for (const k of ['src', 'dst'] as CountsKind[]) for (const v of ['', 'fast', 'delayed', 'delayed.fast'] as CountsVariant[]) counts.push(countsFile(k, v));
    assert.equal(new Set(counts).size, 8);
    for (const m of MARKERS) assert.ok(!counts.includes(m));
  });

  it('a database named like a run file or a marker gets a directory of its own', () => {
    // The run's files (pair.json, tuning.json, run.lock, globals.done) sit beside databases/, never in it.
    for (const n of ['tuning', 'pair', 'run', 'globals', 'lock', 'databases', 'a.dumped']) assert.ok(!encodeName(n).includes('.') || n.includes('.'));
    assert.equal(encodeName('a.dumped'), 'a%2Edumped');
  });
});
