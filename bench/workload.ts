/**
 * Benchmark workloads, generated server-side (insert ... select generate_series): the source's
 * CPU does the work, not a client loop. Tables are loaded first; keys and indexes are built
 * afterwards; everything is ANALYZEd at the end.
 */
import type { Cluster } from '../test/harness/cluster.ts';

export type Shape = 'standard' | 'many-dbs' | 'many-tables';
export const SHAPES: Shape[] = ['standard', 'many-dbs', 'many-tables'];

interface DbSpec {
  name: string;
  owner?: string;
  /** Statements run one by one (each autocommitted). */
  statements: string[];
}

const APP_DBS = ['app_crm', 'app_shop', 'app_billing', 'app_support'];

function appDb(name: string, n: (x: number) => number): DbSpec {
  const nc = n(20_000);
  const no = n(100_000);
  return {
    name,
    owner: 'bench_app',
    statements: [
      `create table customers (id bigint not null, email text not null, name text not null, created_at timestamptz not null)`,
      `insert into customers select g, 'user' || g || '@example.com', 'Customer ' || g, timestamptz '2020-01-01' + g * interval '1 minute' from generate_series(1::bigint, ${nc}) g`,
      `create table orders (id bigint not null, customer_id bigint not null, amount numeric(12,2) not null, status text not null, created_at timestamptz not null)`,
      `insert into orders select g, 1 + (g * 7919) % ${nc}, (g % 100000) / 100.0, (array['new','paid','shipped','cancelled'])[1 + g % 4], timestamptz '2020-01-01' + g * interval '13 seconds' from generate_series(1::bigint, ${no}) g`,
      `alter table customers add primary key (id)`,
      `alter table customers add constraint customers_email_key unique (email)`,
      `alter table orders add primary key (id)`,
      `alter table orders add constraint orders_customer_fk foreign key (customer_id) references customers (id)`,
      `create index orders_customer_idx on orders (customer_id)`,
      `create index orders_created_idx on orders (created_at)`,
      `create view customer_totals as select c.id, c.email, count(o.id) as orders, sum(o.amount) as total from customers c left join orders o on o.customer_id = c.id group by c.id, c.email`,
      `alter table customers owner to bench_app`,
      `alter table orders owner to bench_app`,
      `grant select on all tables in schema public to bench_ro`,
      `analyze`,
    ],
  };
}

function analyticsDb(n: (x: number) => number): DbSpec {
  const nu = n(100_000);
  const ne = n(4_000_000);
  const ns = n(500_000);
  return {
    name: 'analytics',
    statements: [
      `create table users (id bigint not null, name text not null, country text not null, signup timestamptz not null)`,
      `insert into users select g, 'user ' || g, (array['DE','FR','US','JP','BR','IN'])[1 + g % 6], timestamptz '2019-01-01' + g * interval '5 minutes' from generate_series(1::bigint, ${nu}) g`,
      `create table events (id bigint not null, user_id bigint not null, kind text not null, ts timestamptz not null, payload jsonb not null)`,
      `insert into events select g, 1 + (g * 7919) % ${nu}, (array['view','click','purchase','signup','logout'])[1 + g % 5], timestamptz '2023-01-01' + g * interval '7 seconds',
         jsonb_build_object('page', '/p/' || (g % 1000), 'ms', g % 5000, 'ref', case when g % 3 = 0 then 'search' else 'direct' end, 'ab', g % 2 = 0)
         from generate_series(1::bigint, ${ne}) g`,
      `create table sessions (id bigint not null, user_id bigint not null, started_at timestamptz not null, duration_s integer not null, device text not null)`,
      `insert into sessions select g, 1 + (g * 104729) % ${nu}, timestamptz '2023-01-01' + g * interval '1 minute', g % 3600, (array['ios','android','web'])[1 + g % 3] from generate_series(1::bigint, ${ns}) g`,
      `alter table users add primary key (id)`,
      `alter table events add primary key (id)`,
      `alter table events add constraint events_user_fk foreign key (user_id) references users (id)`,
      `create index events_user_idx on events (user_id)`,
      `create index events_ts_idx on events (ts)`,
      `create index events_kind_idx on events (kind)`,
      `alter table sessions add primary key (id)`,
      `alter database analytics set work_mem = '64MB'`,
      `grant select on all tables in schema public to bench_ro`,
      `analyze`,
    ],
  };
}

