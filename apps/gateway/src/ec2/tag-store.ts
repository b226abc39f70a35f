import { DataSource, In } from 'typeorm';
import { Ec2Error } from './errors';
import { Ec2TagRow } from './persistence';

export interface ResourceTag {
  resourceId: string;
  key: string;
  value: string;
}

/** EC2's limits on tags (keys ≤ 128, values ≤ 256 characters, "aws:" reserved, 50 per resource). */
export const maxTagsPerResource = 50;

export function checkTag(param: string, key: string, value: string): void {
  if (!key.length || key.length > 128)
    throw new Ec2Error('InvalidParameterValue', `Tag key ${param}.Key must be 1 to 128 characters long`);
  if (/^aws:/i.test(key))
    throw new Ec2Error('InvalidParameterValue', `Tag keys starting with 'aws:' are reserved (${param}.Key)`);
  if (value.length > 256)
    throw new Ec2Error(
      'InvalidParameterValue',
      `Tag value ${param}.Value must be at most 256 characters long`,
    );
}

/** Tags of a tenant's EC2 resources (instances and images), in the gateway's database. */
export class TagStore {
  constructor(private readonly dataSource: DataSource) {}

  async tagsOf(tenantId: string, resourceIds?: string[]): Promise<Map<string, ResourceTag[]>> {
    const rows = await this.dataSource.manager.find(Ec2TagRow, {
      where: resourceIds ? { tenantId, resourceId: In(resourceIds) } : { tenantId },
      order: { resourceId: 'ASC', key: 'ASC' },
    });
    const out = new Map<string, ResourceTag[]>();
    for (const r of rows) {
      const list = out.get(r.resourceId) ?? [];
      list.push({ resourceId: r.resourceId, key: r.key, value: r.value });
      out.set(r.resourceId, list);
    }
    return out;
  }

  /** Sets tags (overwriting values of existing keys); refuses past the per-resource limit. */
  async put(
    tenantId: string,
    resourceIds: string[],
    tags: Array<{ key: string; value: string }>,
  ): Promise<void> {
    await this.dataSource.transaction(async (m) => {
      for (const resourceId of resourceIds) {
        await m.upsert(
          Ec2TagRow,
          tags.map((t) => ({ tenantId, resourceId, key: t.key, value: t.value })),
          ['tenantId', 'resourceId', 'key'],
        );
        if ((await m.countBy(Ec2TagRow, { tenantId, resourceId })) > maxTagsPerResource)
          throw new Ec2Error(
            'TagLimitExceeded',
            `The maximum number of tags (${maxTagsPerResource}) for resource ${resourceId} would be exceeded`,
          );
      }
    });
  }

  /** Deletes the named tags (only where the value matches, when one is given), or all tags when none are named. */
  async remove(
    tenantId: string,
    resourceIds: string[],
    tags: Array<{ key: string; value: string | undefined }>,
  ): Promise<void> {
    await this.dataSource.transaction(async (m) => {
      if (!tags.length) {
        await m.delete(Ec2TagRow, { tenantId, resourceId: In(resourceIds) });
        return;
      }
      for (const t of tags)
        await m.delete(Ec2TagRow, {
          tenantId,
          resourceId: In(resourceIds),
          key: t.key,
          ...(t.value !== undefined ? { value: t.value } : {}),
        });
    });
  }
}
