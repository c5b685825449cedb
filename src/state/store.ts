/**
 * StateStore: the state directory (pg_migrate_state/) and the only code that builds a state file's
 * name: the run's documents (pair, tuning backup, roles, fence) and, per database, a DatabaseState
 * with typed markers, counts and documents; atomic writes; the one-time conversion of the first
 * layout. Over 300 lines on purpose: splitting the per-database handle from the store would spread
 * the file-name rules over two files.
 */
import { mkdir, readdir, rename, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { MigrateError, ExitCode } from '../errors.ts';
import {
  countsFile,
  decodeName,
  encodeName,
  estimatesFile,
  KEPT_BY_FORGET,
  LEGACY_DATABASE_SUFFIXES,
  MARKERS,
  type CountsKind,
  type CountsVariant,
  type DatabaseDoc,
  type MarkerName,
} from './names.ts';
import { readJson, removeAtomic, writeFileAtomic } from './files.ts';

export interface ServerIdentity {
  host: string;
  port: number;
  systemIdentifier: string;
}
export interface PairIdentity {
  source: ServerIdentity;
  target: ServerIdentity;
}

export interface MarkerInfo {
  at: string;
  /** Seconds the step took. */
  seconds?: number;
  [key: string]: unknown;
}

export type TableCounts = Record<string, number>;

/** The run's own files in pg_migrate_state/ (a database's files are in databases/<name>/). */
const RUN_FILES = {
  layout: 'layout.json',
  pair: 'pair.json',
  lock: 'run.lock',
  tuning: 'tuning.json',
  globals: 'globals.done',
  roles: 'roles.json',
  fence: 'fence.json',
  memberships: 'memberships.json',
} as const;
const DATABASES = 'databases';
/** The state layout this version writes: 2 = a directory per database. */
const LAYOUT_VERSION = 2;

const describeServer = (s: ServerIdentity): string => `${s.host}:${String(s.port)} (system identifier ${s.systemIdentifier})`;

/**
 * The durable state of one source/target pair in `<stateDir>/pg_migrate_state/`: the run's own files
 * (pair, run lock, tuning backup, globals marker, roles) at the top, each database's markers, counts
 * and saved documents in `databases/<encoded name>/`. Every write is atomic; a marker exists only once
 * its step succeeded. The only place that builds a state file's name.
 */
export class StateStore {
  readonly root: string;
  /** The first layout kept counts here; read once when converting. */
  private readonly legacyCountsDir: string;

  constructor(stateDir: string) {
    this.root = path.join(stateDir, 'pg_migrate_state');
    this.legacyCountsDir = path.join(stateDir, 'pg_verify_state');
  }

  private file(name: string): string {
    return path.join(this.root, name);
  }

  /** Creates the state directory (nothing in it yet: the run lock goes there first). */
  async ensureRoot(): Promise<void> {
    await mkdir(this.root, { recursive: true }).catch((err: unknown) => {
      throw this.unwritable(err);
    });
  }

  /**
   * A file-system error on the state directory itself (not writable, read-only file system, a file in
   * the way) as the operator's problem: exit 2 naming the directory and the fix, not an unexpected error.
   */
  unwritable(err: unknown): unknown {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === undefined || !['EACCES', 'EPERM', 'EROFS', 'ENOENT', 'ENOTDIR', 'EEXIST', 'ENOSPC', 'EDQUOT', 'ELOOP', 'ENAMETOOLONG'].includes(code))
      return err;
    return new MigrateError(
      `the state directory ${this.root} cannot be created or written (${(err as Error).message}); pass --state-dir with a directory this user can write (pg_migrate_state/ is created in it)`,
      ExitCode.usage,
    );
  }

  /** Prepares the state for this version, converting the first layout (files named `<db>.<step>`) once; under the run lock. */
  async init(): Promise<void> {
    await mkdir(path.join(this.root, DATABASES), { recursive: true }).catch((err: unknown) => {
      throw this.unwritable(err);
    });
    const layout = await readJson<{ version: number }>(this.file(RUN_FILES.layout));
    if (layout?.version === LAYOUT_VERSION) return;
    if (layout !== undefined) {
      throw new MigrateError(
        `the state in ${this.root} has layout ${String(layout.version)}, which this pg-migrate does not know (it writes layout ${String(LAYOUT_VERSION)}); use the pg-migrate that wrote it, or start over with --fresh or another --state-dir`,
        ExitCode.stateMismatch,
      );
    }
    await this.convertLegacyLayout();
    await writeFileAtomic(this.file(RUN_FILES.layout), JSON.stringify({ version: LAYOUT_VERSION }));
  }

  /**
   * Moves every `<db>.<step>` file of the first layout into databases/<db>/. The first layout cannot
   * tell the run's globals marker `globals.done` from the restore marker of a database named `globals`:
   * with such a database in the state, nothing is converted and the run stops.
   */
  private async convertLegacyLayout(): Promise<void> {
    const runFiles = new Set<string>(Object.values(RUN_FILES));
    const moves: { from: string; db: string; name: string }[] = [];
    for (const [dir, names] of [
      [this.root, await listDir(this.root)],
      [this.legacyCountsDir, await listDir(this.legacyCountsDir)],
    ] as const) {
      for (const name of names) {
        if (name === DATABASES || name.startsWith('.')) continue;
        const dot = name.indexOf('.');
        const suffix = name.slice(dot + 1);
        if (dot <= 0 || !LEGACY_DATABASE_SUFFIXES.includes(suffix) || (dir === this.root && runFiles.has(name))) continue;
        moves.push({ from: path.join(dir, name), db: name.slice(0, dot), name: suffix });
      }
    }
    if (moves.some((m) => m.db === 'globals')) {
      throw new MigrateError(
        `the state in ${this.root} was written by an earlier pg-migrate and holds a database named "globals", whose restore marker cannot be told apart from the run's own globals marker (globals.done); finish that migration with the earlier pg-migrate, or start over with --fresh or another --state-dir`,
        ExitCode.stateMismatch,
      );
    }
    for (const m of moves) {
      const dir = path.join(this.root, DATABASES, m.db);
      await mkdir(dir, { recursive: true });
      await rename(m.from, path.join(dir, m.name));
    }
    // A deferred load the first layout interrupted recorded nothing of what it committed: say so.
    for (const db of new Set(moves.map((m) => m.db))) {
      const state = this.database(decodeName(db));
      if ((await state.marker('delayed_indexes_dropped')) && !(await state.marker('delayed_done'))) {
        await state.setDoc('delayed_loads.json', { startedAt: new Date().toISOString(), units: [], legacy: true });
      }
    }
    await rm(this.legacyCountsDir, { recursive: true, force: true });
  }

  /** Removes every file of an earlier run but the run lock and the tuning backup (reverted on its own). */
  async wipe(): Promise<void> {
    const keep = new Set<string>([RUN_FILES.lock, RUN_FILES.tuning]);
    for (const name of await listDir(this.root)) if (!keep.has(name)) await rm(this.file(name), { recursive: true, force: true });
    await rm(this.legacyCountsDir, { recursive: true, force: true });
  }

  /** The file of the run lock (pipeline/lock.ts). */
  get lockPath(): string {
    return this.file(RUN_FILES.lock);
  }

  /** The file of the tuning backup (pipeline/tune.ts). */
  get tuningPath(): string {
    return this.file(RUN_FILES.tuning);
  }

  /** The record of a cutover's fence on the source (pipeline/cutover.ts). */
  get fencePath(): string {
    return this.file(RUN_FILES.fence);
  }

  /** The record of the target's roles (pipeline/globals.ts). */
  get rolesPath(): string {
    return this.file(RUN_FILES.roles);
  }

  /** The memberships in owner roles a non-superuser target user granted itself (pipeline/ownership.ts). */
  get membershipsPath(): string {
    return this.file(RUN_FILES.memberships);
  }

  readDoc<T>(file: string): Promise<T | undefined> {
    return readJson<T>(file);
  }

  async writeDoc(file: string, value: unknown): Promise<void> {
    await writeFileAtomic(file, JSON.stringify(value, null, 2), 0o600);
  }

  async removeDoc(file: string): Promise<void> {
    await removeAtomic(file);
  }

  pair(): Promise<PairIdentity | undefined> {
    return readJson<PairIdentity>(this.file(RUN_FILES.pair));
  }

  /**
   * Refuses state that names another pair. The servers are the same when their system identifiers
   * are (another spelling of a host, a URI instead of flags, a new IP resume); host and port are only
   * shown, and compared only for an identity recorded without its identifier.
   */
  async checkPair(pair: PairIdentity): Promise<void> {
    const existing = await this.pair();
    if (existing === undefined) return;
    const same = (a: ServerIdentity, b: ServerIdentity): boolean =>
      a.systemIdentifier !== '' && b.systemIdentifier !== '' ? a.systemIdentifier === b.systemIdentifier : a.host === b.host && a.port === b.port;
    if (same(existing.source, pair.source) && same(existing.target, pair.target)) return;
    const theirs = `source ${describeServer(existing.source)} → target ${describeServer(existing.target)}`;
    throw new MigrateError(
      `the state in ${this.root} belongs to another migration: ${theirs}, but this run is source ${describeServer(pair.source)} → target ${describeServer(pair.target)}. ` +
        'Run again with --fresh to discard that state (and its dumps), or point --state-dir elsewhere.',
      ExitCode.stateMismatch,
    );
  }

  /** Binds the state to this pair, or refuses when it belongs to another one. */
  async claim(pair: PairIdentity): Promise<void> {
    if ((await this.pair()) === undefined) await writeFileAtomic(this.file(RUN_FILES.pair), JSON.stringify(pair, null, 2));
    else await this.checkPair(pair);
  }

  globalsDone(): Promise<MarkerInfo | undefined> {
    return readJson<MarkerInfo>(this.file(RUN_FILES.globals));
  }

  async setGlobalsDone(info: Omit<MarkerInfo, 'at'>): Promise<void> {
    await this.writeDoc(this.file(RUN_FILES.globals), { at: new Date().toISOString(), ...info });
  }

  /** The state of one database. */
  database(name: string): DatabaseState {
    return new DatabaseState(path.join(this.root, DATABASES, encodeName(name)), name, this);
  }

  /** The databases this state has files for. */
  async databaseNames(): Promise<string[]> {
    return (await listDir(path.join(this.root, DATABASES))).filter((n) => !n.startsWith('.')).map(decodeName);
  }
}

