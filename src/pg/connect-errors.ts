/**
 * A failed connection in one sentence: which server (as the operator named it), what went wrong, and
 * which setting to fix, named by where its value came from (a flag, --from/--to, a service, a PG*
 * variable or the default).
 */
import { ConninfoError } from './conninfo-parse.ts';
import type { Keyword } from './conninfo-parse.ts';
import { describeConnection } from './conninfo.ts';
import type { Server } from './connect.ts';
import { MigrateError } from '../errors.ts';

/** Node's and OpenSSL's codes for a certificate or handshake that did not pass. */
const TLS_CODES = new Set([
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'CERT_HAS_EXPIRED',
  'CERT_NOT_YET_VALID',
  'CERT_UNTRUSTED',
  'CERT_REVOKED',
  'CERT_SIGNATURE_FAILURE',
  'ERR_TLS_CERT_ALTNAME_INVALID',
  'EPROTO',
]);

/** Whether the server asked for a password that nobody gave (so a prompt could help). */
export function needsPassword(err: unknown): boolean {
  const e = err as { code?: unknown; message?: unknown; cause?: unknown };
  const message = typeof e.message === 'string' ? e.message : '';
  if (/no password supplied|client password must be a string/i.test(message)) return true;
  return e.code === '28P01' && e.cause === undefined;
}

/** "--from-host", "PGHOST", "service "old" (~/.pg_service.conf)" or "the default": where the keyword's value came from. */
function from(server: Server, k: Keyword): string {
  const o = server.endpoint.spec.origins[k];
  return o === undefined || o.kind === 'default' ? 'the default' : o.label;
}

/** Turns a connection failure into one sentence that names the server and the fix. */
export function describeConnectError(err: unknown, server: Server, database: string): MigrateError {
  if (err instanceof MigrateError && !(err instanceof ConninfoError)) return err;
  const e = err as { code?: string; message?: string };
  const message = e.message ?? String(err);
  const { side, endpoint } = server;
  const long = side === 'source' ? 'from' : 'to';
  const env = `PG_MIGRATE_${side === 'source' ? 'FROM' : 'TO'}_PASS`;
  const where = `the ${side} server (${describeConnection(endpoint.spec)})`;
  const hostFix = `check the host (from ${from(server, 'host')}) and port (from ${from(server, 'port')}); --${long} or --${long}-host/--${long}-port set them`;
  const user = endpoint.user;
  if (err instanceof ConninfoError) return new MigrateError(`cannot connect to ${where}: ${message}`);
  if (typeof e.code === 'string' && (TLS_CODES.has(e.code) || e.code.startsWith('ERR_SSL') || e.code.startsWith('ERR_TLS'))) {
    return new MigrateError(
      `cannot connect to ${where}: TLS failed (${e.code}: ${message}); check sslmode (from ${from(server, 'sslmode')}) and sslrootcert (from ${from(server, 'sslrootcert')}): ` +
        'verify-ca and verify-full need the CA that signed the server certificate, and verify-full a certificate naming the host as given',
    );
  }
  if (/does not support SSL/i.test(message) && ['require', 'verify-ca', 'verify-full'].includes(endpoint.spec.params.sslmode ?? '')) {
    return new MigrateError(
      `${where} does not accept TLS connections, but sslmode (from ${from(server, 'sslmode')}) requires it: turn ssl on there, or use sslmode=prefer or disable`,
    );
  }
  switch (e.code) {
    case 'ECONNREFUSED':
      return new MigrateError(`${where} refused the connection: is PostgreSQL running there? ${hostFix}`);
    case 'ENOENT':
      return new MigrateError(`${where}: no server socket in that directory: is PostgreSQL running there? ${hostFix}`);
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      return new MigrateError(`${where} cannot be found: the host name ${endpoint.host} does not resolve; ${hostFix}`);
    case 'ETIMEDOUT':
    case 'EHOSTUNREACH':
    case 'ENETUNREACH':
      return new MigrateError(`${where} cannot be reached (${e.code}): ${hostFix}, the network and firewalls`);
    case '28P01':
      return new MigrateError(
        `${where} rejected the password of user "${user}": give the right one in ${env} or PGPASSWORD, in the passfile (~/.pgpass), or on the terminal with --password (-W)`,
      );
    case '28000':
      return new MigrateError(
        `${where} does not let user "${user}" in (${message}): add a pg_hba.conf entry for this client (hostssl needs sslmode=require or stricter), or use another user`,
      );
    case '3D000':
      return new MigrateError(
        `${where} has no database "${database}" (${message})${database === endpoint.database ? `: name an existing one with --${long}-db (or dbname in --${long})` : ''}`,
      );
    default:
      // node-postgres' own connect timeout; a server error (a SQLSTATE) such as a statement timeout is not one.
      if (/timeout/i.test(message) && !/^[0-9A-Z]{5}$/.test(e.code ?? '')) {
        return new MigrateError(
          `${where} did not answer within connect_timeout (${endpoint.spec.params.connect_timeout ?? '?'} s, from ${from(server, 'connect_timeout')}): ${hostFix}`,
        );
      }
      if (needsPassword(err)) {
        return new MigrateError(
          `${where} asks for a password for user "${user}" and none was given: set ${env} or PGPASSWORD, put it in ~/.pgpass, or run on a terminal (it asks; --password asks up front)`,
        );
      }
      return new MigrateError(`cannot connect to ${where} (database "${database}"): ${message}`);
  }
}

/**
 * A failure that says the server is away for a while rather than refusing us: it is shutting down,
 * starting up or in recovery after a crash, refused or dropped the connection (a restart), or ended our
 * session. Worth trying again; a wrong password or a missing database is not.
 */
export function serverAway(err: unknown): boolean {
  const e = err as { code?: unknown; message?: unknown; serverAway?: unknown };
  if (e.serverAway === true) return true;
  const codes = ['57P01', '57P02', '57P03', '08000', '08003', '08006', '08001', '08004', 'ECONNREFUSED', 'ECONNRESET', 'EPIPE', 'ENOENT'];
  if (typeof e.code === 'string' && codes.includes(e.code)) return true;
  return (
    typeof e.message === 'string' &&
    /Connection terminated|the database system is (starting up|shutting down|in recovery mode|not yet accepting)/i.test(e.message)
  );
}
