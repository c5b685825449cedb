import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { filterTocList, postDataPasses } from '../../src/pg/toc.ts';

/** `pg_restore -l` of a post-data section (as pg_dump 15 lists the benchmark's analytics database), plus a CHECK constraint, a comment and a trigger. */
const LISTING = `;
; Archive created at 2026-11-21 22:53:37 UTC
;     dbname: analytics
;
; Selected TOC Entries:
;
3208; 2606 16591 CONSTRAINT public events events_pkey postgres
3212; 2606 16601 CONSTRAINT public sessions sessions_pkey postgres
3205; 2606 16589 CONSTRAINT public users users_pkey postgres
3206; 1259 16599 INDEX public events_kind_idx postgres
3209; 1259 16598 INDEX public events_ts_idx postgres
3214; 2606 16610 CHECK CONSTRAINT public events events_kind_check postgres
3215; 0 0 COMMENT public CONSTRAINT events_pkey ON events postgres
3216; 2620 16620 TRIGGER public events events_audit postgres
3213; 2606 16592 FK CONSTRAINT public events events_user_fk postgres
`;

/** The entry lines a restore list keeps (not commented out). */
const kept = (list: string): string[] => list.split('\n').filter((l) => /^\d+;/.test(l));

describe('filterTocList', () => {
  it('comments out exactly the constraints whose oid is given, whatever their kind, and nothing else', () => {
    const out = filterTocList(LISTING, new Set(['16592', '16591', '99999']));
    assert.deepEqual(
      kept(out).map((l) => l.split(' ').slice(3).join(' ')),
      [
        'CONSTRAINT public sessions sessions_pkey postgres',
        'CONSTRAINT public users users_pkey postgres',
        'INDEX public events_kind_idx postgres',
        'INDEX public events_ts_idx postgres',
        'CHECK CONSTRAINT public events events_kind_check postgres',
        'COMMENT public CONSTRAINT events_pkey ON events postgres',
        'TRIGGER public events events_audit postgres',
      ],
    );
    assert.match(out, /^;3213; 2606 16592 FK CONSTRAINT /m);
    assert.equal(out.split('\n').length, LISTING.split('\n').length, 'no line added or lost');
  });

  it('matches by oid, not by a number that happens to appear in a name', () => {
    const listing = '3300; 1259 16592 INDEX public idx_16592 postgres\n3301; 2606 16593 CONSTRAINT public t c_16592 postgres\n';
    assert.equal(filterTocList(listing, new Set(['16592'])), listing);
  });
});

describe('postDataPasses', () => {
  it('puts the PRIMARY KEY/UNIQUE/EXCLUDE constraints in a first pass and everything else in the second, each entry once', () => {
    const { keys, rest } = postDataPasses(LISTING, new Set());
    assert.ok(keys !== undefined);
    assert.deepEqual(
      kept(keys).map((l) => l.split(' ').at(-2)),
      ['events_pkey', 'sessions_pkey', 'users_pkey'],
    );
    assert.deepEqual(
      kept(rest).map((l) => l.split(' ')[0]),
      ['3206;', '3209;', '3214;', '3215;', '3216;', '3213;'],
    );
    const all = [...kept(keys), ...kept(rest)].sort();
    assert.deepEqual(all, kept(LISTING).sort());
  });

  it('leaves the skipped foreign keys out of both passes', () => {
    const { keys, rest } = postDataPasses(LISTING, new Set(['16592']));
    assert.ok(!kept(keys!).some((l) => l.includes('events_user_fk')));
    assert.ok(!kept(rest).some((l) => l.includes('events_user_fk')));
    assert.equal(kept(rest).length, 5);
  });

  it('leaves a skipped key constraint out of the first pass, and has none when every key is skipped', () => {
    const { keys, rest } = postDataPasses(LISTING, new Set(['16591']));
    assert.deepEqual(
      kept(keys!).map((l) => l.split(' ').at(-2)),
      ['sessions_pkey', 'users_pkey'],
    );
    assert.ok(!kept(rest).some((l) => l.startsWith('3208;')), 'nor in the second');
    assert.equal(postDataPasses(LISTING, new Set(['16591', '16601', '16589'])).keys, undefined);
  });

  it('restores the foreign keys whose referenced key is in the first pass right after it, the others with the indexes', () => {
    // events_user_fk references users_pkey; a second foreign key references a unique index without a constraint.
    const listing = `${LISTING}3217; 2606 16593 FK CONSTRAINT public sessions sessions_code_fk postgres\n`;
    const referenced = new Map([
      ['16592', '16589'],
      ['16593', '16700'],
    ]);
    const { keys, fks, rest } = postDataPasses(listing, new Set(), referenced);
    assert.ok(keys !== undefined && fks !== undefined);
    assert.deepEqual(
      kept(keys).map((l) => l.split(' ').at(-2)),
      ['events_pkey', 'sessions_pkey', 'users_pkey'],
    );
    assert.deepEqual(
      kept(fks).map((l) => l.split(' ').at(-2)),
      ['events_user_fk'],
    );
    assert.deepEqual(
      kept(rest).map((l) => l.split(' ')[0]),
      ['3206;', '3209;', '3214;', '3215;', '3216;', '3217;'],
    );
    assert.deepEqual([...kept(keys), ...kept(fks), ...kept(rest)].sort(), kept(listing).sort(), 'every entry once');
  });

  it('keeps a foreign key with the indexes when its referenced key is skipped, and has no foreign-key pass then', () => {
    const { keys, fks, rest } = postDataPasses(LISTING, new Set(['16589']), new Map([['16592', '16589']]));
    assert.equal(fks, undefined);
    assert.ok(!kept(keys!).some((l) => l.includes('users_pkey')));
    assert.ok(kept(rest).some((l) => l.includes('events_user_fk')));
  });

  it('has no first pass when the section has no key constraint', () => {
    const listing = '3206; 1259 16599 INDEX public events_kind_idx postgres\n3213; 2606 16592 FK CONSTRAINT public events events_user_fk postgres\n';
    const { keys, rest } = postDataPasses(listing, new Set());
    assert.equal(keys, undefined);
    assert.equal(rest, listing);
  });
});