/** The markers, counts and saved documents of one database (its own directory). */
export class DatabaseState {
  readonly name: string;
  readonly dir: string;
  private readonly store: StateStore;

  constructor(dir: string, name: string, store: StateStore) {
    this.dir = dir;
    this.name = name;
    this.store = store;
  }

  private file(name: string): string {
    return path.join(this.dir, name);
  }

  marker(marker: MarkerName): Promise<MarkerInfo | undefined> {
    return readJson<MarkerInfo>(this.file(marker));
  }

  async setMarker(marker: MarkerName, info: Omit<MarkerInfo, 'at'> = {}): Promise<void> {
    await writeFileAtomic(this.file(marker), JSON.stringify({ at: new Date().toISOString(), ...info }));
  }

  /** Removes this marker and every later one (a step redone invalidates what followed). */
  async clearFrom(marker: MarkerName): Promise<void> {
    for (const m of MARKERS.slice(MARKERS.indexOf(marker)).reverse()) await removeAtomic(this.file(m));
  }

  counts(kind: CountsKind, variant: CountsVariant): Promise<TableCounts | undefined> {
    return readJson<TableCounts>(this.file(countsFile(kind, variant)));
  }

  async setCounts(kind: CountsKind, variant: CountsVariant, counts: TableCounts): Promise<void> {
    await writeFileAtomic(this.file(countsFile(kind, variant)), JSON.stringify(counts, null, 1));
  }

