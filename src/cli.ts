#!/usr/bin/env node
/** The pg-migrate command (package.json bin): everything lives in cli/, loaded once the Node.js version is known to be supported. */
const major = Number(process.versions.node.split('.')[0]);
if (major < 22) {
  process.stderr.write(
    `pg-migrate: needs Node.js 22 or newer; this is Node.js ${process.versions.node} (${process.execPath}). Install a newer Node.js, or run it through npm (npm exec pg-migrate), which uses the project's own Node.js 24\n`,
  );
  process.exit(2);
}
const { main } = await import('./cli/main.ts');

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    process.stderr.write(`pg-migrate: unexpected error: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exitCode = 5;
  },
);
