import type { Ec2Action, Ec2Context } from '../context';
import { Ec2Error } from '../errors';
import { compileFilters } from '../filters';
import { amiIdOf, isAmiId, isInstanceId } from '../ids';
import { allInstances } from '../instance-directory';
import { pageOf } from '../pagination';
import { filtersParam, listParam, missing, pageParams, tagsParam } from '../params';
import { checkTag, ResourceTag, TagStore } from '../tag-store';
import { items, leaf } from '../xml';

/** EC2 resource type of an id Flotilla can tag. */
function resourceTypeOf(id: string): 'instance' | 'image' {
  return id.startsWith('ami-') ? 'image' : 'instance';
}

/** The ResourceId.N of Create/DeleteTags: well formed, and each an instance or image the tenant sees. */
async function taggableResources(ctx: Ec2Context): Promise<string[]> {
  const ids = [...new Set(listParam(ctx.params, 'ResourceId'))];
  if (!ids.length) throw missing('ResourceId');
  const bad = ids.find((id) => !isInstanceId(id) && !isAmiId(id));
  if (bad)
    throw new Ec2Error(
      'InvalidID',
      `The ID '${bad.slice(0, 100)}' is not valid: Flotilla tags instances (i-…) and images (ami-…)`,
    );
  const instanceIds = ids.filter(isInstanceId);
  if (instanceIds.length) {
    const known = new Set((await allInstances(ctx)).map((i) => i.view.instanceId));
    const unknown = instanceIds.filter((id) => !known.has(id));
    if (unknown.length)
      throw new Ec2Error(
        'InvalidInstanceID.NotFound',
        `The instance ID '${unknown.join(', ')}' does not exist`,
      );
  }
  const amiIds = ids.filter(isAmiId);
  if (amiIds.length) {
    const known = new Set((await ctx.lookups.allImages()).map((i) => amiIdOf(i.id)));
    const unknown = amiIds.filter((id) => !known.has(id));
    if (unknown.length)
      throw new Ec2Error('InvalidAMIID.NotFound', `The image id '[${unknown.join(', ')}]' does not exist`);
  }
  return ids;
}

export const createTags: Ec2Action = {
  role: 'vm-admin',
  mutating: true,
  async handle(ctx) {
    const tags = tagsParam(ctx.params).map((t, i) => {
      checkTag(`Tag.${i + 1}`, t.key, t.value ?? '');
      return { key: t.key, value: t.value ?? '' };
    });
    if (!tags.length) throw missing('Tag');
    const ids = await taggableResources(ctx);
    await new TagStore(ctx.site.dataSource).put(ctx.principal.tenantId, ids, tags);
    return [leaf('return', true)];
  },
};

export const deleteTags: Ec2Action = {
  role: 'vm-admin',
  mutating: true,
  async handle(ctx) {
    const tags = tagsParam(ctx.params);
    const ids = await taggableResources(ctx);
    await new TagStore(ctx.site.dataSource).remove(ctx.principal.tenantId, ids, tags);
    return [leaf('return', true)];
  },
};

const tagFields: Record<string, (t: ResourceTag) => string[]> = {
  'resource-id': (t) => [t.resourceId],
  'resource-type': (t) => [resourceTypeOf(t.resourceId)],
  key: (t) => [t.key],
  value: (t) => [t.value],
};

export const describeTags: Ec2Action = {
  role: 'read-only',
  mutating: false,
  async handle(ctx) {
    const page = pageParams(ctx.params, { min: 5, max: 1000 });
    const matches = compileFilters<ResourceTag>(
      filtersParam(ctx.params),
      (name) => Object.hasOwn(tagFields, name),
      (t, name) => tagFields[name](t),
    );
    // Tags of instances terminated more than an hour ago are not shown: neither are their instances.
    const visible = new Set((await allInstances(ctx)).map((i) => i.view.instanceId));
    const all = [...(await new TagStore(ctx.site.dataSource).tagsOf(ctx.principal.tenantId)).values()]
      .flat()
      .filter((t) => !isInstanceId(t.resourceId) || visible.has(t.resourceId))
      .filter(matches);
    const { items: shown, nextToken } = pageOf(all, (t) => `${t.resourceId}\u0000${t.key}`, page);
    return [
      items(
        'tagSet',
        shown.map((t) => [
          leaf('resourceId', t.resourceId),
          leaf('resourceType', resourceTypeOf(t.resourceId)),
          leaf('key', t.key),
          leaf('value', t.value),
        ]),
      ),
      leaf('nextToken', nextToken),
    ];
  },
};