  /** Removes the counts of the given variants (the source's with the list of its estimated keys). */
  async clearCounts(kind: CountsKind, variants: readonly CountsVariant[]): Promise<void> {
    for (const v of variants) {
      await removeAtomic(this.file(countsFile(kind, v)));
      if (kind === 'src') await removeAtomic(this.file(estimatesFile(v)));
    }
  }

  /** Keys of the source's counts that are estimates (fast verify). */
  async estimated(variant: CountsVariant): Promise<string[]> {
    return (await readJson<string[]>(this.file(estimatesFile(variant)))) ?? [];
  }

  async setEstimated(variant: CountsVariant, keys: string[]): Promise<void> {
    await this.store.writeDoc(this.file(estimatesFile(variant)), keys);
  }

  docPath(doc: DatabaseDoc): string {
    return this.file(doc);
  }

  doc<T>(doc: DatabaseDoc): Promise<T | undefined> {
    return readJson<T>(this.file(doc));
  }

  async setDoc(doc: DatabaseDoc, value: unknown): Promise<void> {
    await this.store.writeDoc(this.file(doc), value);
  }

  async removeDoc(doc: DatabaseDoc): Promise<void> {
    await removeAtomic(this.file(doc));
  }

  /** A directory of the database's own (created on demand), for files its client programs write. */
  async workDir(name: string): Promise<string> {
    const dir = this.file(name);
    await mkdir(dir, { recursive: true });
    return dir;
  }

  /** Forgets everything done for the database except the proof that its target copy is this migration's, and a redo's record. */
  async forget(): Promise<void> {
    await this.clearFrom(MARKERS[1]);
    for (const name of await listDir(this.dir)) {
      if (!KEPT_BY_FORGET.includes(name)) await rm(this.file(name), { recursive: true, force: true });
    }
  }
}

async function listDir(dir: string): Promise<string[]> {
  try {
    return await readdir(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
}

export async function isDirectory(p: string): Promise<boolean> {
  try {
    return (await stat(p)).isDirectory();
  } catch {
    return false;
  }
}
