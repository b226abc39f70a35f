import type { Ec2Action } from '../context';
import { compileFilters, isTagFilter, tagFilterValues } from '../filters';
import { accountIdOf, checkInstanceIds } from '../ids';
import { allInstances, Instance, namedInstances } from '../instance-directory';
import { reservationSet } from '../instance-view';
import { pageOf } from '../pagination';
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
    const matches = compileFilters<Instance>(
      filtersParam(ctx.params),
      (name) => Object.hasOwn(fields, name) || isTagFilter(name),
      (i, name) =>
        (Object.hasOwn(fields, name) ? fields[name](i) : undefined) ?? tagFilterValues(i.view.tags, name),
    );
    const candidates = ids.length ? await namedInstances(ctx, ids) : await allInstances(ctx);
    const { items, nextToken } = pageOf(candidates.filter(matches), (i) => i.view.instanceId, page);
    return [
      reservationSet(
        items.map((i) => i.view),
        accountIdOf(ctx.principal.tenantId),
      ),
      leaf('nextToken', nextToken),
    ];
  },
};
