import type pg from 'pg';
import { withClient, type Server } from './connect.ts';
import { quoteLiteral } from './sql.ts';

/**
 * The statements that start a read-only repeatable-read transaction seeing exactly the exported
 * `snapshot`, each sent on its own (SET TRANSACTION SNAPSHOT must come first in its transaction).
 * Used by node-postgres sessions (importSnapshot) and by the psql range copies alike.
 */
export function snapshotImportStatements(snapshot: string): string[] {
  return ['begin isolation level repeatable read read only', `set transaction snapshot ${quoteLiteral(snapshot)}`];
}

/** Starts a read-only repeatable-read transaction that sees exactly the exported `snapshot`. */
export async function importSnapshot(client: pg.ClientBase, snapshot: string): Promise<void> {
  for (const sql of snapshotImportStatements(snapshot)) await client.query(sql);
}

/**
 * Runs `fn` in the snapshot, when one is given (the transaction is ended afterwards), or as it is.
 * The session is left out of any transaction either way.
 */
export async function inSnapshot<T>(client: pg.ClientBase, snapshot: string | undefined, fn: () => Promise<T>): Promise<T> {
  if (snapshot === undefined) return fn();
  await importSnapshot(client, snapshot);
  try {
    return await fn();
  } finally {
    await client.query('rollback').catch(() => undefined);
  }
}

/** A function that runs work in one exported snapshot of a source database, held open meanwhile. */
export type WithSnapshot = <T>(fn: (snapshot: string | undefined) => Promise<T>) => Promise<T>;

/**
 * Exports a snapshot of `db` and holds it open while `fn` runs (a dump and its counts read it). Where
 * no snapshot can be exported (a standby before 10, say), `fn` gets undefined and every reader takes
 * its own.
 */
export async function withExportedSnapshot<T>(server: Server, db: string, fn: (snapshot: string | undefined) => Promise<T>): Promise<T> {
  return withClient(server, db, async (c) => {
    let snapshot: string | undefined;
    try {
      // The exporting transaction sits idle while others use its snapshot: a server-side idle timeout must not end it.
      await c.query(`select set_config('idle_in_transaction_session_timeout', '0', false) where current_setting('server_version_num')::int >= 90600`);
      await c.query('begin isolation level repeatable read read only');
      snapshot = (await c.query<{ s: string }>('select pg_export_snapshot() as s')).rows[0]?.s;
    } catch {
      await c.query('rollback').catch(() => undefined);
      snapshot = undefined;
    }
    try {
      return await fn(snapshot);
    } finally {
      await c.query('rollback').catch(() => undefined);
    }
  });
}
