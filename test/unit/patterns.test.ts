import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { globMatch, matchesAny, parseTablePattern, patternMatchesDatabase, patternMatchesTable } from '../../src/patterns.ts';

const matches = (pattern: string, db: string, schema: string, table: string): boolean => patternMatchesTable(parseTablePattern(pattern), db, schema, table);

describe('parseTablePattern', () => {
  it('DATABASE.TABLE has no schema', () => {
    const p = parseTablePattern('mydb.events');
    assert.equal(p.source, 'mydb.events');
    assert.equal(p.database, 'mydb');
    assert.equal(p.schema, undefined);
    assert.equal(p.table, 'events');
  });

  it('DATABASE.SCHEMA.TABLE keeps the schema', () => {
    const p = parseTablePattern('mydb.public.events_2024_*');
    assert.equal(p.database, 'mydb');
    assert.equal(p.schema, 'public');
    assert.equal(p.table, 'events_2024_*');
  });

  it('folds unquoted parts to lower case and keeps quoted parts as written', () => {
    const p = parseTablePattern('"My DB"."Events"');
    assert.equal(p.database, 'My DB');
    assert.equal(p.table, 'Events');
    const q = parseTablePattern('MyDb.Public.EVENTS');
    assert.equal(q.database, 'mydb');
    assert.equal(q.schema, 'public');
    assert.equal(q.table, 'events');
  });

  it('folds only ASCII A-Z, as PostgreSQL and psql do in a UTF-8 database', () => {
    // CREATE TABLE Événements (...) in a UTF8 database is stored as "Événements": the server's
    // downcase_identifier() and psql's pattern code fold only A-Z for multi-byte encodings.
    const p = parseTablePattern('mydb.Événements');
    assert.equal(p.table, 'Événements');
    assert.ok(patternMatchesTable(p, 'mydb', 'public', 'Événements'));
  });

  it('throws a helpful message for too many parts, empty parts and unterminated quotes', () => {
    assert.throws(() => parseTablePattern('a.b.c.d'), /must be DATABASE\.TABLE or DATABASE\.SCHEMA\.TABLE.*double quotes/);
    assert.throws(() => parseTablePattern('events'), /must be DATABASE\.TABLE or DATABASE\.SCHEMA\.TABLE/);
    assert.throws(() => parseTablePattern('mydb..events'), /empty name part/);
    assert.throws(() => parseTablePattern('.events'), /empty name part/);
    assert.throws(() => parseTablePattern('mydb.'), /empty name part/);
    assert.throws(() => parseTablePattern(''), /empty name part/);
    assert.throws(() => parseTablePattern('mydb."events'), /unterminated double quote/);
    assert.throws(() => parseTablePattern('"my.db.events'), /unterminated double quote.*"\\"my\.db\.events"/);
  });
});

describe('patternMatchesTable', () => {
  it('plain name matches only that table, in any schema', () => {
    assert.ok(matches('mydb.events', 'mydb', 'public', 'events'));
    assert.ok(matches('mydb.events', 'mydb', 'archive', 'events'));
    assert.ok(!matches('mydb.events', 'mydb', 'public', 'events2'));
    assert.ok(!matches('mydb.events', 'mydb', 'public', 'Events'));
    assert.ok(!matches('mydb.events', 'otherdb', 'public', 'events'));
    assert.ok(!matches('mydb.events', 'mydb2', 'public', 'events'));
  });

  it('* in an unquoted part is a wildcard', () => {
    assert.ok(matches('mydb.fact_*', 'mydb', 'public', 'fact_sales'));
    assert.ok(matches('mydb.fact_*', 'mydb', 'public', 'fact_'));
    assert.ok(!matches('mydb.fact_*', 'mydb', 'public', 'dim_fact_sales'));
    assert.ok(matches('*.events', 'anydb', 's', 'events'));
    assert.ok(matches('mydb.ev?nts', 'mydb', 's', 'events'));
    assert.ok(!matches('mydb.ev?nts', 'mydb', 's', 'evnts'));
  });

  it('a schema-qualified pattern matches only that schema', () => {
    assert.ok(matches('mydb.public.events_2024_*', 'mydb', 'public', 'events_2024_01'));
    assert.ok(!matches('mydb.public.events_2024_*', 'mydb', 'archive', 'events_2024_01'));
    assert.ok(!matches('mydb.public.events_2024_*', 'mydb', 'public', 'events_2023_12'));
    assert.ok(matches('mydb.*.events', 'mydb', 'archive', 'events'));
  });

  it('quoted parts are literal and case-sensitive', () => {
    assert.ok(matches('"My DB"."Events"', 'My DB', 'public', 'Events'));
    assert.ok(!matches('"My DB"."Events"', 'my db', 'public', 'events'));
    assert.ok(!matches('"My DB"."Events"', 'My DB', 'public', 'events'));
    // Unquoted upper case is folded, so it finds the lower-case table only.
    assert.ok(matches('mydb.Events', 'mydb', 'public', 'events'));
    assert.ok(!matches('mydb.Events', 'mydb', 'public', 'Events'));
  });

  it('a quoted part may contain dots', () => {
    const p = parseTablePattern('"my.db".events');
    assert.equal(p.database, 'my.db');
    assert.equal(p.schema, undefined);
    assert.ok(patternMatchesTable(p, 'my.db', 'public', 'events'));
    assert.ok(!patternMatchesTable(p, 'myxdb', 'public', 'events'));
    const q = parseTablePattern('mydb."a.b"."c.d"');
    assert.ok(patternMatchesTable(q, 'mydb', 'a.b', 'c.d'));
  });

  it('"" inside quotes is one double quote', () => {
    assert.ok(matches('mydb."say ""hi"""', 'mydb', 'public', 'say "hi"'));
    assert.ok(!matches('mydb."say ""hi"""', 'mydb', 'public', 'say hi'));
    assert.ok(matches('"a""b".t', 'a"b', 'public', 't'));
  });

  it('* and ? inside quotes are literal', () => {
    assert.ok(matches('mydb."fact_*"', 'mydb', 'public', 'fact_*'));
    assert.ok(!matches('mydb."fact_*"', 'mydb', 'public', 'fact_sales'));
    assert.ok(matches('mydb."a?"', 'mydb', 'public', 'a?'));
    assert.ok(!matches('mydb."a?"', 'mydb', 'public', 'ab'));
  });

  it('mixes quoted and unquoted text in one part, as psql does', () => {
    assert.ok(matches('mydb."Big"_*', 'mydb', 'public', 'Big_table'));
    assert.ok(!matches('mydb."Big"_*', 'mydb', 'public', 'big_table'));
  });

  it('/, #, !, [, ], \\ and parentheses in names are literal', () => {
    assert.ok(matches('mydb."a/b"', 'mydb', 'public', 'a/b'));
    assert.ok(matches('mydb.a/b', 'mydb', 'public', 'a/b'));
    assert.ok(matches('mydb.#tmp', 'mydb', 'public', '#tmp'));
    assert.ok(matches('mydb.!x', 'mydb', 'public', '!x'));
    assert.ok(!matches('mydb.!x', 'mydb', 'public', 'y'));
    assert.ok(matches('mydb.t[1]', 'mydb', 'public', 't[1]'));
    assert.ok(!matches('mydb.t[1]', 'mydb', 'public', 't1'));
    assert.ok(matches('mydb."t\\x"', 'mydb', 'public', 't\\x'));
    assert.ok(matches('mydb.+(a)', 'mydb', 'public', '+(a)'));
    assert.ok(matches('mydb.{a,b}', 'mydb', 'public', '{a,b}'));
  });

  it('* crosses / in names', () => {
    assert.ok(matches('mydb.logs*', 'mydb', 'public', 'logs/2024/01'));
    assert.ok(matches('mydb.*/archive', 'mydb', 'public', 'x/y/archive'));
    assert.ok(matches('my*.t', 'my/db', 'public', 't'));
  });

  it('patternMatchesDatabase looks at the database part only', () => {
    const p = parseTablePattern('shop_*.public.orders');
    assert.ok(patternMatchesDatabase(p, 'shop_eu'));
    assert.ok(!patternMatchesDatabase(p, 'warehouse'));
  });
});

describe('globMatch / matchesAny', () => {
  it('* and ? are wildcards, matching is case-sensitive', () => {
    assert.ok(globMatch('shop_eu', 'shop_*'));
    assert.ok(globMatch('shop_eu', 'shop_??'));
    assert.ok(!globMatch('shop_eu', 'shop_?'));
    assert.ok(!globMatch('Shop_eu', 'shop_*'));
    assert.ok(globMatch('anything at all', '*'));
  });

  it('/, #, ! and . are ordinary characters; * crosses /', () => {
    assert.ok(globMatch('a/b', 'a/b'));
    assert.ok(globMatch('a/b/c', 'a*c'));
    assert.ok(globMatch('a/b', '*'));
    assert.ok(globMatch('#x', '#x'));
    assert.ok(!globMatch('x', '#x'));
    assert.ok(globMatch('!x', '!x'));
    assert.ok(!globMatch('x', '!x'));
    assert.ok(globMatch('.hidden', '*'));
    assert.ok(globMatch('a.b', 'a.b'));
    assert.ok(!globMatch('axb', 'a.b'));
    assert.ok(globMatch('{a,b}', '{a,b}'));
    assert.ok(!globMatch('a', '{a,b}'));
    assert.ok(globMatch('a**b', 'a**b'));
  });

  it('[ ] and \\ are ordinary characters too (only * and ? are wildcards)', () => {
    assert.ok(globMatch('reports[2024]', 'reports[2024]'));
    assert.ok(!globMatch('reports2', 'reports[2024]'));
    assert.ok(globMatch('a\\b', 'a\\b'));
    assert.ok(!globMatch('ab', 'a\\b'));
  });

  it('* matches every name, even "." and ".."', () => {
    assert.ok(globMatch('.', '*'));
    assert.ok(globMatch('..', '*'));
    assert.ok(globMatch('..', '.*'));
  });

  it('matchesAny is true when one glob matches, false for no globs', () => {
    assert.ok(matchesAny('shop', ['x', 'sh*']));
    assert.ok(!matchesAny('shop', ['x', 'y*']));
    assert.ok(!matchesAny('shop', []));
  });
});
