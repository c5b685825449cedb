/**
 * The file path: `pg_dump -Fd -j` into the dump root (source queue), then `pg_restore -j` from there
 * (target queue). The next database dumps while this one restores, and a finished dump is kept, so a
 * failed restore is redone without dumping again.
 */
import { rm } from 'node:fs/promises';
import { clientArgs } from '../pg/connect.ts';
import { restoreFlags, type Context } from '../pipeline/context.ts';
import { excludeDataArgs, type DataPath, type TransferIo } from './data-path.ts';

export function fileDataPath(ctx: Context, io: TransferIo): Pick<DataPath, 'dumpDatabase' | 'restoreDatabase'> {
  const { tools, plan } = ctx;
  return {
    async dumpDatabase(db, { snapshot, excludeData }) {
      const dir = io.location(db.name, 'regular');
      await rm(dir, { recursive: true, force: true });
      const args = ['-Fd', '-j', String(db.dumpJobs), '-Z', plan.compression, '--create', '-f', dir];
      if (snapshot) args.push(`--snapshot=${snapshot}`);
      args.push(...excludeDataArgs(excludeData));
      args.push(...clientArgs(ctx.source, db.name));
      await io.run(tools.pgDump.path, args);
    },
    async restoreDatabase(db, opts) {
      const dir = io.location(db.name, 'regular');
      const args = ['-j', String(db.restoreJobs), ...restoreFlags(ctx), '--create'];
      args.push(...(await io.restoreListSkipping(dir, opts?.skipConstraints)));
      args.push(...clientArgs(ctx.target, ctx.target.endpoint.database), dir);
      await io.run(tools.pgRestore.path, args);
    },
  };
}
