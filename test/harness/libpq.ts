/**
 * libpq helper files for tests.
 */
import * as fs from 'node:fs/promises';

/**
 * Write a libpq connection service file (the PGSERVICEFILE / ~/.pg_service.conf format):
 * one `[name]` section per service with `key=value` lines, e.g.
 * `writeServiceFile(p, { src: { host: '127.0.0.1', port: '5433', dbname: 'postgres' } })`,
 * then run a libpq client with PGSERVICEFILE=p and `service=src`. The file is mode 0600
 * (it may hold a password). Names, keys and values must not contain line breaks, and names
 * no `]`; values are written as they are (libpq takes everything after the `=`, trimmed).
 */
export async function writeServiceFile(path: string, services: Record<string, Record<string, string>>): Promise<void> {
  let text = '';
  for (const [name, params] of Object.entries(services)) {
    if (!name || /[\]\r\n]/.test(name)) throw new Error(`writeServiceFile: bad service name ${JSON.stringify(name)}`);
    text += `[${name}]\n`;
    for (const [key, value] of Object.entries(params)) {
      if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(key)) throw new Error(`writeServiceFile: bad key ${JSON.stringify(key)} in [${name}]`);
      if (/[\r\n]/.test(value)) throw new Error(`writeServiceFile: value of ${key} in [${name}] contains a line break`);
      text += `${key}=${value}\n`;
    }
    text += '\n';
  }
  await fs.writeFile(path, text, { mode: 0o600 });
  await fs.chmod(path, 0o600);
}
