import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { filterGlobals, forNonSuperuser, roleStatementTarget, splitStatements } from '../../src/pipeline/globals-script.ts';

/**
 * Modelled on `pg_dumpall --globals-only` of PostgreSQL 15.14+ (which brackets the script with
 * \restrict / \unrestrict), with a few roles whose names and comments stress the splitter.
 */
const SCRAM_PG = 'SCRAM-SHA-256$4096:Hk2hH3sb0c5X1w2mYm9oWQ==$Vx4K1l1b2dG0yR8S1a0pKQ3o+1qgqk5vU9lS2+0G8bU=:0G3p3JmQ9gk6v0U1Kx5E4wP9Yd2l1Zc7Yb5x8Qk3s2E=';
const SCRAM_APP = 'SCRAM-SHA-256$4096:c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNo:c2VydmVyc2VydmVy';
const RESTRICT_KEY = 'hL3kO0xQ9mZ2bV5nC8xW1eR4tY7uI0oP3aS6dF9gJ2kL5zX8cV1bN4mQ7wE0rT3';

const FIXTURE = `--
-- PostgreSQL database cluster dump
--

\\restrict ${RESTRICT_KEY}

SET default_transaction_read_only = off;

SET client_encoding = 'UTF8';
SET standard_conforming_strings = on;

--
-- Roles
--

CREATE ROLE "Admin";
ALTER ROLE "Admin" WITH SUPERUSER INHERIT CREATEROLE CREATEDB LOGIN NOREPLICATION NOBYPASSRLS PASSWORD '${SCRAM_APP}';
CREATE ROLE "a b";
ALTER ROLE "a b" WITH NOSUPERUSER INHERIT NOCREATEROLE NOCREATEDB LOGIN NOREPLICATION NOBYPASSRLS;
CREATE ROLE app_owner;
ALTER ROLE app_owner WITH NOSUPERUSER INHERIT NOCREATEROLE NOCREATEDB LOGIN NOREPLICATION NOBYPASSRLS PASSWORD '${SCRAM_APP}' VALID UNTIL '2030-01-01 00:00:00+00';
COMMENT ON ROLE app_owner IS 'Owns the app; don''t drop it
-- not a comment, still the string';
CREATE ROLE postgres;
ALTER ROLE postgres WITH SUPERUSER INHERIT CREATEROLE CREATEDB LOGIN REPLICATION BYPASSRLS PASSWORD '${SCRAM_PG}';
CREATE ROLE postgres2;
ALTER ROLE postgres2 WITH NOSUPERUSER INHERIT NOCREATEROLE NOCREATEDB LOGIN NOREPLICATION NOBYPASSRLS;
CREATE ROLE readers;
ALTER ROLE readers WITH NOSUPERUSER INHERIT NOCREATEROLE NOCREATEDB NOLOGIN NOREPLICATION NOBYPASSRLS;
CREATE ROLE "semi;colon";
ALTER ROLE "semi;colon" WITH NOSUPERUSER INHERIT NOCREATEROLE NOCREATEDB NOLOGIN NOREPLICATION NOBYPASSRLS;
CREATE ROLE "we""ird--name";
ALTER ROLE "we""ird--name" WITH NOSUPERUSER INHERIT NOCREATEROLE NOCREATEDB NOLOGIN NOREPLICATION NOBYPASSRLS;

--
-- User Configurations
--

--
-- User Config "app_owner"
--

ALTER ROLE app_owner SET search_path TO 'app', '$user', 'public';

--
-- User Config "postgres"
--

ALTER ROLE postgres SET statement_timeout TO '0';


--
-- Role memberships
--

GRANT readers TO "a b" GRANTED BY postgres;
GRANT readers TO app_owner GRANTED BY postgres;
GRANT readers TO postgres GRANTED BY postgres;




--
-- Tablespaces
--

CREATE TABLESPACE fastspace OWNER postgres LOCATION '/mnt/fast;ssd';


\\unrestrict ${RESTRICT_KEY}

--
-- PostgreSQL database cluster dump complete
--

`;

