/**
 * The two servers as a run names them: one ConnectionSpec per side (resolveConnection with the tool's
 * defaults), plus the parts messages, hints and the state show (first host, port, user, database).
 */
import { hostTargets, resolveConnection, type ConnectionSpec, type ResolveOptions } from './conninfo.ts';
import { ConninfoError } from './conninfo-parse.ts';
import type { Side } from './connect.ts';

/** One PostgreSQL server as the operator named it. */
export interface Endpoint {
  /** The connection, the single source of truth for the tool's sessions and its client programs. */
  spec: ConnectionSpec;
  /** First host as given (host name, IP or socket directory; '' for libpq's default socket), for messages and hints. */
  readonly host: string;
  readonly port: number;
  readonly user: string;
  /** The maintenance database used for discovery (source) or ALTER SYSTEM and globals (target). */
  readonly database: string;
  /** The spec's password (non-enumerable, like the spec's): undefined means libpq's passfile. */
  readonly password: string | undefined;
}

/** The tool's defaults where neither flags, --from/--to, a service nor PG* variables give a value. */
export const CONNECTION_DEFAULTS = {
  sourceHost: 'localhost',
  port: 5432,
  user: 'postgres',
  dbname: 'postgres',
  /** Seconds; libpq's own default waits forever. */
  connectTimeout: 30,
} as const;

/** An Endpoint over a spec; `password` reads the spec's, so replacing the spec (a prompted password) keeps them one. */
export function endpointOf(spec: ConnectionSpec): Endpoint {
  const first = hostTargets(spec)[0];
  const e = {
    spec,
    host: first === undefined ? '' : first.host !== '' ? first.host : (first.hostaddr ?? ''),
    port: first?.port ?? CONNECTION_DEFAULTS.port,
    user: spec.params.user ?? CONNECTION_DEFAULTS.user,
    database: spec.params.dbname ?? CONNECTION_DEFAULTS.dbname,
  };
  return Object.defineProperty(e, 'password', {
    get(this: { spec: ConnectionSpec }) {
      return this.spec.password;
    },
    enumerable: false,
  }) as Endpoint;
}

/** The spec with a password added (from a prompt); the password stays non-enumerable. */
export function withPassword(spec: ConnectionSpec, password: string): ConnectionSpec {
  const { side, params, origins } = spec;
  return Object.defineProperty({ side, params, origins }, 'password', { value: password, enumerable: false }) as ConnectionSpec;
}

/** What the command line gave for one side (yargs' camel-case names). */
export interface SideInput {
  conninfo?: string | undefined;
  host?: string | undefined;
  port?: number | undefined;
  user?: string | undefined;
  password?: string | undefined;
  dbname?: string | undefined;
}

/**
 * One side's Endpoint, or the problems that keep it from being one. The source falls back to
 * localhost; the target has no default host (`required`: say so; otherwise undefined when none is given).
 */
export function resolveEndpoint(
  side: Side,
  input: SideInput,
  env: NodeJS.ProcessEnv,
  required: boolean,
  options?: ResolveOptions,
): { endpoint?: Endpoint; problems: string[] } {
  const defaults = {
    host: side === 'source' ? CONNECTION_DEFAULTS.sourceHost : undefined,
    port: CONNECTION_DEFAULTS.port,
    user: CONNECTION_DEFAULTS.user,
    dbname: CONNECTION_DEFAULTS.dbname,
    connect_timeout: CONNECTION_DEFAULTS.connectTimeout,
  };
  try {
    return { endpoint: endpointOf(resolveConnection(side, input, env, defaults, options)), problems: [] };
  } catch (err) {
    if (!(err instanceof ConninfoError)) throw err;
    const noHost = err.problems.length === 1 && err.problems[0]?.includes('server has no host') === true;
    if (noHost && !required) return { problems: [] };
    return { problems: err.problems };
  }
}
