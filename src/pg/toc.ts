/**
 * An archive's table of contents as `pg_restore -l` lists it, and the `--use-list` files made from
 * it: entries are commented out by the oid of their catalog row, never matched by name.
 */

/** A `pg_restore -l` line of a pg_constraint row (catalog oid 2606): its oid and the entry's kind. */
const TOC_CONSTRAINT = /^\d+; 2606 (\d+) (CONSTRAINT|FK CONSTRAINT|CHECK CONSTRAINT) /;

const isEntry = (line: string): boolean => /^\d+;/.test(line);

/** A `pg_restore -l` listing with the entries for which `drop` is true commented out. */
function commentOut(listing: string, drop: (line: string) => boolean): string {
  return listing
    .split('\n')
    .map((line) => (isEntry(line) && drop(line) ? `;${line}` : line))
    .join('\n');
}

/**
 * Comments out the TOC entries of the given pg_constraint rows in a `pg_restore -l` listing. Lines are
 * matched by the object's oid, never by its name.
 */
export function filterTocList(listing: string, constraintOids: Set<string>): string {
  return commentOut(listing, (line) => constraintOids.has(TOC_CONSTRAINT.exec(line)?.[1] ?? ''));
}

/** Whether a listing holds a foreign key at all (the catalog query of postDataPasses is only needed then). */
export const hasForeignKey = (listing: string): boolean => listing.includes(' FK CONSTRAINT ');

/** The passes of postDataPasses, in the order they are restored. */
export const POST_DATA_PASSES = ['keys', 'fks', 'rest'] as const;
export type PostDataPass = (typeof POST_DATA_PASSES)[number];

/**
 * The post-data section as up to three restore lists, run one after the other (each with pg_restore
 * -j), leaving out the constraints in `skip` as filterTocList does:
 * 1. `keys`: the PRIMARY KEY, UNIQUE and EXCLUDE constraints (entries of kind CONSTRAINT). pg_restore
 *    -j starts `ALTER TABLE … ADD PRIMARY KEY` (an ACCESS EXCLUSIVE lock) beside the CREATE INDEX of
 *    the same table and the job waits until that index is built; keys first, the indexes of one
 *    table then build side by side.
 * 2. `fks`: the foreign keys whose referenced key (`referenced`: foreign key oid → key constraint oid)
 *    was restored in the first pass. Checking a foreign key is one single-threaded scan of the
 *    referencing table that needs only the referenced key; after the indexes (pg_dump's order) the
 *    check of the biggest table ends the run on one core, after waiting for that table's index builds
 *    (its lock conflicts with theirs). Here it runs beside the other databases' work instead.
 * 3. `rest`: everything else (indexes, the other foreign keys, check constraints, triggers, comments...).
 * `keys` and `fks` are undefined when they would be empty.
 */
export function postDataPasses(
  listing: string,
  skip: Set<string>,
  referenced = new Map<string, string>(),
): Record<PostDataPass, string | undefined> & { rest: string } {
  const entry = (line: string): RegExpExecArray | null => TOC_CONSTRAINT.exec(line);
  const wanted = filterTocList(listing, skip);
  const lines = wanted.split('\n').filter(isEntry);
  const keyOid = (line: string): string | undefined => {
    const e = entry(line);
    return e?.[2] === 'CONSTRAINT' ? e[1] : undefined;
  };
  const keyOids = new Set(lines.map(keyOid).filter((oid) => oid !== undefined));
  const isKey = (line: string): boolean => keyOid(line) !== undefined;
  const isEarlyFk = (line: string): boolean => {
    const e = entry(line);
    return e?.[2] === 'FK CONSTRAINT' && keyOids.has(referenced.get(e[1] ?? '') ?? '');
  };
  return {
    keys: keyOids.size > 0 ? commentOut(wanted, (line) => !isKey(line)) : undefined,
    fks: lines.some(isEarlyFk) ? commentOut(wanted, (line) => !isEarlyFk(line)) : undefined,
    rest: commentOut(wanted, (line) => isKey(line) || isEarlyFk(line)),
  };
}