const EXPECTED = [
  'SET default_transaction_read_only = off;',
  "SET client_encoding = 'UTF8';",
  'SET standard_conforming_strings = on;',
  'CREATE ROLE "Admin";',
  `ALTER ROLE "Admin" WITH SUPERUSER INHERIT CREATEROLE CREATEDB LOGIN NOREPLICATION NOBYPASSRLS PASSWORD '${SCRAM_APP}';`,
  'CREATE ROLE "a b";',
  'ALTER ROLE "a b" WITH NOSUPERUSER INHERIT NOCREATEROLE NOCREATEDB LOGIN NOREPLICATION NOBYPASSRLS;',
  'CREATE ROLE app_owner;',
  `ALTER ROLE app_owner WITH NOSUPERUSER INHERIT NOCREATEROLE NOCREATEDB LOGIN NOREPLICATION NOBYPASSRLS PASSWORD '${SCRAM_APP}' VALID UNTIL '2030-01-01 00:00:00+00';`,
  "COMMENT ON ROLE app_owner IS 'Owns the app; don''t drop it\n-- not a comment, still the string';",
  'CREATE ROLE postgres;',
  `ALTER ROLE postgres WITH SUPERUSER INHERIT CREATEROLE CREATEDB LOGIN REPLICATION BYPASSRLS PASSWORD '${SCRAM_PG}';`,
  'CREATE ROLE postgres2;',
  'ALTER ROLE postgres2 WITH NOSUPERUSER INHERIT NOCREATEROLE NOCREATEDB LOGIN NOREPLICATION NOBYPASSRLS;',
  'CREATE ROLE readers;',
  'ALTER ROLE readers WITH NOSUPERUSER INHERIT NOCREATEROLE NOCREATEDB NOLOGIN NOREPLICATION NOBYPASSRLS;',
  'CREATE ROLE "semi;colon";',
  'ALTER ROLE "semi;colon" WITH NOSUPERUSER INHERIT NOCREATEROLE NOCREATEDB NOLOGIN NOREPLICATION NOBYPASSRLS;',
  'CREATE ROLE "we""ird--name";',
  'ALTER ROLE "we""ird--name" WITH NOSUPERUSER INHERIT NOCREATEROLE NOCREATEDB NOLOGIN NOREPLICATION NOBYPASSRLS;',
  "ALTER ROLE app_owner SET search_path TO 'app', '$user', 'public';",
  "ALTER ROLE postgres SET statement_timeout TO '0';",
  'GRANT readers TO "a b" GRANTED BY postgres;',
  'GRANT readers TO app_owner GRANTED BY postgres;',
  'GRANT readers TO postgres GRANTED BY postgres;',
  "CREATE TABLESPACE fastspace OWNER postgres LOCATION '/mnt/fast;ssd';",
];

describe('splitStatements', () => {
  it('splits a pg_dumpall --globals-only script into its statements', () => {
    assert.deepEqual(splitStatements(FIXTURE), EXPECTED);
  });

  it('drops psql meta-commands and comments', () => {
    const out = splitStatements(FIXTURE);
    assert.ok(!out.some((s) => s.includes('\\restrict') || s.includes('\\unrestrict') || s.includes(RESTRICT_KEY)));
    assert.ok(!out.some((s) => s.startsWith('--') || s.includes('PostgreSQL database cluster dump')));
    assert.ok(!out.some((s) => s.includes('User Config')));
  });

  it('handles scripts without a final newline or semicolon', () => {
    assert.deepEqual(splitStatements('\\connect postgres\nSELECT 1;\nSELECT 2'), ['SELECT 1;', 'SELECT 2']);
    assert.deepEqual(splitStatements('\\unrestrict abc'), []);
    assert.deepEqual(splitStatements(''), []);
    assert.deepEqual(splitStatements('-- only a comment'), []);
  });

  it('keeps ; and -- inside strings, quoted identifiers and dollar quotes', () => {
    assert.deepEqual(splitStatements(`COMMENT ON ROLE x IS 'a;b';SELECT "c;d";`), [`COMMENT ON ROLE x IS 'a;b';`, 'SELECT "c;d";']);
    assert.deepEqual(splitStatements("SELECT 'a -- b'; -- trailing\nSELECT 2;"), ["SELECT 'a -- b';", 'SELECT 2;']);
    assert.deepEqual(splitStatements('DO $body$ BEGIN PERFORM 1; END $body$;\nSELECT $$x;y$$;'), ['DO $body$ BEGIN PERFORM 1; END $body$;', 'SELECT $$x;y$$;']);
    assert.deepEqual(splitStatements("SELECT E'it\\'s; here';SELECT 1;"), ["SELECT E'it\\'s; here';", 'SELECT 1;']);
  });

  it('a backslash line inside a statement is not a meta-command', () => {
    assert.deepEqual(splitStatements("COMMENT ON ROLE x IS 'line1\n\\not a command';"), ["COMMENT ON ROLE x IS 'line1\n\\not a command';"]);
  });
});

