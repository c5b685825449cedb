import { mkdir, readdir, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { MigrateError, ExitCode } from '../errors.ts';
import { countsFile, encodeName, estimatesFile, markerFile, MARKERS, type CountsKind, type CountsVariant, type DatabaseDoc, type MarkerName } from './names.ts';
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

/** The run's own files in the markers directory (never a database's: see DatabaseState). */
const RUN_FILES = { pair: 'pair.json', lock: 'run.lock', tuning: 'tuning.json', globals: 'globals.done' } as const;

const describeServer = (s: ServerIdentity): string => `${s.host}:${String(s.port)} (system identifier ${s.systemIdentifier})`;

/**
 * The durable state of one source/target pair: markers in `<stateDir>/pg_migrate_state`, counts in
 * `<stateDir>/pg_verify_state`. Every write is atomic; a marker exists only once its step succeeded.
 * The only place that builds a state file's name.
 */
export class StateStore {
  readonly markersDir: string;
  readonly countsDir: string;

  constructor(stateDir: string) {
    this.markersDir = path.join(stateDir, 'pg_migrate_state');
    this.countsDir = path.join(stateDir, 'pg_verify_state');
  }

  async init(): Promise<void> {
    await mkdir(this.markersDir, { recursive: true });
    await mkdir(this.countsDir, { recursive: true });
  }

  /** Removes every file of an earlier run but the run lock (both directories are emptied, not removed). */
  async wipe(): Promise<void> {
    for (const dir of [this.markersDir, this.countsDir]) {
      for (const name of await listDir(dir)) if (name !== RUN_FILES.lock) await rm(path.join(dir, name), { recursive: true, force: true });
    }
  }

  /** The file of the run lock (pipeline/lock.ts). */
  get lockPath(): string {
    return path.join(this.markersDir, RUN_FILES.lock);
  }

  /** The file of the tuning backup (pipeline/tune.ts). */
  get tuningPath(): string {
    return path.join(this.markersDir, RUN_FILES.tuning);
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
    return readJson<PairIdentity>(path.join(this.markersDir, RUN_FILES.pair));
  }

  /**
   * Refuses state that names another pair. `identifiers`: compare the system identifiers too (known
   * once both servers answered); without them, host and port alone (before connecting anywhere).
   */
  async checkPair(pair: PairIdentity, identifiers: boolean): Promise<void> {
    const existing = await this.pair();
    if (existing === undefined) return;
    const same = (a: ServerIdentity, b: ServerIdentity): boolean =>
      a.host === b.host && a.port === b.port && (!identifiers || a.systemIdentifier === b.systemIdentifier);
    if (same(existing.source, pair.source) && same(existing.target, pair.target)) return;
    const theirs = `source ${describeServer(existing.source)} → target ${describeServer(existing.target)}`;
    throw new MigrateError(
      identifiers
        ? `the state in ${this.markersDir} belongs to another migration: ${theirs}, but this run is source ${describeServer(pair.source)} → target ${describeServer(pair.target)}. ` +
            'Run again with --fresh to discard that state (and its dumps), or point --state-dir elsewhere.'
        : `the state in ${this.markersDir} belongs to another migration: source ${existing.source.host}:${String(existing.source.port)} → target ${existing.target.host}:${String(existing.target.port)}; ` +
            'run again with --fresh to discard it, or point --state-dir elsewhere',
      ExitCode.stateMismatch,
    );
  }

  /** Binds the state to this pair, or refuses when it belongs to another one. */
  async claim(pair: PairIdentity): Promise<void> {
    if ((await this.pair()) === undefined) await writeFileAtomic(path.join(this.markersDir, RUN_FILES.pair), JSON.stringify(pair, null, 2));
    else await this.checkPair(pair, true);
  }

  globalsDone(): Promise<MarkerInfo | undefined> {
    return readJson<MarkerInfo>(path.join(this.markersDir, RUN_FILES.globals));
  }

  async setGlobalsDone(info: Omit<MarkerInfo, 'at'>): Promise<void> {
    await this.writeDoc(path.join(this.markersDir, RUN_FILES.globals), { at: new Date().toISOString(), ...info });
  }

  /** The state of one database. */
  database(name: string): DatabaseState {
    return new DatabaseState(this, name);
  }
}

/** The markers, counts and saved documents of one database. */
export class DatabaseState {
  readonly name: string;
  private readonly store: StateStore;

  constructor(store: StateStore, name: string) {
    this.store = store;
    this.name = name;
  }

  private markerPath(marker: MarkerName): string {
    return path.join(this.store.markersDir, markerFile(this.name, marker));
  }

  marker(marker: MarkerName): Promise<MarkerInfo | undefined> {
    return readJson<MarkerInfo>(this.markerPath(marker));
  }

  async setMarker(marker: MarkerName, info: Omit<MarkerInfo, 'at'> = {}): Promise<void> {
    await writeFileAtomic(this.markerPath(marker), JSON.stringify({ at: new Date().toISOString(), ...info }));
  }

  /** Removes this marker and every later one (a step redone invalidates what followed). */
  async clearFrom(marker: MarkerName): Promise<void> {
    for (const m of MARKERS.slice(MARKERS.indexOf(marker)).reverse()) await removeAtomic(this.markerPath(m));
  }

  private countsPath(kind: CountsKind, variant: CountsVariant): string {
    return path.join(this.store.countsDir, countsFile(this.name, kind, variant));
  }

  private estimatesPath(variant: CountsVariant): string {
    return path.join(this.store.markersDir, estimatesFile(this.name, variant));
  }

  counts(kind: CountsKind, variant: CountsVariant): Promise<TableCounts | undefined> {
    return readJson<TableCounts>(this.countsPath(kind, variant));
  }

  async setCounts(kind: CountsKind, variant: CountsVariant, counts: TableCounts): Promise<void> {
    await writeFileAtomic(this.countsPath(kind, variant), JSON.stringify(counts, null, 1));
  }

  /** Removes the counts of the given variants (the source's with the list of its estimated keys). */
  async clearCounts(kind: CountsKind, variants: readonly CountsVariant[]): Promise<void> {
    for (const v of variants) {
      await removeAtomic(this.countsPath(kind, v));
      if (kind === 'src') await removeAtomic(this.estimatesPath(v));
    }
  }

  /** Keys of the source's counts that are estimates (fast verify). */
  async estimated(variant: CountsVariant): Promise<string[]> {
    return (await readJson<string[]>(this.estimatesPath(variant))) ?? [];
  }

  async setEstimated(variant: CountsVariant, keys: string[]): Promise<void> {
    await this.store.writeDoc(this.estimatesPath(variant), keys);
  }

  docPath(doc: DatabaseDoc): string {
    return path.join(this.store.markersDir, `${encodeName(this.name)}.${doc}`);
  }

  doc<T>(doc: DatabaseDoc): Promise<T | undefined> {
    return readJson<T>(this.docPath(doc));
  }

  async setDoc(doc: DatabaseDoc, value: unknown): Promise<void> {
    await this.store.writeDoc(this.docPath(doc), value);
  }

  /** Forgets everything done for the database except that its target copy is this migration's to drop. */
  async forget(): Promise<void> {
    await this.clearFrom(MARKERS[1]);
    const prefix = `${encodeName(this.name)}.`;
    for (const dir of [this.store.markersDir, this.store.countsDir]) {
      for (const name of await listDir(dir)) {
        if (name.startsWith(prefix) && name !== markerFile(this.name, 'restore_started')) await removeAtomic(path.join(dir, name));
      }
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
