/**
 * Which databases of the source this run migrates, and why any other is not. Every database but
 * template0 is considered: user databases (templates included) are created on the target; postgres
 * and template1 exist on every server, so what a user put in them is restored into the target's own
 * (in place, in one transaction, never dropped), and they are left out when they hold nothing.
 */
import type pg from 'pg';
import { listDatabases as listDatabaseRows, userObjects, type DatabaseRow } from '../pg/catalog.ts';
import { withClient, type Server } from '../pg/connect.ts';
import { matchesAny } from '../patterns.ts';

export interface SourceDatabase extends DatabaseRow {
  /** postgres or template1: restored into the target's existing database of that name. */
  inPlace?: boolean;
}

/** The databases that exist on every server. */
export const MAINTENANCE_DATABASES: readonly string[] = ['postgres', 'template1'];

/** Databases of the source but template0, smallest first. */
export async function listDatabases(client: pg.Client): Promise<SourceDatabase[]> {
  return (await listDatabaseRows(client)).sort((a, b) => (a.sizeBytes ?? 0) - (b.sizeBytes ?? 0) || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

export interface Selection {
  migrate: SourceDatabase[];
  /** Selected but cannot be migrated: the run fails. */
  notMigrated: { name: string; reason: string }[];
  /** Left out on purpose or with nothing to migrate: reported, not a failure. */
  skipped: { name: string; reason: string }[];
}

/**
 * Applies --include-db/--exclude-db and what each database allows; postgres and template1 are looked
 * into (on the source) for user objects.
 */
export async function selectDatabases(all: SourceDatabase[], include: string[], exclude: string[], source: Server, sourceMajor: number): Promise<Selection> {
  const selection: Selection = { migrate: [], notMigrated: [], skipped: [] };
  for (const db of all) {
    if (include.length > 0 && !matchesAny(db.name, include)) {
      if (!MAINTENANCE_DATABASES.includes(db.name)) selection.skipped.push({ name: db.name, reason: 'not matched by --include-db' });
      continue;
    }
    if (matchesAny(db.name, exclude)) {
      selection.skipped.push({ name: db.name, reason: 'excluded by --exclude-db' });
      continue;
    }
    if (!db.allowConnections) {
      if (db.name !== 'template1') {
        selection.notMigrated.push({
          name: db.name,
          reason: 'does not allow connections (datallowconn = false); ALTER DATABASE ... ALLOW_CONNECTIONS true on the source to migrate it',
        });
      }
      continue;
    }
    if (db.sizeBytes === null) {
      selection.notMigrated.push({ name: db.name, reason: 'the source user has no CONNECT privilege on it' });
      continue;
    }
    if (!MAINTENANCE_DATABASES.includes(db.name)) {
      selection.migrate.push(db);
      continue;
    }
    const objects = await withClient(source, db.name, (c) => userObjects(c, sourceMajor));
    if (objects.length === 0) selection.skipped.push({ name: db.name, reason: 'holds no user objects' });
    else selection.migrate.push({ ...db, inPlace: true });
  }
  return selection;
}