describe('roleStatementTarget', () => {
  it('reads the role as PostgreSQL would', () => {
    assert.equal(roleStatementTarget('CREATE ROLE postgres;'), 'postgres');
    assert.equal(roleStatementTarget('ALTER ROLE Postgres WITH LOGIN;'), 'postgres');
    assert.equal(roleStatementTarget("alter role postgres set work_mem to '1MB';"), 'postgres');
    assert.equal(roleStatementTarget('CREATE ROLE "Admin";'), 'Admin');
    assert.equal(roleStatementTarget('CREATE ROLE "postgres";'), 'postgres');
    assert.equal(roleStatementTarget('CREATE ROLE "a b";'), 'a b');
    assert.equal(roleStatementTarget('CREATE ROLE "semi;colon";'), 'semi;colon');
    assert.equal(roleStatementTarget('CREATE ROLE "we""ird";'), 'we"ird');
    assert.equal(roleStatementTarget('CREATE ROLE "postgres""x";'), 'postgres"x');
    assert.equal(roleStatementTarget('ALTER ROLE postgres2 WITH LOGIN;'), 'postgres2');
  });

  it('is undefined for other statements', () => {
    assert.equal(roleStatementTarget('GRANT readers TO postgres GRANTED BY postgres;'), undefined);
    assert.equal(roleStatementTarget("COMMENT ON ROLE postgres IS 'x';"), undefined);
    assert.equal(roleStatementTarget("CREATE TABLESPACE t OWNER postgres LOCATION '/x';"), undefined);
    assert.equal(roleStatementTarget("SET client_encoding = 'UTF8';"), undefined);
    assert.equal(roleStatementTarget('CREATE ROLEX postgres;'), undefined);
  });
});

