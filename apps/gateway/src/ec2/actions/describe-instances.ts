import type { Ec2Action } from '../context';
import { compileFilters, isTagFilter, tagFilterValues } from '../filters';
import { accountIdOf, checkInstanceIds } from '../ids';
import { allInstances, Instance, namedInstances } from '../instance-directory';
import { reservationSet } from '../instance-view';
import { decodeToken, pageOf } from '../pagination';
import { filtersParam, listParam, pageParams } from '../params';
import { leaf } from '../xml';

const fields: Record<string, (i: Instance) => string[]> = {
  'instance-id': (i) => [i.view.instanceId],
  'instance-state-name': (i) => [i.view.state.name],
  'instance-state-code': (i) => [String(i.view.state.code)],
  'instance-type': (i) => [i.view.instanceType],
  'image-id': (i) => (i.view.imageId ? [i.view.imageId] : []),
  'availability-zone': (i) => [i.view.zone],
  'key-name': (i) => (i.view.keyName ? [i.view.keyName] : []),
  'reservation-id': (i) => [i.view.reservationId],
  'launch-index': (i) => [String(i.view.launchIndex)],
  'client-token': (i) => (i.view.clientToken ? [i.view.clientToken] : []),
  architecture: (i) => [i.view.architecture],
};

/** Filter names DescribeInstances understands; any other is InvalidParameterValue, as on EC2. */
export const instanceFilterNames = [...Object.keys(fields), 'tag:<key>', 'tag-key', 'tag-value'];

export const describeInstances: Ec2Action = {
  role: 'read-only',
  mutating: false,
  async handle(ctx) {
    const ids = listParam(ctx.params, 'InstanceId');
    checkInstanceIds(ids);
    const page = pageParams(ctx.params, { min: 5, max: 1000 }, 'InstanceId');
    const filters = filtersParam(ctx.params);
    const matches = compileFilters<Instance>(
      filters,
      (name) => Object.hasOwn(fields, name) || isTagFilter(name),
      (i, name) =>
        (Object.hasOwn(fields, name) ? fields[name](i) : undefined) ?? tagFilterValues(i.view.tags, name),
    );
    // A walk's next pages come from the listing its first page was cut from (PageWalks); InstanceId and
    // MaxResults do not go together, so a walk is the tenant's instances under these filters.
    const walks = ctx.site.instanceWalks;
    const scope = `${ctx.principal.tenantId}\u0000${JSON.stringify(filters)}`;
    const walk = page.nextToken ? decodeToken(page.nextToken).walk : undefined;
    const kept = walk ? walks.find(walk, scope) : undefined;
    const listed =
      kept ??
      (ids.length ? await namedInstances(ctx, ids) : await allInstances(ctx))
        .filter(matches)
        .map((i) => i.view);
    const { items, nextToken } = pageOf(
      listed,
      (v) => v.instanceId,
      page,
      () => (kept ? walk : walks.keep(scope, listed)),
    );
    return [
      reservationSet(items, accountIdOf(ctx.principal.tenantId), ctx.site.reservationItems.write),
      leaf('nextToken', nextToken),
    ];
  },
};
