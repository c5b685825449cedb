/**
 * A small but awkward sample server for migration tests: roles with odd names and memberships,
 * several databases (one with a very odd name, one empty, one that refuses connections),
 * FKs, sequences, identity columns, views, grants, and a partitioned table.
 *
 * All data is deterministic (no random()), generated server-side with generate_series, and
 * works on PostgreSQL 12 and newer, and on 10 with one difference (see PG10_EVENTS):
 * PostgreSQL 10 has no primary keys or indexes on a partitioned table and no DEFAULT
 * partition (all three came in 11), so there analytics.events is a partitioned table without
 * its own primary key and index, each partition carries them itself (same names as the ones
 * 11+ derive), and events_default is the range partition FROM ('2024-04-01') TO (MAXVALUE),
 * which holds exactly the rows the DEFAULT partition holds on 11+. Same tables, same rows.
 */
import type { Cluster } from './cluster.ts';

/** Quote an SQL identifier. */
export function quoteIdent(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}

/** Quote an SQL string literal (standard_conforming_strings = on). */
export function quoteLiteral(value: string): string {
  return `'${value.replace(/'/g, "''")}'`;
}

export const ODD_DB_NAME = 'My "Odd".DB/ñ';
export const ODD_SCHEMA = 'Sch.ema';
export const ODD_TABLE = 'Tab le';

export interface SeedResult {
  /** Databases that can (and should) be migrated, in creation order. */
  databases: string[];
  /** Databases created with datallowconn = false. */
  noConnectDatabases: string[];
  /** Roles created (plain names, unquoted). */
  roles: string[];
  /** Password of the app_owner login role. */
  appOwnerPassword: string;
  /** Row counts inserted, keyed by database, then by `schema.table` (quoted like tableCounts()). */
  expectedCounts: Record<string, Record<string, number>>;
}

export interface SeedOptions {
  /** Multiplies every row count (default 1: a few hundred to a few thousand rows per table). */
  scale?: number;
}

/** The rows of analytics.events (the same on every version). */
function eventsInsert(nEvents: number): string {
  return `
    -- 120 days from 2024-01-01: January, February, March, and 29 days for the default partition.
    INSERT INTO events (id, occurred_at, kind, payload)
      SELECT g,
             timestamptz '2024-01-01 00:00:00+00' + (g % 120) * interval '1 day' + (g % 86400) * interval '1 second',
             (ARRAY['click', 'view', 'purchase'])[1 + g % 3],
             CASE WHEN g % 7 = 0 THEN NULL ELSE jsonb_build_object('n', g, 'tags', jsonb_build_array('a', g % 10)) END
      FROM generate_series(1, ${nEvents}) g;`;
}

/**
 * analytics.events on PostgreSQL 10 (no PK / index on a partitioned table, no DEFAULT partition):
 * the keys and indexes live on the partitions, named as 11+ names the ones it derives, and
 * events_default is a range partition from April on. All generated rows are >= 2024-01-01, so it
 * holds what the DEFAULT partition holds on 11+.
 */
const PG10_EVENTS = `
    CREATE TABLE events (
      id bigint NOT NULL,
      occurred_at timestamptz NOT NULL,
      kind text NOT NULL,
      payload jsonb
    ) PARTITION BY RANGE (occurred_at);
    CREATE TABLE events_2024_01 PARTITION OF events (PRIMARY KEY (id, occurred_at)) FOR VALUES FROM ('2024-01-01 00:00:00+00') TO ('2024-02-01 00:00:00+00');
    CREATE TABLE events_2024_02 PARTITION OF events (PRIMARY KEY (id, occurred_at)) FOR VALUES FROM ('2024-02-01 00:00:00+00') TO ('2024-03-01 00:00:00+00');
    CREATE TABLE events_2024_03 PARTITION OF events (PRIMARY KEY (id, occurred_at)) FOR VALUES FROM ('2024-03-01 00:00:00+00') TO ('2024-04-01 00:00:00+00');
    CREATE TABLE events_default PARTITION OF events (PRIMARY KEY (id, occurred_at)) FOR VALUES FROM ('2024-04-01 00:00:00+00') TO (MAXVALUE);
    CREATE INDEX events_2024_01_kind_idx ON events_2024_01 (kind);
    CREATE INDEX events_2024_02_kind_idx ON events_2024_02 (kind);
    CREATE INDEX events_2024_03_kind_idx ON events_2024_03 (kind);
    CREATE INDEX events_default_kind_idx ON events_default (kind);`;

