import { readFileSync } from 'node:fs';

/** This tool's version, from its package.json. */
export const TOOL_VERSION = (JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version: string }).version;
