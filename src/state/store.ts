import { mkdir, readdir, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { MigrateError, ExitCode } from '../errors.ts';
import { countsFile, encodeName, markerFile, MARKERS, type CountsKind, type CountsVariant, type MarkerName } from './names.ts';
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

/** The run lock (run.ts): one run per state directory; kept by wipe(). */
export const RUN_LOCK = 'run.lock';

/**
 * The durable state of one source/target pair: markers in `<stateDir>/pg_migrate_state`, counts in
 * `<stateDir>/pg_verify_state`. Every write is atomic; a marker exists only once its step succeeded.
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
      let names: string[] = [];
      try {
        names = await readdir(dir);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      }
      for (const name of names) if (name !== RUN_LOCK) await rm(path.join(dir, name), { recursive: true, force: true });
    }
  }

  async hasAnyState(): Promise<boolean> {
    for (const dir of [this.markersDir, this.countsDir]) {
      try {
        if ((await readdir(dir)).some((n) => !n.startsWith('.'))) return true;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      }
    }
    return false;
  }

  private pairFile(): string {
    return path.join(this.markersDir, 'pair.json');
  }

  /** Binds the state to this pair, or refuses when it belongs to another one. */
  async claim(pair: PairIdentity): Promise<void> {
    const existing = await readJson<PairIdentity>(this.pairFile());
    if (existing === undefined) {
      await writeFileAtomic(this.pairFile(), JSON.stringify(pair, null, 2));
      return;
    }
    const describe = (s: ServerIdentity): string => `${s.host}:${s.port} (system identifier ${s.systemIdentifier})`;
    const same = (a: ServerIdentity, b: ServerIdentity): boolean =>
      a.host === b.host && a.port === b.port && a.systemIdentifier === b.systemIdentifier;
    if (!same(existing.source, pair.source) || !same(existing.target, pair.target)) {
      throw new MigrateError(
        `the state in ${this.markersDir} belongs to another migration: source ${describe(existing.source)} → target ${describe(existing.target)}, ` +
          `but this run is source ${describe(pair.source)} → target ${describe(pair.target)}. ` +
          `Run again with --fresh to discard that state (and its dumps), or point --state-dir elsewhere.`,
        ExitCode.stateMismatch,
      );
    }
  }

  markerPath(db: string, marker: MarkerName): string {
    return path.join(this.markersDir, markerFile(db, marker));
  }

  async marker(db: string, marker: MarkerName): Promise<MarkerInfo | undefined> {
    return readJson<MarkerInfo>(this.markerPath(db, marker));
  }

  async setMarker(db: string, marker: MarkerName, info: Omit<MarkerInfo, 'at'> = {}): Promise<void> {
    await writeFileAtomic(this.markerPath(db, marker), JSON.stringify({ at: new Date().toISOString(), ...info }));
  }

  async clearMarker(db: string, marker: MarkerName): Promise<void> {
    await removeAtomic(this.markerPath(db, marker));
  }

  /** Removes this marker and every later one of the database (a step redone invalidates what followed). */
  async clearFrom(db: string, marker: MarkerName): Promise<void> {
    for (const m of MARKERS.slice(MARKERS.indexOf(marker)).reverse()) await this.clearMarker(db, m);
  }

  countsPath(db: string, kind: CountsKind, variant: CountsVariant): string {
    return path.join(this.countsDir, countsFile(db, kind, variant));
  }

  async counts(db: string, kind: CountsKind, variant: CountsVariant): Promise<TableCounts | undefined> {
    return readJson<TableCounts>(this.countsPath(db, kind, variant));
  }

  async setCounts(db: string, kind: CountsKind, variant: CountsVariant, counts: TableCounts): Promise<void> {
    await writeFileAtomic(this.countsPath(db, kind, variant), JSON.stringify(counts, null, 1));
  }

  async clearCounts(db: string, kind: CountsKind, variant: CountsVariant): Promise<void> {
    await removeAtomic(this.countsPath(db, kind, variant));
  }

  /** Forgets everything done for one database except that its target copy is this run's to drop. */
  async forgetDatabase(db: string): Promise<void> {
    await this.clearFrom(db, MARKERS[1]!);
    const prefix = `${encodeName(db)}.`;
    for (const dir of [this.markersDir, this.countsDir]) {
      let names: string[] = [];
      try {
        names = await readdir(dir);
      } catch {
        continue;
      }
      for (const name of names) {
        if (name.startsWith(prefix) && name !== markerFile(db, 'restore_started')) await removeAtomic(path.join(dir, name));
      }
    }
  }

  /** A named JSON document of the run (tuning backup, saved index definitions, ...). */
  docPath(name: string): string {
    return path.join(this.markersDir, name);
  }

  dbDocPath(db: string, suffix: string): string {
    return path.join(this.markersDir, `${encodeName(db)}.${suffix}`);
  }

  async readDoc<T>(file: string): Promise<T | undefined> {
    return readJson<T>(file);
  }

  async writeDoc(file: string, value: unknown): Promise<void> {
    await writeFileAtomic(file, JSON.stringify(value, null, 2), 0o600);
  }

  async removeDoc(file: string): Promise<void> {
    await removeAtomic(file);
  }
}

export async function isDirectory(p: string): Promise<boolean> {
  try {
    return (await stat(p)).isDirectory();
  } catch {
    return false;
  }
}