function warehouseDb(n: (x: number) => number): DbSpec {
  const nd = n(10_000);
  const nf = n(1_000_000);
  return {
    name: 'warehouse',
    statements: [
      `create table dim_product (id integer not null, name text not null, category text not null, price numeric(10,2) not null)`,
      `insert into dim_product select g, 'product ' || g, 'cat ' || (g % 50), (g % 1000) + 0.99 from generate_series(1::bigint, ${nd}) g`,
      `create table fact_sales (id bigint not null, product_id integer not null, sold_at timestamptz not null, qty integer not null, amount numeric(12,2) not null)`,
      `insert into fact_sales select g, 1 + (g * 7919) % ${nd}, timestamptz '2022-01-01' + g * interval '30 seconds', 1 + g % 7, (g % 50000) / 100.0 from generate_series(1::bigint, ${nf}) g`,
      `create table fact_returns (id bigint not null, product_id integer not null, returned_at timestamptz not null, reason text not null, amount numeric(12,2) not null)`,
      `insert into fact_returns select g, 1 + (g * 104729) % ${nd}, timestamptz '2022-01-01' + g * interval '31 seconds', (array['damaged','late','wrong item','other'])[1 + g % 4], (g % 30000) / 100.0 from generate_series(1::bigint, ${nf}) g`,
      `alter table dim_product add primary key (id)`,
      `alter table fact_sales add primary key (id)`,
      `alter table fact_sales add constraint fact_sales_product_fk foreign key (product_id) references dim_product (id)`,
      `create index fact_sales_product_idx on fact_sales (product_id)`,
      `create index fact_sales_sold_idx on fact_sales (sold_at)`,
      `alter table fact_returns add primary key (id)`,
      `alter table fact_returns add constraint fact_returns_product_fk foreign key (product_id) references dim_product (id)`,
      `create index fact_returns_product_idx on fact_returns (product_id)`,
      `create index fact_returns_returned_idx on fact_returns (returned_at)`,
      `analyze`,
    ],
  };
}

function tinyDb(i: number, n: (x: number) => number): DbSpec {
  const rows = n(10);
  return {
    name: `tiny_${String(i).padStart(3, '0')}`,
    statements: [
      `create table items (id integer primary key, name text not null)`,
      `insert into items select g, 'item ' || g from generate_series(1::bigint, ${rows}) g`,
      `create table tags (id integer primary key, item_id integer not null references items (id), tag text not null)`,
      `insert into tags select g, 1 + g % ${rows}, 'tag ' || g from generate_series(1::bigint, ${rows * 2}) g`,
      `analyze`,
    ],
  };
}

function manyTablesDb(tables: number, n: (x: number) => number): DbSpec {
  const rows = n(20);
  const statements: string[] = [];
  // Batches, so that one transaction does not need a lock for every table, index and TOAST table.
  const batch = 250;
  for (let from = 1; from <= tables; from += batch) {
    const to = Math.min(tables, from + batch - 1);
    statements.push(`do $$ begin for i in ${from}..${to} loop
        execute format('create table t%s (id integer primary key, v text not null, at timestamptz not null default now())', lpad(i::text, 5, '0'));
        execute format('insert into t%s (id, v) select g, md5(g::text) from generate_series(1::bigint, ${rows}) g', lpad(i::text, 5, '0'));
      end loop; end $$`);
  }
  statements.push('analyze');
  return { name: 'many_tables', statements };
}

export interface WorkloadInfo {
  shape: Shape;
  scale: number;
  databases: string[];
  /** pg_database_size summed over the workload's databases. */
  totalBytes: number;
  seconds: number;
}

/** Creates the shape's roles and databases on the (empty) source. */
export async function generate(src: Cluster, shape: Shape, scale: number, log: (msg: string) => void): Promise<WorkloadInfo> {
  const t0 = performance.now();
  const n = (x: number): number => Math.max(1, Math.round(x * scale));
  await src.query(`create role bench_app login password 'bench_app_pw'`);
  await src.query(`create role bench_ro nologin`);
  await src.query(`grant bench_ro to bench_app`);
  let specs: DbSpec[];
  if (shape === 'standard') specs = [analyticsDb(n), warehouseDb(n), ...APP_DBS.map((d) => appDb(d, n))];
  else if (shape === 'many-dbs') specs = Array.from({ length: 200 }, (_, i) => tinyDb(i + 1, n));
  else specs = [manyTablesDb(5000, n)];

  for (const s of specs) {
    await src.query(`create database ${s.name}${s.owner ? ` owner ${s.owner}` : ''}`);
  }
  // Two databases at a time: the machine has two cores.
  const queue = [...specs];
  let done = 0;
  const worker = async (): Promise<void> => {
    for (;;) {
      const s = queue.shift();
      if (!s) return;
      await src.withClient(async (client) => {
        for (const stmt of s.statements) await client.query(stmt);
      }, s.name);
      done++;
      if (specs.length <= 10 || done % 50 === 0) log(`  generated ${s.name} (${done}/${specs.length})`);
    }
  };
  await Promise.all([worker(), worker()]);
  await src.query('checkpoint');
  const [size] = await src.query<{ b: string }>(
    `select coalesce(sum(pg_database_size(datname)), 0)::text as b from pg_database where datname = any($1::text[])`,
    [specs.map((s) => s.name)],
  );
  return { shape, scale, databases: specs.map((s) => s.name), totalBytes: Number(size!.b), seconds: (performance.now() - t0) / 1000 };
}
