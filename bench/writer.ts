/**
 * The application that keeps writing while an online contender runs (standard shape): one session per
 * database in WRITER_DBS, each transaction inserting into, updating and deleting from a table of its
 * own (`bench_writes`) and updating a row of `orders`, until the cutover's fence stops it ("read-only
 * transaction" in a new session after its own was ended). What it committed tells how long the
 * application could not write.
 */
import pg from 'pg';
import type { Cluster } from '../test/harness/cluster.ts';

/** Two of the standard shape's application databases (both have `orders`). */
export const WRITER_DBS = ['app_shop', 'app_crm'];

export interface WriterFigures {
  db: string;
  commits: number;
  /** When the last commit was acknowledged (Date.now()), 0 if none. */
  lastCommitAt: number;
  /** Why it stopped: the fence, or the benchmark stopped it (the run ended without fencing). */
  endedBy: 'read-only' | 'stopped';
  /** An error that is neither the fence nor an ended session. */
  error?: string;
}

/** Creates the writer's table in each writer database of the source (dropped again by removeWriterTables). */
export async function createWriterTables(source: Cluster): Promise<void> {
  for (const db of WRITER_DBS) {
    await source.query(
      'create table if not exists bench_writes (id bigserial primary key, n bigint not null, v text not null, at timestamptz not null default now())',
      [],
      db,
    );
  }
}

/** After an online run: the writer's table gone from the source (reopened by servers.ts's reopenSource first). */
export async function removeWriterTables(source: Cluster): Promise<void> {
  for (const db of WRITER_DBS) await source.query('drop table if exists bench_writes', [], db);
}

const ended = (err: unknown): boolean =>
  (err as { code?: string }).code === '57P01' ||
  /Connection terminated|terminating connection|ECONNRESET|EPIPE|connection error|not queryable/i.test((err as Error).message);

/** One database's writer; `done` resolves when the fence stopped it or stop() was called. */
export class BenchWriter {
  readonly done: Promise<WriterFigures>;
  private stopping = false;

  constructor(source: Cluster, db: string, pauseMs = 10) {
    this.done = this.run(source, db, pauseMs);
  }

  private isStopping(): boolean {
    return this.stopping;
  }

  private async run(source: Cluster, db: string, pauseMs: number): Promise<WriterFigures> {
    const figures: WriterFigures = { db, commits: 0, lastCommitAt: 0, endedBy: 'stopped' };
    const connect = async (): Promise<pg.Client> => {
      const c = new pg.Client({ ...source.connectionConfig(db), application_name: 'bench-writer' });
      c.on('error', () => undefined);
      await c.connect();
      return c;
    };
    let client = await connect();
    let n = 0;
    try {
      while (!this.isStopping()) {
        n++;
        try {
          await client.query(
            `begin;
             insert into bench_writes (n, v) values (${String(n)}, md5('${String(n)}'));
             update bench_writes set v = md5(v) where id = (select max(id) - 5 from bench_writes);
             ${n % 3 === 0 ? 'delete from bench_writes where id = (select max(id) - 10 from bench_writes);' : ''}
             update orders set status = status where id = (select min(id) from orders) + ${String(n % 1000)};
             commit;`,
          );
          figures.commits++;
          figures.lastCommitAt = Date.now();
        } catch (err) {
          if ((err as { code?: string }).code === '25006') {
            figures.endedBy = 'read-only';
            break;
          }
          if (this.isStopping()) break;
          if (!ended(err)) {
            figures.error = (err as Error).message;
            break;
          }
          // The fence ended the session: a pool would open a new one.
          await client.end().catch(() => undefined);
          client = await connect();
          continue;
        }
        await new Promise((r) => setTimeout(r, pauseMs));
      }
    } finally {
      await client.end().catch(() => undefined);
    }
    return figures;
  }

  /** Stops it (if the fence has not) and returns its figures. */
  stop(): Promise<WriterFigures> {
    this.stopping = true;
    return this.done;
  }
}
