/**
 * Content checksums of tables, computed by the servers (no row passes through the tool) and
 * independent of the physical row order: every row's text form is hashed and the hashes are summed
 * as two 64-bit values, with the row count. Where both servers are 11 or newer and the database is
 * UTF8, the hashes are hashtextextended() with two seeds (PostgreSQL's own 64-bit hash, about four
 * times cheaper than md5 on the benchmark's tables); otherwise the two halves of md5 of the row's
 * UTF-8 bytes. Sums are
 * additive, so a big table is hashed in page ranges that run in parallel on each side, split by each
 * side's own layout, and the parts added up.
 *
 * The text form of equal values must be the same on both servers whatever their versions: the
 * settings that steer output are pinned in every checksum session (see CHECKSUM_SETTINGS).
 */
import type pg from 'pg';
import { pageRanges, rangePredicate, type PageRange } from '../transfer/ranges.ts';
import { oneRow } from '../pg/connect.ts';

/**
 * Settings that make equal values print equal text on every version from 9.x to 18: timestamps,
 * dates and intervals in one spelling and zone, bytea in hex, money without a locale, reg* values
 * always schema-qualified (an empty search_path; pg_catalog is searched anyway). Floats: see
 * checksumOptions.
 */
export const CHECKSUM_SETTINGS: readonly (readonly [string, string])[] = [
  ['search_path', ''],
  ['DateStyle', 'ISO, YMD'],
  ['IntervalStyle', 'postgres'],
  ['TimeZone', 'UTC'],
  ['bytea_output', 'hex'],
  ['lc_monetary', 'C'],
];

/** How a pair of servers hashes: the extra_float_digits both sides use; whether both have hashtextextended (11+). */
export interface ChecksumOptions {
  floatDigits: number;
  fastHash?: boolean;
}

/** Whether the two versions print floats alike with extra_float_digits 3 (both before 12, or both 12 and later). */
export const floatsComparable = (majorA: number, majorB: number): boolean => majorA >= 12 === majorB >= 12;

/**
 * extra_float_digits 3 where both servers print floats alike with it: from 12 on any positive value
 * prints the shortest exact form, before 12 3 prints 17 significant digits (exact too). Across 12 (an
 * 11 or older server against a 12 or newer) the two differ for equal values; 0 makes both round to 15
 * (real: 6) significant digits the same way, so floats are then compared to that precision.
 */
export const checksumOptions = (majorA: number, majorB: number): ChecksumOptions => ({
  floatDigits: floatsComparable(majorA, majorB) ? 3 : 0,
  fastHash: majorA >= 11 && majorB >= 11,
});

/** One statement that pins the settings for the session (or the transaction it is sent in). */
export function settingsSql(o: ChecksumOptions): string {
  const all: (readonly [string, string])[] = [['extra_float_digits', String(o.floatDigits)], ...CHECKSUM_SETTINGS];
  return `select ${all.map(([k, v]) => `set_config('${k}', '${v}', false)`).join(', ')}`;
}

/** A 64-bit half of a row's md5 as a signed bigint, summed as numeric (no overflow). */
const half = (from: number): string => `coalesce(sum(('x' || substr(h, ${String(from)}, 16))::bit(64)::bigint::numeric), 0)::text`;

/**
 * The query of one table or one page range of it: its row count and the two sums. `rel` is the
 * qualified, quoted name; `only` leaves out inheritance children (which are tables of their own). The
 * row is `(alias.*)`: a bare alias would mean a column of that name if the table has one.
 */
export function checksumSql(rel: string, opts: { only: boolean; range?: PageRange | null; where?: string; fast?: boolean }): string {
  const conditions = [...(opts.range ? [rangePredicate(opts.range)] : []), ...(opts.where === undefined ? [] : [`(${opts.where})`])];
  const where = conditions.length > 0 ? ` where ${conditions.join(' and ')}` : '';
  if (opts.fast === true) {
    // hashtextextended returns a bigint: sum() of bigints is exact (numeric).
    return (
      `select count(*)::text as n, coalesce(sum(hashtextextended(h, 0)), 0)::text as a, coalesce(sum(hashtextextended(h, 1)), 0)::text as b` +
      ` from (select (pgm_row.*)::text as h from ${opts.only ? 'only ' : ''}${rel} pgm_row${where}) s`
    );
  }
  return (
    `select count(*)::text as n, ${half(1)} as a, ${half(17)} as b` +
    ` from (select md5(convert_to((pgm_row.*)::text, 'UTF8')) as h from ${opts.only ? 'only ' : ''}${rel} pgm_row${where}) s`
  );
}

