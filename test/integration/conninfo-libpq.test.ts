/**
 * conninfo-parse.ts, servicefile.ts and resolveConnection against libpq itself: a tiny C program
 * prints what PQconninfoParse (parsing) and PQconnectStart + PQconninfo (service files and PG*
 * variables applied) make of a string. Skipped where no C compiler or libpq-fe.h is installed.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { parseConninfo } from '../../src/pg/conninfo-parse.ts';
import { resolveConnection } from '../../src/pg/conninfo.ts';
import { writeServiceFile } from '../harness/libpq.ts';

const INCLUDE = '/usr/include/postgresql';
const ORACLE_C = String.raw`
#include <stdio.h>
#include <string.h>
#include <libpq-fe.h>
static void str(const char *s) {
  putchar('"');
  for (; *s; s++) { unsigned char c = *s; if (c == '"' || c == '\\') printf("\\%c", c); else if (c < 0x20) printf("\\u%04x", c); else putchar(c); }
  putchar('"');
}
static void dump(PQconninfoOption *o) {
  int first = 1;
  putchar('{');
  for (; o->keyword; o++) if (o->val) { if (!first) putchar(','); first = 0; str(o->keyword); putchar(':'); str(o->val); }
  puts("}");
}
int main(int argc, char **argv) {
  if (argc != 3) return 2;
  if (strcmp(argv[1], "parse") == 0) {
    char *err = NULL;
    PQconninfoOption *o = PQconninfoParse(argv[2], &err);
    if (o) dump(o); else { printf("{\"error\":"); str(err ? err : "?"); puts("}"); }
    return 0;
  }
  PGconn *c = PQconnectStart(argv[2]);
  if (PQstatus(c) != CONNECTION_BAD || strstr(PQerrorMessage(c), "connection to server")) dump(PQconninfo(c));
  else { printf("{\"error\":"); str(PQerrorMessage(c)); puts("}"); }
  return 0;
}
`;

const tmp = mkdtempSync(path.join(os.tmpdir(), 'pgm-libpq-oracle-'));
after(() => {
  rmSync(tmp, { recursive: true, force: true });
});
const oracle = path.join(tmp, 'oracle');
let unavailable: string | false = existsSync(path.join(INCLUDE, 'libpq-fe.h')) ? false : `no ${INCLUDE}/libpq-fe.h (libpq-dev)`;
if (!unavailable) {
  try {
    writeFileSync(`${oracle}.c`, ORACLE_C);
    execFileSync('cc', ['-o', oracle, `${oracle}.c`, `-I${INCLUDE}`, '-lpq'], { stdio: 'pipe' });
  } catch (err) {
    unavailable = `cannot build the libpq helper: ${(err as Error).message}`;
  }
}

type Result = Record<string, string> & { error?: string };
const libpq = (mode: 'parse' | 'resolve', text: string, env: NodeJS.ProcessEnv = {}): Result => {
  const clean = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('PG')));
  return JSON.parse(execFileSync(oracle, [mode, text], { encoding: 'utf8', env: { ...clean, ...env } })) as Result;
};

const CORPUS = [
  " host = a   port= 5\tdbname ='my db'",
  "password='it\\'s a \\\\ test' user=x\\ y application_name=\\'q\\'",
  "host='' port= host='x'port=5 host=b\\",
  'requiressl=1',
  'hots=a',
  'host=a b',
  "host='open",
  'postgresql://',
  'postgres://u:p:q@localhost:5433/db?connect_timeout=10&application_name=my%20app',
  'postgresql://host1:123,host2:456,[::1],[fe80::1%25eth0]:7,/somedb?target_session_attrs=read-write',
  'postgresql://%2Fvar%2Frun%2Fpostgresql/caf%C3%A9?options=-c%20a%3Db+c',
  'postgresql:///db?host=/tmp&port=7&dbname=x&ssl=true&',
  'postgresql://h?user=a@b',
  'postgresql://h/db/extra?%73slmode=require',
  'postgresql://h/db?ssl=false',
  'postgresql://h/db?a',
  'postgresql://h/db?a=b=c',
  'postgresql://[]/db',
  'postgresql://[::1/db',
  'postgresql://[::1]x/db',
  'postgresql://h/db%zz',
  'postgresql://h/db%00',
];

describe('agreement with libpq', { skip: unavailable }, () => {
  it('parses every string of the corpus as PQconninfoParse does', () => {
    for (const text of CORPUS) {
      const theirs = libpq('parse', text);
      let ours: Result;
      try {
        ours = { ...parseConninfo(text) };
      } catch (err) {
        ours = { error: (err as Error).message };
      }
      if (theirs.error !== undefined || ours.error !== undefined) assert.deepEqual([ours.error !== undefined, theirs.error !== undefined], [true, true], text);
      else assert.deepEqual(ours, theirs, text);
    }
  });

  it('applies service files and PG* variables as PQconnectStart does', async () => {
    const userFile = path.join(tmp, 'user.conf');
    const sysDir = mkdtempSync(path.join(tmp, 'sys-'));
    await writeServiceFile(userFile, { a: { port: '6001', sslmode: 'disable', options: '-c x=1', dbname: 'svc' } });
    await writeServiceFile(path.join(sysDir, 'pg_service.conf'), { a: { port: '1' }, b: { user: 'sys-user', application_name: 'sys' } });
    writeFileSync(path.join(tmp, 'nested.conf'), '[n]\nservice=a\n');
    const base = { PGSERVICEFILE: userFile, PGSYSCONFDIR: sysDir };
    const cases: [string, NodeJS.ProcessEnv][] = [
      [
        'hostaddr=127.0.0.1 port=1',
        { PGHOST: 'env-host', PGUSER: 'u', PGDATABASE: 'd', PGSSLMODE: 'require', PGAPPNAME: 'app', PGTARGETSESSIONATTRS: 'read-write' },
      ],
      ['service=a hostaddr=127.0.0.1 sslmode=require', { ...base, PGPORT: '7000', PGOPTIONS: '-c y=2', PGUSER: 'u' }],
      ['hostaddr=127.0.0.1', { ...base, PGSERVICE: 'a', PGSSLMODE: 'require' }],
      ['service=b hostaddr=127.0.0.1 port=1', { ...base, PGUSER: 'env-user' }],
      ['hostaddr=127.0.0.1 port=1', { PGREQUIRESSL: '1', PGCONNECT_TIMEOUT: '9' }],
      ['service=zz hostaddr=127.0.0.1', base],
      ['service=a hostaddr=127.0.0.1', { PGSERVICEFILE: path.join(tmp, 'missing.conf') }],
      ['service=n hostaddr=127.0.0.1', { PGSERVICEFILE: path.join(tmp, 'nested.conf') }],
    ];
    for (const [text, env] of cases) {
      const theirs = libpq('resolve', text, env);
      let ours: Result;
      try {
        const spec = resolveConnection('source', { conninfo: text }, { HOME: tmp, ...env }, { port: 5432, user: 'nobody', dbname: 'x' });
        // What libpq decides from the string, the services and the variables (not the tool's defaults).
        ours = Object.fromEntries(Object.entries(spec.params).filter(([k]) => spec.origins[k as keyof typeof spec.origins]?.kind !== 'default'));
      } catch (err) {
        ours = { error: (err as Error).message };
      }
      if (theirs.error !== undefined || ours.error !== undefined) {
        assert.deepEqual(
          [ours.error !== undefined, theirs.error !== undefined],
          [true, true],
          `${text}: ours ${String(ours.error)}, libpq ${String(theirs.error)}`,
        );
        continue;
      }
      // PQconninfo() leaves service out (no field of a connection); servicefile is a libpq 18 keyword.
      for (const [k, v] of Object.entries(ours)) if (k !== 'service' && k !== 'servicefile') assert.equal(v, theirs[k], `${text}: ${k}`);
    }
  });
});