export async function seedSample(cluster: Cluster, opts: SeedOptions = {}): Promise<SeedResult> {
  const scale = opts.scale ?? 1;
  const n = (base: number) => Math.max(1, Math.round(base * scale));
  const nCustomers = n(500);
  const nOrders = n(2000);
  const nEvents = n(3000);
  const nOdd = n(200);
  const appOwnerPassword = 'app_owner_pw';

  // ---- roles -------------------------------------------------------------------------------
  await cluster.query(`
    CREATE ROLE app_owner LOGIN PASSWORD ${quoteLiteral(appOwnerPassword)};
    CREATE ROLE reader NOLOGIN;
    CREATE ROLE postgres2 LOGIN PASSWORD 'postgres2_pw' CREATEDB;
    CREATE ROLE "a b" NOLOGIN;
    GRANT reader TO app_owner;
  `);

  // ---- databases (CREATE DATABASE cannot run in a multi-statement query) ---------------------
  await cluster.query('CREATE DATABASE shop OWNER app_owner');
  await cluster.query('CREATE DATABASE analytics OWNER app_owner');
  await cluster.query(`CREATE DATABASE ${quoteIdent(ODD_DB_NAME)} OWNER app_owner`);
  await cluster.query('CREATE DATABASE empty_db');
  await cluster.query('CREATE DATABASE noconn');

  // ---- shop --------------------------------------------------------------------------------
  await cluster.query(
    `
    SET ROLE app_owner;
    CREATE TABLE customers (
      id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
      email text NOT NULL UNIQUE,
      name text NOT NULL,
      created_at timestamptz NOT NULL
    );
    CREATE SEQUENCE order_id_seq;
    CREATE TABLE orders (
      id bigint PRIMARY KEY DEFAULT nextval('order_id_seq'),
      customer_id bigint NOT NULL REFERENCES customers (id),
      amount numeric(12, 2) NOT NULL,
      status text NOT NULL,
      note text,
      placed_at timestamptz NOT NULL
    );
    ALTER SEQUENCE order_id_seq OWNED BY orders.id;
    CREATE INDEX customers_lower_name_idx ON customers (lower(name));
    CREATE INDEX orders_customer_id_idx ON orders (customer_id);
    CREATE INDEX orders_status_placed_at_idx ON orders (status, placed_at);
    INSERT INTO customers (email, name, created_at)
      SELECT 'user' || g || '@example.com', 'Customer ' || g,
             timestamptz '2024-01-01 00:00:00+00' + g * interval '1 hour'
      FROM generate_series(1, ${nCustomers}) g;
    INSERT INTO orders (customer_id, amount, status, note, placed_at)
      SELECT 1 + (g % ${nCustomers}),
             ((g::bigint * 7919) % 100000) / 100.0,
             (ARRAY['new', 'paid', 'shipped', 'cancelled'])[1 + g % 4],
             CASE WHEN g % 5 = 0 THEN NULL ELSE 'note ' || g || E' with \\'quotes\\', tabs\\tand ñ' END,
             timestamptz '2024-01-01 00:00:00+00' + g * interval '17 minutes'
      FROM generate_series(1, ${nOrders}) g;
    CREATE VIEW customer_totals AS
      SELECT c.id, c.email, count(o.id) AS orders, coalesce(sum(o.amount), 0) AS total
      FROM customers c LEFT JOIN orders o ON o.customer_id = c.id
      GROUP BY c.id, c.email;
    GRANT SELECT ON customers, orders, customer_totals TO reader;
    RESET ROLE;
    ANALYZE;
  `,
    undefined,
    'shop',
  );

  // ---- analytics ---------------------------------------------------------------------------
  if (cluster.major < 11) {
    await cluster.query(`\n    SET ROLE app_owner;${PG10_EVENTS}${eventsInsert(nEvents)}\n    RESET ROLE;\n    ANALYZE;\n  `, undefined, 'analytics');
  } else {
    await cluster.query(
      `
    SET ROLE app_owner;
    CREATE TABLE events (
      id bigint NOT NULL,
      occurred_at timestamptz NOT NULL,
      kind text NOT NULL,
      payload jsonb,
      PRIMARY KEY (id, occurred_at)
    ) PARTITION BY RANGE (occurred_at);
    CREATE TABLE events_2024_01 PARTITION OF events FOR VALUES FROM ('2024-01-01 00:00:00+00') TO ('2024-02-01 00:00:00+00');
    CREATE TABLE events_2024_02 PARTITION OF events FOR VALUES FROM ('2024-02-01 00:00:00+00') TO ('2024-03-01 00:00:00+00');
    CREATE TABLE events_2024_03 PARTITION OF events FOR VALUES FROM ('2024-03-01 00:00:00+00') TO ('2024-04-01 00:00:00+00');
    CREATE TABLE events_default PARTITION OF events DEFAULT;
    CREATE INDEX events_kind_idx ON events (kind);${eventsInsert(nEvents)}
    RESET ROLE;
    ANALYZE;
  `,
      undefined,
      'analytics',
    );
  }

  // ---- the database with the odd name --------------------------------------------------------
  await cluster.query(
    `
    CREATE SCHEMA ${quoteIdent(ODD_SCHEMA)} AUTHORIZATION "a b";
    CREATE TABLE ${quoteIdent(ODD_SCHEMA)}.${quoteIdent(ODD_TABLE)} (
      id integer PRIMARY KEY,
      "Val ue" text,
      "ñ" numeric
    );
    ALTER TABLE ${quoteIdent(ODD_SCHEMA)}.${quoteIdent(ODD_TABLE)} OWNER TO "a b";
    INSERT INTO ${quoteIdent(ODD_SCHEMA)}.${quoteIdent(ODD_TABLE)} (id, "Val ue", "ñ")
      SELECT g,
             CASE WHEN g % 10 = 0 THEN NULL ELSE 'välue "' || g || E'"\\n line2 ☃' END,
             g / 3.0
      FROM generate_series(1, ${nOdd}) g;
    GRANT USAGE ON SCHEMA ${quoteIdent(ODD_SCHEMA)} TO reader;
    GRANT SELECT ON ${quoteIdent(ODD_SCHEMA)}.${quoteIdent(ODD_TABLE)} TO reader;
  `,
    undefined,
    ODD_DB_NAME,
  );

  // ---- noconn: made unconnectable last --------------------------------------------------------
  await cluster.query('ALTER DATABASE noconn ALLOW_CONNECTIONS false');

  const odd = `${quoteIdent(ODD_SCHEMA)}.${quoteIdent(ODD_TABLE)}`;
  return {
    databases: ['shop', 'analytics', ODD_DB_NAME, 'empty_db'],
    noConnectDatabases: ['noconn'],
    roles: ['app_owner', 'reader', 'postgres2', 'a b'],
    appOwnerPassword,
    expectedCounts: {
      shop: { 'public.customers': nCustomers, 'public.orders': nOrders },
      analytics: { 'public.events': nEvents },
      [ODD_DB_NAME]: { [odd]: nOdd },
      empty_db: {},
    },
  };
}

