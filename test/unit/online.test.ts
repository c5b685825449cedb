import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { truncateHazards } from '../../src/pipeline/online.ts';

const t = (name: string, publishable: boolean, why?: string) => ({ schema: 'public', name, publishable, bytes: 0, ...(why ? { why } : {}) });
const fk = (from: string, to: string) => ({ from: { schema: 'public', name: from }, to: { schema: 'public', name: to } });

describe('truncateHazards', () => {
  it('names a table left out of the publication that references a published one, with the remedy for its reason', () => {
    const classes = [t('parent', true), t('child', false, 'no primary key or replica identity'), t('scratch', false, 'unlogged'), t('other', true)];
    const out = truncateHazards(classes, [fk('child', 'parent'), fk('scratch', 'parent'), fk('other', 'parent'), fk('parent', 'scratch')]);
    assert.equal(out.length, 2, out.join('\n'));
    assert.match(
      out[0] ?? '',
      /^public\.child is not replicated \(no primary key or replica identity; copied at cutover\) but references public\.parent, .*TRUNCATE of public\.parent .*give public\.child a primary key/,
    );
    assert.match(out[1] ?? '', /^public\.scratch is not replicated \(unlogged.*make public\.scratch logged/);
  });
  it('says nothing when both sides are published, or both are left out', () => {
    assert.deepEqual(truncateHazards([t('a', true), t('b', true), t('c', false), t('d', false)], [fk('a', 'b'), fk('c', 'd')]), []);
  });
});
