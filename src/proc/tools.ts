import { access, constants } from 'node:fs/promises';
import path from 'node:path';
import { execa } from 'execa';

export interface Tool {
  name: string;
  path: string;
  /** e.g. 15 */
  major: number;
  version: string;
}
export interface Tools {
  pgDump: Tool;
  pgDumpall: Tool;
  pgRestore: Tool;
  /** Runs the page-range copies (ranges.ts): `\copy` between a FIFO and a server, rows never pass through node. */
  psql: Tool;
}

const NAMES = { pgDump: 'pg_dump', pgDumpall: 'pg_dumpall', pgRestore: 'pg_restore', psql: 'psql' } as const;

async function executable(p: string): Promise<boolean> {
  try {
    await access(p, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

async function locate(name: string, binDir: string | undefined, envPath: string | undefined): Promise<string | undefined> {
  const dirs = binDir !== undefined ? [binDir] : (envPath ?? '').split(path.delimiter).filter(Boolean);
  for (const dir of dirs) {
    const candidate = path.join(dir, name);
    if (await executable(candidate)) return candidate;
  }
  return undefined;
}

/**
 * A major version as one comparable number: 15 for 15.x, and 9.6 for 9.6.x (before 10 the major
 * version was two numbers).
 */
export function majorOf(first: number, second: number): number {
  return first >= 10 ? first : first + second / 10;
}

/** The major version of a server_version_num (150018 → 15, 90624 → 9.6). */
export function majorOfVersionNum(num: number): number {
  return num >= 100000 ? Math.floor(num / 10000) : majorOf(Math.floor(num / 10000), Math.floor(num / 100) % 100);
}

/** `pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)` → { major: 15, version: '15.18' } */
export function parseToolVersion(output: string): { major: number; version: string } | undefined {
  const m = /\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?(?:\.(\d+))?/.exec(output);
  if (!m) return undefined;
  const first = Number(m[1]);
  const version = [m[1], m[2], m[3]].filter((x) => x !== undefined).join('.');
  return { major: majorOf(first, Number(m[2] ?? 0)), version };
}

/** Finds pg_dump, pg_dumpall, pg_restore and psql; returns the tools found and one problem per tool missing. */
export async function discoverTools(binDir: string | undefined, env: NodeJS.ProcessEnv): Promise<{ tools?: Tools; problems: string[] }> {
  const problems: string[] = [];
  const found: Partial<Record<keyof Tools, Tool>> = {};
  const located = await Promise.all(
    (Object.entries(NAMES) as [keyof Tools, string][]).map(async ([key, name]) => {
      const p = await locate(name, binDir, env.PATH);
      const r = p === undefined ? undefined : await execa(p, ['--version'], { reject: false, env, extendEnv: false });
      return { key, name, p, r };
    }),
  );
  for (const { key, name, p, r } of located) {
    if (p === undefined || r === undefined) {
      problems.push(
        binDir !== undefined
          ? `${name} is not in --pg-bin-dir ${binDir}: point --pg-bin-dir at the bin directory of a PostgreSQL client installation`
          : `${name} is not on PATH: install the PostgreSQL client programs (as new as the source server, e.g. apt-get install postgresql-client-18) or pass --pg-bin-dir`,
      );
      continue;
    }
    const v = parseToolVersion(r.stdout);
    if (r.failed || v === undefined) {
      problems.push(
        `${p} --version did not report a PostgreSQL version (${(r.stderr || r.stdout).trim() || r.shortMessage}); pass --pg-bin-dir with working client programs`,
      );
      continue;
    }
    found[key] = { name, path: p, ...v };
  }
  const { pgDump, pgDumpall, pgRestore, psql } = found;
  if (problems.length > 0 || !pgDump || !pgDumpall || !pgRestore || !psql) return { problems };
  const tools: Tools = { pgDump, pgDumpall, pgRestore, psql };
  const all = [pgDump, pgDumpall, pgRestore, psql];
  const majors = new Set(all.map((t) => t.major));
  if (majors.size > 1) {
    const list = all.map((t) => `${t.name} ${t.version}`);
    problems.push(
      `${list.slice(0, -1).join(', ')} and ${list.at(-1)} come from different PostgreSQL versions; pass --pg-bin-dir with one installation's bin directory`,
    );
  }
  return { tools, problems };
}

/** The pg_dump -Z value: zstd:5 from pg_dump 16 on, gzip level 1 before (gzip is all it has). */
export function chooseCompression(pgDumpMajor: number): string {
  return pgDumpMajor >= 16 ? 'zstd:5' : '1';
}

/**
 * Whether pg_dump of this major takes `value` for -Z, as its own parser does in outline: before 16 a
 * level 0-9; from 16 also `none`, `gzip`, `lz4` or `zstd`, optionally `:` and a level or
 * `keyword=value` details (pg_dump itself still checks the level's range and what it was built with).
 * A value it refuses would fail every dump after the target was tuned and the globals copied.
 */
export function compressionProblem(value: string, pgDumpMajor: number): string | undefined {
  if (/^\d$/.test(value)) return undefined;
  if (pgDumpMajor >= 16 && /^(?:none|gzip|lz4|zstd)(?::(?:\d+|[a-z]+(?:=\d+)?(?:,[a-z]+(?:=\d+)?)*))?$/.test(value)) return undefined;
  return `--compression ${JSON.stringify(value)} is not a pg_dump -Z value for pg_dump ${String(pgDumpMajor)}: ${
    pgDumpMajor >= 16
      ? 'write a level 0-9 or METHOD[:LEVEL] with METHOD none, gzip, lz4 or zstd (e.g. zstd:5)'
      : 'write a gzip level from 0 to 9 (methods other than gzip need pg_dump 16)'
  }`;
}

/** The oldest target server pg-migrate supports (txid_status, pg_file_settings, ...). */
export const OLDEST_TARGET_MAJOR = 10;

/**
 * What the versions of the client programs and of both servers allow: pg_dump must be at least as new
 * as the source; client programs of 17 or newer write `SET transaction_timeout` into every dump, which
 * servers before 17 reject, so pg_restore would report an error for every database.
 */
export function versionProblems(
  toolsMajor: number,
  toolsVersion: string,
  sourceMajor: number,
  targetMajor: number,
): { problems: string[]; warnings: string[] } {
  const problems: string[] = [];
  const warnings: string[] = [];
  if (targetMajor < OLDEST_TARGET_MAJOR) {
    problems.push(`the target runs PostgreSQL ${String(targetMajor)}; pg-migrate migrates onto PostgreSQL ${String(OLDEST_TARGET_MAJOR)} or newer`);
  }
  if (toolsMajor < sourceMajor) {
    problems.push(
      `the client programs (${toolsVersion}) are older than the source server (${String(sourceMajor)}); pg_dump must be at least as new as the source: install the client programs of PostgreSQL ${String(sourceMajor)} or newer and pass --pg-bin-dir`,
    );
  } else if (toolsMajor >= 17 && targetMajor < 17) {
    problems.push(
      sourceMajor >= 17
        ? `the client programs (${toolsVersion}) write SET transaction_timeout into every dump, which the target (PostgreSQL ${String(targetMajor)}) rejects, and no older pg_dump can read the source (PostgreSQL ${String(sourceMajor)}): migrating onto an older major version is not supported`
        : `the client programs (${toolsVersion}) write SET transaction_timeout into every dump, which the target (PostgreSQL ${String(targetMajor)}) rejects, so every restore would fail: install the client programs of PostgreSQL 16 (at least as new as the source, older than 17) and pass --pg-bin-dir`,
    );
  } else if (toolsMajor > targetMajor) {
    warnings.push(
      `pg_restore ${toolsVersion} is newer than the target server (${String(targetMajor)}); a dump from a newer pg_dump may use syntax the target does not know`,
    );
  }
  if (targetMajor < sourceMajor)
    warnings.push(`the target (${String(targetMajor)}) is older than the source (${String(sourceMajor)}): a downgrade may fail on features the target lacks`);
  return { problems, warnings };
}
