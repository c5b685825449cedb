/**
 * What row counts and table checksums do not see: sequences' values and large objects. Both are read
 * by the servers and compared by value: every sequence's last_value and is_called, and the large
 * objects' count with an order-independent hash of every object's oid and content (md5 computed on
 * the server, summed as the table checksums are).
 */
import type pg from 'pg';
import { sequences } from '../pg/catalog.ts';
import { oneRow } from '../pg/connect.ts';
import { qualify } from '../pg/sql.ts';

/** A sequence's value: `last_value` and whether nextval has been called since (is_called). */
export interface SequenceValue {
  last: string;
  called: boolean;
}

/** The large objects of a database: how many, and the sum of their (oid, content) hashes. */
export interface LargeObjects {
  count: number;
  hash: string;
}

/** What a database holds beside its tables' rows. */
export interface DatabaseObjects {
  sequences: Record<string, SequenceValue>;
  largeObjects: LargeObjects;
}

/** Every sequence of the user schemas with its value, keyed as tables are (schema-qualified, quoted). */
export async function readSequences(c: pg.ClientBase): Promise<Record<string, SequenceValue>> {
  const out: Record<string, SequenceValue> = {};
  for (const s of await sequences(c)) {
    const key = qualify(s.schema, s.name);
    out[key] = oneRow(await c.query<SequenceValue>(`select last_value::text as last, is_called as called from ${key}`));
  }
  return out;
}

/** The large objects' count and hash (md5 of each object's content, read on the server). */
export async function readLargeObjects(c: pg.ClientBase): Promise<LargeObjects> {
  const row = oneRow(
    await c.query<{ n: string; a: string; b: string }>(
      `select count(*)::text as n,
              coalesce(sum(('x' || substr(h, 1, 16))::bit(64)::bigint::numeric), 0)::text as a,
              coalesce(sum(('x' || substr(h, 17, 16))::bit(64)::bigint::numeric), 0)::text as b
         from (select md5(m.oid::text || ':' || md5(lo_get(m.oid))) as h from pg_largeobject_metadata m) s`,
    ),
  );
  return { count: Number(row.n), hash: `${row.a}:${row.b}` };
}

/** Sequences and large objects of the database a session is in. */
export async function readObjects(c: pg.ClientBase): Promise<DatabaseObjects> {
  return { sequences: await readSequences(c), largeObjects: await readLargeObjects(c) };
}

const show = (v: SequenceValue): string => `${v.last}${v.called ? '' : ' (not called)'}`;

/**
 * Whether a target value lies between two source values read before and after (a sequence the source
 * advanced while it was copied: the copy took one of the values in between).
 */
function between(v: SequenceValue, before: SequenceValue, after: SequenceValue): boolean {
  const [t, a, b] = [BigInt(v.last), BigInt(before.last), BigInt(after.last)];
  return a <= b ? a <= t && t <= b : b <= t && t <= a;
}

export interface ObjectsComparison {
  /** Differences. */
  errors: string[];
  /** Sequences that moved on the source while it was copied (the target holds a value in between), and target-only sequences. */
  warnings: string[];
}

/**
 * Compares what the source held (`src`), the target holds (`dst`) and, when given, what the source
 * holds now (`srcNow`: a sequence whose target value lies between the two source readings was copied
 * while the source used it, and is reported as a warning, not a difference).
 */
export function compareObjects(src: DatabaseObjects, dst: DatabaseObjects, srcNow?: DatabaseObjects): ObjectsComparison {
  const errors: string[] = [];
  const warnings: string[] = [];
  for (const [key, s] of Object.entries(src.sequences)) {
    const d = dst.sequences[key];
    if (d === undefined) errors.push(`sequence ${key} is missing on the target`);
    else if (d.last !== s.last || d.called !== s.called) {
      const now = srcNow?.sequences[key];
      const text = `sequence ${key}: ${show(s)} on the source, ${show(d)} on the target`;
      if (now !== undefined && now.last !== s.last && between(d, s, now))
        warnings.push(`${text}; the source moved on to ${show(now)} while it was copied (the source was in use)`);
      else errors.push(text);
    }
  }
  for (const key of Object.keys(dst.sequences)) if (!(key in src.sequences)) warnings.push(`sequence ${key} exists only on the target`);
  const [a, b] = [src.largeObjects, dst.largeObjects];
  if (a.count !== b.count) errors.push(`large objects: ${String(a.count)} on the source, ${String(b.count)} on the target`);
  else if (a.hash !== b.hash) errors.push(`large objects: the same number (${String(a.count)}) but different content or oids (hashes differ)`);
  return { errors, warnings };
}
