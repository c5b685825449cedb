-- Sample data for the compose demo's PostgreSQL 9.5 source (compose.yml mounts this file into
-- /docker-entrypoint-initdb.d; the image runs it once, with psql as postgres, on an empty volume).
-- Plain SQL that PostgreSQL 9.5 understands: no identity/generated columns, no partitioned tables,
-- no procedures, no CREATE SEQUENCE ... AS.

\set ON_ERROR_STOP on

-- Roles -------------------------------------------------------------------------------------------
CREATE ROLE app_owner LOGIN PASSWORD 'app-owner-secret';
CREATE ROLE reporting NOLOGIN;
CREATE ROLE report_reader LOGIN PASSWORD 'report-reader-secret' CONNECTION LIMIT 5 IN ROLE reporting;
ALTER ROLE report_reader SET statement_timeout = '5min';

-- Databases ---------------------------------------------------------------------------------------
CREATE DATABASE shop OWNER app_owner;
CREATE DATABASE inventory OWNER app_owner;
CREATE DATABASE "Legacy Data" OWNER app_owner;
COMMENT ON DATABASE shop IS 'orders and customers';
ALTER DATABASE shop SET search_path = sales, public;
REVOKE CONNECT ON DATABASE inventory FROM PUBLIC;
GRANT CONNECT ON DATABASE inventory TO app_owner, reporting;

-- shop: schema, tables with FKs, indexes, a sequence, a view, a trigger, grants ---------------------
\connect shop
CREATE EXTENSION pg_trgm;  -- as postgres: before 13 only a superuser can create it
SET ROLE app_owner;

CREATE SCHEMA sales;
SET search_path = sales, public;

