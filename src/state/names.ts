/**
 * Names of state files. A database's files live in a directory of its own (databases/<encoded name>/),
 * apart from the run's own files, so no database name can collide with them.
 *
 * An ordinary database name (lower-case ASCII letters, digits, `_` and `-`, not starting with `-`) is
 * used as it is, so `shop`'s directory is `databases/shop/`. Any other byte is written as `%XX`
 * (UTF-8, upper-case hex). The mapping is one-to-one: an encoded name always holds a `%` and an
 * ordinary one never does; it never yields `.`, `/` or an upper-case letter, so a name stays inside
 * its directory and case-insensitive file systems see no collision either.
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
  // Written before the first restore attempt, then with the oid of the database the restore created:
  // the target database this migration may drop and redo.
  'restore_started',
  'dumped',
  'done',
  'verify',
  'delayed_indexes_dropped',
  // Since deferred loads copy server to server, written together with delayed_done (streamed: true).
  'delayed_dumped',
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

/** `src_counts.json`, `dst_counts.fast.json`, `src_counts.delayed.json`, ... (in the database's directory). */
export function countsFile(kind: CountsKind, variant: CountsVariant): string {
  return `${kind}_counts${suffix(variant)}.json`;
}

/** The keys of the source's counts that are estimates (fast verify): `src_estimated[.variant].json`. */
export function estimatesFile(variant: CountsVariant): string {
  return `src_estimated${suffix(variant)}.json`;
}

/** Documents a database keeps beside its markers. */
export type DatabaseDoc =
  /** Saved definitions of the deferred tables' dropped indexes. */
  | 'delayed_indexes.json'
  /** Saved definitions of the deferred tables' foreign keys. */
  | 'delayed_fks.json'
  /** The load units of the deferred tables and what each committed. */
  | 'delayed_loads.json'
  /** A --redo-db this migration has acted on. */
  | 'redo.json'
  /** Why the database's last attempt failed, and in which step (removed once it verifies). */
  | 'last_error.json'
  /** Its publication, slot and subscription (online mode). */
  | 'online.json'
  /** The units of the unreplicated tables' copy at cutover (online mode). */
  | 'cutover_loads.json'
  /** The source's table checksums of the regular phase, taken in the snapshot its data was read in (--verify checksum). */
  | 'src_checksums.json'
  /** The same of the deferred phase (the deferred tables, in the snapshot their load read). */
  | 'src_checksums.delayed.json'
  /** The source's sequence values and large objects, read when its data was (see pipeline/objects.ts). */
  | 'src_objects.json';

/** Files a database's state keeps when it is forgotten: what proves the target copy is ours, the redo record, and the replication objects to drop before a new copy (online.json). */
export const KEPT_BY_FORGET: readonly string[] = ['restore_started', 'redo.json', 'online.json'];

/** Per-database file suffixes of the first state layout (`<db>.<suffix>` in pg_migrate_state/ and pg_verify_state/). */
export const LEGACY_DATABASE_SUFFIXES: readonly string[] = [
  ...MARKERS,
  'delayed_indexes.json',
  'delayed_fks.json',
  ...(['', 'fast', 'delayed', 'delayed.fast'] as const).flatMap((v) => [countsFile('src', v), countsFile('dst', v), estimatesFile(v)]),
];
