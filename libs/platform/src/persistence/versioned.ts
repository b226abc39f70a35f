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
  const result = await manager
    .createQueryBuilder()
    .update(entity)
    .set({ ...changes, version: () => 'version + 1' } as never)
    .where('id = :id AND version = :version', { id: ref.id, version: ref.version })
    .execute();
  if (result.affected !== 1) throw conflict(ref.kind, ref.id);
  return ref.version + 1;
}
