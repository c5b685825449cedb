import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { countsFile, decodeName, encodeName, markerFile, MARKERS, type CountsKind, type CountsVariant } from '../../src/state/names.ts';

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
    assert.equal(markerFile('shop', 'dumped'), 'shop.dumped');
    assert.equal(countsFile('shop', 'src', ''), 'shop.src_counts.json');
    assert.equal(countsFile('shop', 'dst', 'fast'), 'shop.dst_counts.fast.json');
    assert.equal(countsFile('shop', 'src', 'delayed'), 'shop.src_counts.delayed.json');
    assert.equal(countsFile('shop', 'dst', 'delayed.fast'), 'shop.dst_counts.delayed.fast.json');
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

  it('stays under 255 bytes with the longest suffix for a 63-byte name', () => {
    const names = ['データベース名前二十一文字まであと少し足りない'.slice(0, 21), 'Ä'.repeat(31) + 'x', 'A'.repeat(63), '.'.repeat(63)];
    for (const n of names) assert.ok(Buffer.byteLength(n, 'utf8') <= 63 && Buffer.byteLength(n, 'utf8') >= 62, n);
    const suffixes: string[] = [];
    for (const m of MARKERS) suffixes.push(markerFile('', m).slice(1));
    for (const k of ['src', 'dst'] as CountsKind[])
      for (const v of ['', 'fast', 'delayed', 'delayed.fast'] as CountsVariant[]) suffixes.push(countsFile('', k, v).slice(1));
    assert.ok(suffixes.includes('.src_counts.delayed.fast.json'));
    for (const n of names) {
      for (const f of [...MARKERS.map((m) => markerFile(n, m)), countsFile(n, 'src', 'delayed.fast'), countsFile(n, 'dst', 'delayed.fast')]) {
        assert.ok(Buffer.byteLength(f, 'utf8') < 255, `${f} is ${Buffer.byteLength(f, 'utf8')} bytes`);
        assert.ok(!f.includes('/'));
      }
    }
  });
});

describe('markerFile / countsFile', () => {
  it('one file per marker, all distinct, suffix after the only dot of the encoded name', () => {
    assert.deepEqual(
      MARKERS.map((m) => markerFile('shop', m)),
      MARKERS.map((m) => `shop.${m}`),
    );
    assert.equal(new Set(MARKERS).size, MARKERS.length);
    assert.equal(markerFile('a.b', 'done'), 'a%2Eb.done');
    assert.equal(markerFile('', 'done'), '%.done');
    // Database "a.dumped" cannot be mistaken for the dumped marker of database "a".
    assert.notEqual(markerFile('a.dumped', 'done').split('.')[0], 'a');
  });

  it('counts files of names that need encoding', () => {
    assert.equal(countsFile('My DB', 'src', 'fast'), '%4Dy%20%44%42.src_counts.fast.json');
    assert.equal(countsFile('..', 'dst', ''), '%2E%2E.dst_counts.json');
  });
});
