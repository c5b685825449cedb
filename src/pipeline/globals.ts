/** Roles and tablespaces: `pg_dumpall --globals-only` from the source, applied statement by statement on the target. */
import { describePgError, withClient } from '../pg/connect.ts';
import { dbnameConninfo } from '../pg/passfile.ts';
import { runTool } from '../proc/run.ts';
import { MigrateError } from '../errors.ts';
import type { RunSummary } from '../events.ts';
import { applyGlobals, filterGlobals, splitStatements } from './globals-script.ts';
import type { Context } from './context.ts';

export async function migrateGlobals(ctx: Context, sourceSuperuser: boolean, summary: RunSummary): Promise<void> {
  const { emit, store } = ctx;
  if ((await store.globalsDone()) !== undefined) {
    summary.globals.status = 'done';
    emit({ type: 'stage', stage: 'globals', status: 'done', message: 'already migrated (globals.done)' });
    return;
  }
  emit({ type: 'stage', stage: 'globals', status: 'start' });
  const e = ctx.source.endpoint;
  const args = ['--globals-only', '-h', e.host, '-p', String(e.port), '-U', e.user, '-w', `--dbname=${dbnameConninfo(e.database)}`];
  if (!sourceSuperuser) args.push('--no-role-passwords');
  const out = await runTool(ctx.tools.pgDumpall.path, args, { env: ctx.childEnv, signal: ctx.signal, children: ctx.children, captureStdout: true });
  const { kept } = filterGlobals(splitStatements(out.stdout), ctx.target.endpoint.user);
  const outcome = await withClient(ctx.target, ctx.target.endpoint.database, (c) => applyGlobals(c, kept)).catch((err: unknown) => {
    throw new MigrateError(`globals: ${describePgError(err)}`);
  });
  summary.globals.skippedExisting = outcome.alreadyExisted;
  summary.globals.errors = outcome.errors;
  if (outcome.errors.length > 0) {
    summary.globals.status = 'failed';
    emit({ type: 'stage', stage: 'globals', status: 'failed', message: outcome.errors.join('\n') });
    return;
  }
  await store.setGlobalsDone({ applied: outcome.applied, alreadyExisted: outcome.alreadyExisted });
  summary.globals.status = 'done';
  emit({
    type: 'stage',
    stage: 'globals',
    status: 'done',
    message: `${String(outcome.applied)} statements, ${String(outcome.alreadyExisted)} already existed`,
  });
}
