/**
 * File names for per-database state. An ordinary name (lower-case ASCII letters, digits, `_` and `-`,
 * not starting with `-`) is used as it is, so `shop.dumped` stays `shop.dumped`. Any other byte is
 * written as `%XX` (UTF-8, upper-case hex). The mapping is one-to-one: an encoded name always holds a
 * `%` and an ordinary one never does; it never yields `.`, `/` or an upper-case letter, so a name
 * stays inside its directory, its suffix is unambiguous, and case-insensitive file systems see no
 * collision either.
 */
const ORDINARY = /^[a-z0-9_][a-z0-9_-]*$/;

export function encodeName(name: string): string {
  if (name === '') return '%';
  if (ORDINARY.test(name)) return name;
  let out = '';
  for (const byte of Buffer.from(name, 'utf8')) {
    const ch = String.fromCharCode(byte);
    if (/[a-z0-9_]/.test(ch) || (ch === '-' && out !== '')) out += ch;
    else out += `%${byte.toString(16).toUpperCase().padStart(2, '0')}`;
  }
  return out;
}

export function decodeName(encoded: string): string {
  if (encoded === '%') return '';
  if (!encoded.includes('%')) return encoded;
  return Buffer.from(
    encoded.replace(/%([0-9A-F]{2})/g, (_, h: string) => String.fromCharCode(parseInt(h, 16))),
    'latin1',
  ).toString('utf8');
}

/** Per-database markers (the seed's file names), in the order the pipeline writes them. */
export const MARKERS = [
  // Written before the first restore attempt: the target database is this migration's to drop and redo.
  'restore_started',
  'dumped',
  'done',
  'verify',
  'delayed_dumped',
  'delayed_indexes_dropped',
  'delayed_done',
  'delayed_indexes_recreated',
  'delayed_verify',
] as const;
export type MarkerName = (typeof MARKERS)[number];

/** The markers by what they mean (the seed's file names say `done` for restored and `delayed` for deferred). */
export const Marker = {
  restoreStarted: 'restore_started',
  dumped: 'dumped',
  restored: 'done',
  verified: 'verify',
  deferredDumped: 'delayed_dumped',
  deferredIndexesDropped: 'delayed_indexes_dropped',
  deferredLoaded: 'delayed_done',
  deferredIndexesRebuilt: 'delayed_indexes_recreated',
  deferredVerified: 'delayed_verify',
} as const satisfies Record<string, MarkerName>;

export function markerFile(db: string, marker: MarkerName): string {
  return `${encodeName(db)}.${marker}`;
}

export type CountsKind = 'src' | 'dst';
export type CountsVariant = '' | 'fast' | 'delayed' | 'delayed.fast';
/** The two verifications of a database: after its regular phase, and after its deferred tables loaded. */
export type VerifyPhase = 'regular' | 'deferred';

/** The counts cache of a phase: exact or fast (reltuples) verify, regular or deferred phase. */
export function countsVariant(fast: boolean, phase: VerifyPhase): CountsVariant {
  if (phase === 'regular') return fast ? 'fast' : '';
  return fast ? 'delayed.fast' : 'delayed';
}

const suffix = (variant: CountsVariant): string => (variant === '' ? '' : `.${variant}`);

/** `<db>.src_counts.json`, `<db>.dst_counts.fast.json`, `<db>.src_counts.delayed.json`, ... */
export function countsFile(db: string, kind: CountsKind, variant: CountsVariant): string {
  return `${encodeName(db)}.${kind}_counts${suffix(variant)}.json`;
}

/** The keys of the source's counts that are estimates (fast verify): `<db>.src_estimated[.variant].json`. */
export function estimatesFile(db: string, variant: CountsVariant): string {
  return `${encodeName(db)}.src_estimated${suffix(variant)}.json`;
}

/** Documents a database's deferred phase keeps (saved definitions). */
export type DatabaseDoc = 'delayed_indexes.json' | 'delayed_fks.json';