/**
 * Exact row counts of every ordinary and partitioned table in every non-system schema.
 * Keys are `schema.table` with each part quoted only if needed (format('%I.%I')), e.g.
 * `public.orders`, `"Sch.ema"."Tab le"`. A partitioned parent counts the rows of all its
 * partitions; the partitions are listed too.
 */
export async function tableCounts(cluster: Cluster, database: string): Promise<Map<string, number>> {
  return cluster.withClient(async (client) => {
    const { rows } = await client.query<{ name: string }>(`
      SELECT format('%I.%I', n.nspname, c.relname) AS name
      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE c.relkind IN ('r', 'p')
        AND n.nspname NOT IN ('pg_catalog', 'information_schema')
        AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp\\_%'
      ORDER BY n.nspname::text COLLATE "C", c.relname::text COLLATE "C"`); // ::text: PG 10 and 11 cannot collate type name
    const out = new Map<string, number>();
    for (const { name } of rows) {
      const r = await client.query<{ n: string }>(`SELECT count(*)::text AS n FROM ${name}`);
      out.set(name, Number(r.rows[0]!.n));
    }
    return out;
  }, database);
}

/**
 * md5 of all rows of `qualifiedTable` (an SQL-quoted name like the keys of tableCounts()),
 * each row rendered as text and sorted bytewise, so two servers holding the same rows give the
 * same hash. TimeZone / DateStyle / IntervalStyle / extra_float_digits are pinned for the
 * query, so the servers' defaults do not matter. An empty table gives md5('').
 */
export async function dumpRows(cluster: Cluster, database: string, qualifiedTable: string): Promise<string> {
  return cluster.withClient(async (client) => {
    await client.query('BEGIN');
    try {
      await client.query(
        `SET LOCAL TimeZone = 'UTC'; SET LOCAL DateStyle = 'ISO, YMD'; SET LOCAL IntervalStyle = 'postgres'; SET LOCAL extra_float_digits = 1; SET LOCAL bytea_output = 'hex'`,
      );
      const r = await client.query<{ md5: string }>(
        `SELECT md5(coalesce(string_agg(t::text, E'\\n' ORDER BY t::text COLLATE "C"), '')) AS md5 FROM ${qualifiedTable} t`,
      );
      return r.rows[0]!.md5;
    } finally {
      await client.query('ROLLBACK').catch(() => undefined);
    }
  }, database);
}
