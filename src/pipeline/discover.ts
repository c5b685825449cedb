import type pg from 'pg';
import { listDatabases as listDatabaseRows, type DatabaseRow } from '../pg/catalog.ts';
import { matchesAny } from '../patterns.ts';

export type SourceDatabase = DatabaseRow;

/** User databases of the source (no templates, not `postgres`), smallest first. */
export async function listDatabases(client: pg.Client): Promise<SourceDatabase[]> {
  return (await listDatabaseRows(client)).sort((a, b) => (a.sizeBytes ?? 0) - (b.sizeBytes ?? 0) || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

export interface Selection {
  migrate: SourceDatabase[];
  notMigrated: { name: string; reason: string }[];
}

export function selectDatabases(all: SourceDatabase[], include: string[], exclude: string[]): Selection {
  const migrate: SourceDatabase[] = [];
  const notMigrated: { name: string; reason: string }[] = [];
  for (const db of all) {
    if (include.length > 0 && !matchesAny(db.name, include)) continue;
    if (matchesAny(db.name, exclude)) continue;
    if (!db.allowConnections) {
      notMigrated.push({
        name: db.name,
        reason: 'does not allow connections (datallowconn = false); ALTER DATABASE ... ALLOW_CONNECTIONS true on the source to migrate it',
      });
    } else if (db.sizeBytes === null) {
      notMigrated.push({ name: db.name, reason: 'the source user has no CONNECT privilege on it' });
    } else migrate.push(db);
  }
  return { migrate, notMigrated };
}
