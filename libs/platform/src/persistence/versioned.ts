import { EntityManager, EntityTarget, ObjectLiteral } from 'typeorm';
import { conflict } from '@flotilla/domain';

/**
 * Optimistic concurrency: updates a row only if its version is still `expectedVersion`, bumping it.
 * TypeORM's save() ignores @VersionColumn, so every versioned write goes through here.
 * Throws CONFLICT (ABORTED) when someone else wrote first.
 */
export async function updateVersioned<T extends ObjectLiteral>(
  manager: EntityManager,
  entity: EntityTarget<T>,
  ref: { kind: string; id: string; version: number },
  changes: Partial<T>,
): Promise<number> {
  const result = await versionedUpdate(manager, entity, ref, changes).execute();
  if (result.affected !== 1) throw conflict(ref.kind, ref.id);
  return ref.version + 1;
}

/**
 * updateVersioned that answers with the row as stored (RETURNING): the write and the read of what it wrote
 * in one round trip, for the callers that emit the fresh row as an event.
 */
export async function updateVersionedRow<T extends ObjectLiteral>(
  manager: EntityManager,
  entity: EntityTarget<T>,
  ref: { kind: string; id: string; version: number },
  changes: Partial<NoInfer<T>>,
): Promise<T> {
  const result = await versionedUpdate(manager, entity, ref, changes).returning('*').execute();
  const raw = (result.raw as Record<string, unknown>[] | undefined)?.[0];
  if (result.affected !== 1 || !raw) throw conflict(ref.kind, ref.id);
  // Hydrated as a find() hydrates: the driver's conversions (jsonb, int8, timestamps) and column transformers.
  const metadata = manager.connection.getMetadata(entity);
  const row = metadata.create() as T;
  for (const column of metadata.columns)
    column.setEntityValue(
      row,
      manager.connection.driver.prepareHydratedValue(raw[column.databaseName], column),
    );
  return row;
}

function versionedUpdate<T extends ObjectLiteral>(
  manager: EntityManager,
  entity: EntityTarget<T>,
  ref: { id: string; version: number },
  changes: Partial<T>,
) {
  return manager
    .createQueryBuilder()
    .update(entity)
    .set({ ...changes, version: () => 'version + 1' } as never)
    .where('id = :id AND version = :version', { id: ref.id, version: ref.version });
}