/** Each range holds at most this many bytes of heap. */
export const CHECKSUM_RANGE_BYTES = 128 * 1024 ** 2;

/**
 * The page ranges a table is hashed in: one (null, the whole table) unless the server has TID range
 * scans (14+, a range reads only its pages) and the table is over CHECKSUM_RANGE_BYTES; then as many
 * as its size asks for, at most `maxParts`.
 */
export function checksumRanges(pages: number, blockSize: number, major: number, maxParts: number): (PageRange | null)[] {
  const parts = Math.min(Math.max(1, maxParts), Math.ceil((pages * blockSize) / CHECKSUM_RANGE_BYTES));
  if (major < 14 || parts < 2) return [null];
  return pageRanges(pages, parts);
}

/** A table's checksum: rows and the two sums. */
export interface Checksum {
  rows: number;
  a: bigint;
  b: bigint;
}

/** Adds the checksums of a table's parts. */
export function addChecksums(parts: Checksum[]): Checksum {
  return parts.reduce((s, p) => ({ rows: s.rows + p.rows, a: s.a + p.a, b: s.b + p.b }), { rows: 0, a: 0n, b: 0n });
}

/** A checksum as it is kept and compared: `rows:a:b`. */
export const formatChecksum = (c: Checksum): string => `${String(c.rows)}:${c.a.toString()}:${c.b.toString()}`;

/** The rows of a kept checksum. */
export const checksumRows = (text: string): number => Number(text.split(':')[0]);

/**
 * Runs one checksum query on a session (settings pinned first, in the same transaction if one is
 * open); `filter`: only the rows this condition (with its parameters) selects.
 */
export async function runChecksum(
  c: pg.ClientBase,
  rel: string,
  only: boolean,
  range: PageRange | null,
  opts: ChecksumOptions,
  filter?: { where: string; params: unknown[] },
): Promise<Checksum> {
  // The fast hash hashes the database's own bytes: UTF8 on both sides (the md5 path converts to UTF-8 itself).
  const enc = oneRow(await c.query<{ enc: string }>(`${settingsSql(opts)}, current_setting('server_encoding') as enc`)).enc;
  const fast = opts.fastHash === true && enc === 'UTF8';
  const row = oneRow(await c.query<{ n: string; a: string; b: string }>(checksumSql(rel, { only, range, where: filter?.where, fast }), filter?.params));
  return { rows: Number(row.n), a: BigInt(row.a), b: BigInt(row.b) };
}

/** Heap pages of the given relations now (pg_relation_size) and the block size, keyed by qualified name. */
export async function relationPages(c: pg.ClientBase, rels: string[]): Promise<{ pages: Map<string, number>; blockSize: number }> {
  const r = await c.query<{ rel: string; pages: string; bs: string }>(
    `select r as rel, (pg_relation_size(r::regclass) / current_setting('block_size')::int)::text as pages, current_setting('block_size') as bs
       from unnest($1::text[]) r`,
    [rels],
  );
  return { pages: new Map(r.rows.map((row) => [row.rel, Number(row.pages)])), blockSize: Number(r.rows[0]?.bs ?? 8192) };
}

/**
 * Differences of content between two sides' checksums: only for tables whose row counts agree (a
 * count that differs, or a table missing, is reported by the count comparison). A table the target
 * has (`dstCounts`) but did not hash is named too: nothing is called equal that was not compared.
 */
export function compareChecksums(src: Record<string, string>, dst: Record<string, string>, dstCounts: Record<string, number>): string[] {
  const out: string[] = [];
  for (const [key, s] of Object.entries(src)) {
    const d = dst[key];
    if (d === undefined) {
      if (key in dstCounts) out.push(`table ${key}: hashed on the source but not on the target (its content was not compared)`);
      continue;
    }
    if (d === s || checksumRows(d) !== checksumRows(s)) continue;
    out.push(`table ${key}: same row count (${String(checksumRows(s))}) but different content (checksums differ)`);
  }
  return out;
}