CREATE TABLE customers (
  id         serial PRIMARY KEY,
  email      text NOT NULL,
  name       text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX customers_email_lower_idx ON customers (lower(email));

CREATE TABLE products (
  id    serial PRIMARY KEY,
  sku   varchar(32) NOT NULL UNIQUE,
  name  text NOT NULL,
  price numeric(10,2) NOT NULL CHECK (price >= 0),
  attrs jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX products_name_trgm_idx ON products USING gin (name public.gin_trgm_ops);

CREATE SEQUENCE invoice_no_seq START 100000 INCREMENT 1;

CREATE TABLE orders (
  id          bigserial PRIMARY KEY,
  customer_id integer NOT NULL REFERENCES customers (id),
  invoice_no  bigint NOT NULL DEFAULT nextval('invoice_no_seq') UNIQUE,
  status      text NOT NULL DEFAULT 'new' CHECK (status IN ('new', 'paid', 'shipped', 'cancelled')),
  ordered_at  timestamptz NOT NULL DEFAULT now(),
  updated_at  timestamptz
);
CREATE INDEX orders_customer_idx ON orders (customer_id);
CREATE INDEX orders_open_idx ON orders (ordered_at) WHERE status IN ('new', 'paid');

CREATE TABLE order_items (
  order_id   bigint  NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
  line_no    integer NOT NULL,
  product_id integer NOT NULL REFERENCES products (id),
  quantity   integer NOT NULL CHECK (quantity > 0),
  unit_price numeric(10,2) NOT NULL,
  PRIMARY KEY (order_id, line_no)
);
CREATE INDEX order_items_product_idx ON order_items (product_id);

CREATE FUNCTION touch_updated_at() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  NEW.updated_at := now();
  RETURN NEW;
END
$$;
CREATE TRIGGER orders_touch BEFORE UPDATE ON orders
  FOR EACH ROW EXECUTE PROCEDURE touch_updated_at();

CREATE VIEW order_totals AS
  SELECT o.id AS order_id, o.customer_id, o.status, sum(i.quantity * i.unit_price) AS total
  FROM orders o JOIN order_items i ON i.order_id = o.id
  GROUP BY o.id, o.customer_id, o.status;

INSERT INTO customers (email, name, created_at)
  SELECT 'customer' || g || '@example.com', 'Customer ' || g, now() - g * interval '1 hour'
  FROM generate_series(1, 2000) g;
INSERT INTO products (sku, name, price, attrs)
  SELECT 'SKU-' || lpad(g::text, 5, '0'), 'Product ' || g || ' ' || md5(g::text), (g % 500) + 0.99,
         ('{"color": "' || (ARRAY['red', 'green', 'blue'])[g % 3 + 1] || '", "weight": ' || g % 40 || '}')::jsonb
  FROM generate_series(1, 500) g;
INSERT INTO orders (customer_id, status, ordered_at)
  SELECT (g % 2000) + 1, (ARRAY['new', 'paid', 'shipped', 'cancelled'])[g % 4 + 1], now() - g * interval '5 minutes'
  FROM generate_series(1, 20000) g;
INSERT INTO order_items (order_id, line_no, product_id, quantity, unit_price)
  SELECT o.id, l, ((o.id * 7 + l) % 500) + 1, (o.id + l) % 5 + 1, ((o.id + l) % 500) + 0.99
  FROM orders o, generate_series(1, 3) l;
UPDATE orders SET status = 'shipped' WHERE id % 97 = 0;  -- fires the trigger

GRANT USAGE ON SCHEMA sales TO reporting;
GRANT SELECT ON ALL TABLES IN SCHEMA sales TO reporting;
ALTER DEFAULT PRIVILEGES IN SCHEMA sales GRANT SELECT ON TABLES TO reporting;
RESET ROLE;
ANALYZE;

-- inventory: FKs, a composite unique constraint, a materialized view ---------------------------------
\connect inventory
SET ROLE app_owner;

CREATE TABLE warehouses (
  id   serial PRIMARY KEY,
  code char(4) NOT NULL UNIQUE,
  city text NOT NULL
);
CREATE TABLE items (
  id          serial PRIMARY KEY,
  description text NOT NULL,
  weight_kg   real
);
CREATE TABLE stock (
  warehouse_id integer NOT NULL REFERENCES warehouses (id),
  item_id      integer NOT NULL REFERENCES items (id) ON DELETE RESTRICT,
  quantity     integer NOT NULL DEFAULT 0,
  counted_on   date NOT NULL DEFAULT current_date,
  UNIQUE (warehouse_id, item_id)
);
CREATE INDEX stock_item_idx ON stock (item_id);

INSERT INTO warehouses (code, city) VALUES ('BER1', 'Berlin'), ('HAM1', 'Hamburg'), ('MUC1', 'München'), ('KÖL1', 'Köln');
INSERT INTO items (description, weight_kg)
  SELECT 'Item #' || g, (g % 100) / 10.0 FROM generate_series(1, 3000) g;
INSERT INTO stock (warehouse_id, item_id, quantity, counted_on)
  SELECT w.id, i.id, (w.id * i.id) % 250, date '2024-01-01' + (i.id % 365)
  FROM warehouses w, items i WHERE (w.id + i.id) % 3 <> 0;

CREATE MATERIALIZED VIEW stock_per_city AS
  SELECT w.city, count(*) AS items, sum(s.quantity) AS units
  FROM stock s JOIN warehouses w ON w.id = s.warehouse_id
  GROUP BY w.city;

GRANT SELECT ON ALL TABLES IN SCHEMA public TO reporting;
RESET ROLE;
ANALYZE;

-- "Legacy Data": upper case and a space in the database, schema and table names ---------------------
\connect "Legacy Data"
SET ROLE app_owner;

CREATE SCHEMA "Archive";
CREATE TABLE "Archive"."Customer Notes" (
  "NoteId"  serial PRIMARY KEY,
  "Author"  text NOT NULL,
  "Body"    text,
  "Payload" bytea,
  "Written" timestamp without time zone NOT NULL DEFAULT now()
);
CREATE TABLE "Archive".tags (
  note_id integer NOT NULL REFERENCES "Archive"."Customer Notes" ("NoteId") ON DELETE CASCADE,
  tag     text NOT NULL,
  PRIMARY KEY (note_id, tag)
);
CREATE INDEX "Customer Notes by author" ON "Archive"."Customer Notes" ("Author");
CREATE VIEW "Archive"."Recent Notes" AS
  SELECT "NoteId", "Author", left("Body", 40) AS "Excerpt"
  FROM "Archive"."Customer Notes" WHERE "Written" > timestamp '2020-01-01';

INSERT INTO "Archive"."Customer Notes" ("Author", "Body", "Payload", "Written")
  SELECT 'author ' || (g % 17), 'Note ' || g || E' with a quote '' and a tab\t and ünïcödé',
         decode(md5(g::text), 'hex'), timestamp '2019-06-01' + g * interval '1 day'
  FROM generate_series(1, 1500) g;
INSERT INTO "Archive".tags (note_id, tag)
  SELECT "NoteId", t FROM "Archive"."Customer Notes", unnest(ARRAY['old', 'customer']) t WHERE "NoteId" % 3 = 0;

GRANT USAGE ON SCHEMA "Archive" TO reporting;
GRANT SELECT ON "Archive"."Recent Notes" TO reporting;
RESET ROLE;
ANALYZE;
