/**
 * --redo-db: a database named by it is migrated afresh once. The redo is recorded in the database's
 * state when it is first acted on, so a later run with the same flag resumes that redo (or, once it
 * verified, leaves the database alone) instead of starting it over; the record is dropped by the first
 * run that does not name the database.
 */
import { matchesAny } from '../patterns.ts';
import { Marker } from '../state/names.ts';
import type { StateStore } from '../state/store.ts';
import type { EventSink } from '../events.ts';

interface RedoRecord {
  at: string;
  /** `forgetting` until the database's earlier state is gone; `acted` from then on. */
  status: 'forgetting' | 'acted';
}

/** Acts on the --redo-db globs for the databases of this run. */
export async function applyRedo(store: StateStore, databases: { name: string; inPlace?: boolean }[], globs: string[], emit: EventSink): Promise<void> {
  for (const { name, inPlace } of databases) {
    const state = store.database(name);
    const record = await state.doc<RedoRecord>('redo.json');
    if (!matchesAny(name, globs)) {
      if (record) await state.removeDoc('redo.json');
      continue;
    }
    if (record?.status === 'acted') {
      const verified = (await state.marker(Marker.verified)) !== undefined;
      emit({
        type: 'info',
        message: `${name}: --redo-db was acted on at ${record.at}; ${verified ? 'that redo verified, so it is not repeated' : 'resuming that redo'} (to redo ${name} once more, run once without this --redo-db, then with it)`,
      });
      continue;
    }
    const at = record?.at ?? new Date().toISOString();
    await state.setDoc('redo.json', { at, status: 'forgetting' } satisfies RedoRecord);
    await state.forget();
    await state.setDoc('redo.json', { at, status: 'acted' } satisfies RedoRecord);
    emit({
      type: 'info',
      message:
        inPlace === true
          ? `${name}: --redo-db: restoring it again into the target's own ${name}, which is never dropped (remove what an earlier run restored there first, or the restore fails on objects that exist)`
          : `${name}: --redo-db: migrating it afresh`,
    });
  }
}