describe('filterGlobals', () => {
  it("drops only the target user postgres's own CREATE ROLE / ALTER ROLE statements", () => {
    const { kept, dropped } = filterGlobals(splitStatements(FIXTURE), 'postgres');
    assert.deepEqual(dropped, [
      'CREATE ROLE postgres;',
      `ALTER ROLE postgres WITH SUPERUSER INHERIT CREATEROLE CREATEDB LOGIN REPLICATION BYPASSRLS PASSWORD '${SCRAM_PG}';`,
      "ALTER ROLE postgres SET statement_timeout TO '0';",
    ]);
    assert.deepEqual(
      kept,
      EXPECTED.filter((s) => !dropped.includes(s)),
    );
    assert.ok(kept.includes('CREATE ROLE postgres2;'));
    assert.ok(kept.includes('CREATE ROLE "a b";'));
    assert.ok(kept.includes('CREATE ROLE "Admin";'));
    assert.ok(kept.includes('GRANT readers TO postgres GRANTED BY postgres;'));
    assert.ok(kept.includes("CREATE TABLESPACE fastspace OWNER postgres LOCATION '/mnt/fast;ssd';"));
  });

  it('a quoted "postgres" is the same role; "Postgres" and "postgres""x" are not', () => {
    const { kept, dropped } = filterGlobals(
      ['CREATE ROLE "postgres";', 'CREATE ROLE "Postgres";', 'CREATE ROLE "postgres""x";', 'CREATE ROLE "postgres ";', 'CREATE ROLE POSTGRES;'],
      'postgres',
    );
    assert.deepEqual(dropped, ['CREATE ROLE "postgres";', 'CREATE ROLE POSTGRES;']);
    assert.deepEqual(kept, ['CREATE ROLE "Postgres";', 'CREATE ROLE "postgres""x";', 'CREATE ROLE "postgres ";']);
  });

  it('a target user with upper case is matched only by its quoted form', () => {
    const { kept, dropped } = filterGlobals(splitStatements(FIXTURE), 'Admin');
    assert.deepEqual(dropped, [
      'CREATE ROLE "Admin";',
      `ALTER ROLE "Admin" WITH SUPERUSER INHERIT CREATEROLE CREATEDB LOGIN NOREPLICATION NOBYPASSRLS PASSWORD '${SCRAM_APP}';`,
    ]);
    assert.ok(kept.includes('CREATE ROLE postgres;'));
    const other = filterGlobals(['CREATE ROLE Admin;', 'CREATE ROLE admin;', 'CREATE ROLE "admin";'], 'Admin');
    assert.deepEqual(other.dropped, []);
    assert.equal(other.kept.length, 3);
  });

  it('a target user with a space or ; in its name', () => {
    const { dropped } = filterGlobals(splitStatements(FIXTURE), 'semi;colon');
    assert.deepEqual(dropped, [
      'CREATE ROLE "semi;colon";',
      'ALTER ROLE "semi;colon" WITH NOSUPERUSER INHERIT NOCREATEROLE NOCREATEDB NOLOGIN NOREPLICATION NOBYPASSRLS;',
    ]);
    assert.equal(filterGlobals(splitStatements(FIXTURE), 'a b').dropped.length, 2);
    assert.equal(filterGlobals(splitStatements(FIXTURE), 'we"ird--name').dropped.length, 2);
  });
});

describe('forNonSuperuser', () => {
  it('takes SUPERUSER, REPLICATION and BYPASSRLS (and their NO forms) out of ALTER ROLE, naming what a role had', () => {
    const { statements, notGranted } = forNonSuperuser([
      'CREATE ROLE "Ops Team";',
      `ALTER ROLE "Ops Team" WITH SUPERUSER INHERIT NOCREATEROLE CREATEDB LOGIN REPLICATION NOBYPASSRLS PASSWORD '${SCRAM_APP}';`,
      'ALTER ROLE app WITH NOSUPERUSER INHERIT NOCREATEROLE NOCREATEDB LOGIN NOREPLICATION NOBYPASSRLS;',
      "ALTER ROLE app SET search_path TO 'replication';",
      'GRANT analyst TO app GRANTED BY postgres;',
      'GRANT "x y" TO app WITH ADMIN OPTION GRANTED BY "Old Admin";',
    ]);
    assert.deepEqual(statements, [
      'CREATE ROLE "Ops Team";',
      `ALTER ROLE "Ops Team" WITH INHERIT NOCREATEROLE CREATEDB LOGIN PASSWORD '${SCRAM_APP}';`,
      'ALTER ROLE app WITH INHERIT NOCREATEROLE NOCREATEDB LOGIN;',
      "ALTER ROLE app SET search_path TO 'replication';",
      'GRANT analyst TO app;',
      'GRANT "x y" TO app WITH ADMIN OPTION;',
    ]);
    assert.deepEqual(notGranted, [
      { role: 'Ops Team', what: 'SUPERUSER' },
      { role: 'Ops Team', what: 'REPLICATION' },
    ]);
  });

  it('drops an ALTER ROLE left with nothing to set', () => {
    assert.deepEqual(forNonSuperuser(['ALTER ROLE r WITH SUPERUSER;']), { statements: [], notGranted: [{ role: 'r', what: 'SUPERUSER' }] });
  });
});
