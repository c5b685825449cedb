/**
 * Roles and tablespaces: `pg_dumpall --globals-only` from the source, applied statement by statement
 * on the target. A role or tablespace that existed on the target before this migration first touched
 * it is the target's and is left exactly as it is (password, attributes, connection limit, validity,
 * settings, comment) unless --overwrite-existing-roles; the summary names each with what differs.
 * Memberships and grants are added either way. Roles created by this migration are migrated whole.
 */
import { clientArgs, describePgError, withClient } from '../pg/connect.ts';
import { runTool } from '../proc/run.ts';
import { MigrateError } from '../errors.ts';
import type { RunSummary } from '../events.ts';
import { applyGlobals, filterGlobals, forNonSuperuser, splitStatements, statementObject } from './globals-script.ts';
import type { Context } from './context.ts';
import { roleDifferences, roles } from './roles.ts';

/** What the target had before this migration applied any global statement (state: roles.json). */
interface TargetGlobals {
  at: string;
  roles: string[];
  tablespaces: string[];
}

/**
 * `superuser`: whether each side's user is one. A source user that is not reads no passwords
 * (--no-role-passwords: the login roles created are listed); a target user that is not gives no
 * SUPERUSER, REPLICATION or BYPASSRLS and names no other grantor, and what it may not do is listed by
 * role instead of failing the run.
 */
export async function migrateGlobals(ctx: Context, superuser: { source: boolean; target: boolean }, summary: RunSummary): Promise<void> {
  const sourceSuperuser = superuser.source;
  const { emit, store } = ctx;
  const done = await store.globalsDone();
  if (done !== undefined) {
    summary.globals.status = 'done';
    summary.globals.rolesLeftAlone = (done.rolesLeftAlone as RunSummary['globals']['rolesLeftAlone'] | undefined) ?? [];
    summary.globals.tablespacesLeftAlone = (done.tablespacesLeftAlone as string[] | undefined) ?? [];
    summary.globals.rolesWithoutPassword = done.rolesWithoutPassword as string[] | undefined;
    summary.globals.rolesNotGranted = done.rolesNotGranted as RunSummary['globals']['rolesNotGranted'];
    emit({ type: 'stage', stage: 'globals', status: 'done', message: 'already migrated (globals.done)' });
    return;
  }
  emit({ type: 'stage', stage: 'globals', status: 'start' });
  const e = ctx.source.endpoint;
  const args = ['--globals-only', ...clientArgs(ctx.source, e.database)];
  if (!sourceSuperuser) args.push('--no-role-passwords');
  const out = await runTool(ctx.tools.pgDumpall.path, args, { env: ctx.childEnv, signal: ctx.signal, children: ctx.children, captureStdout: true });
  const dumped = splitStatements(out.stdout);
  const adapted = superuser.target ? { statements: dumped, notGranted: [] } : forNonSuperuser(dumped);
  const statements = adapted.statements;
  const sourceRoles = await withClient(ctx.source, e.database, roles);

  await withClient(ctx.target, ctx.target.endpoint.database, async (c) => {
    // What the target had before the first global statement of this migration (kept across reruns).
    let before = await store.readDoc<TargetGlobals>(store.rolesPath);
    if (before === undefined) {
      const ts = await c.query<{ spcname: string }>('select spcname from pg_tablespace');
      before = { at: new Date().toISOString(), roles: [...(await roles(c)).keys()], tablespaces: ts.rows.map((r) => r.spcname) };
      await store.writeDoc(store.rolesPath, before);
    }
    const targetRoles = await roles(c);
    const preexisting = new Set(before.roles);
    // The target's own user is never rewritten, whatever the options say (its password would change under the run).
    const leftAloneRoles = ctx.options.overwriteExistingRoles ? new Set([ctx.target.endpoint.user]) : preexisting;
    const leftAloneTablespaces = ctx.options.overwriteExistingRoles ? [] : before.tablespaces;
    const { kept } = filterGlobals(statements, leftAloneRoles, leftAloneTablespaces);
    const mentioned = new Set(
      statements
        .map(statementObject)
        .filter((o) => o !== undefined)
        .map((o) => `${o.kind}:${o.name}`),
    );
    summary.globals.rolesLeftAlone = [...leftAloneRoles]
      .filter((name) => mentioned.has(`role:${name}`))
      .sort()
      .map((name) => {
        const src = sourceRoles.get(name);
        const dst = targetRoles.get(name);
        return { name, differences: src && dst ? roleDifferences(src, dst) : [] };
      });
    summary.globals.tablespacesLeftAlone = leftAloneTablespaces.filter((name) => mentioned.has(`tablespace:${name}`)).sort();
    if (!sourceSuperuser) {
      summary.globals.rolesWithoutPassword = [...sourceRoles.values()]
        .filter((r) => r.login && !preexisting.has(r.name))
        .map((r) => r.name)
        .sort();
    }
    const outcome = await applyGlobals(c, kept, !superuser.target).catch((err: unknown) => {
      throw new MigrateError(`globals: ${describePgError(err)}`);
    });
    summary.globals.skippedExisting = outcome.alreadyExisted;
    summary.globals.errors = outcome.errors;
    const created = new Set(kept.map(statementObject).map((o) => (o?.kind === 'role' ? o.name : undefined)));
    summary.globals.rolesNotGranted = [...adapted.notGranted.filter((n) => created.has(n.role)), ...outcome.notGranted];
    if (outcome.errors.length > 0) {
      summary.globals.status = 'failed';
      emit({ type: 'stage', stage: 'globals', status: 'failed', message: outcome.errors.join('\n') });
      return;
    }
    await store.setGlobalsDone({
      applied: outcome.applied,
      alreadyExisted: outcome.alreadyExisted,
      rolesLeftAlone: summary.globals.rolesLeftAlone,
      tablespacesLeftAlone: summary.globals.tablespacesLeftAlone,
      rolesWithoutPassword: summary.globals.rolesWithoutPassword,
      rolesNotGranted: summary.globals.rolesNotGranted,
    });
    summary.globals.status = 'done';
    const left = summary.globals.rolesLeftAlone.length;
    emit({
      type: 'stage',
      stage: 'globals',
      status: 'done',
      message: `${String(outcome.applied)} statements, ${String(outcome.alreadyExisted)} already existed${left > 0 ? `, ${String(left)} existing roles left as they are` : ''}`,
    });
  });
}
