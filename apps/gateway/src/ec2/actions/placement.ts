import type { Ec2Action } from '../context';
import { Ec2Error } from '../errors';
import { compileFilters } from '../filters';
import { filtersParam, listParam } from '../params';
import { items, leaf, valueItems } from '../xml';

/** DescribeRegions: the one region this installation serves (no pagination, as on EC2). */
export const describeRegions: Ec2Action = {
  role: 'read-only',
  mutating: false,
  async handle(ctx) {
    const { region, endpointUrl } = ctx.site;
    const names = listParam(ctx.params, 'RegionName');
    const unknown = names.find((n) => n !== region);
    if (unknown)
      throw new Ec2Error(
        'InvalidParameterValue',
        `Invalid region: ${unknown.slice(0, 100)} (this cloud serves ${region})`,
      );
    const fields: Record<string, string[]> = {
      'region-name': [region],
      endpoint: [endpointUrl],
      'opt-in-status': ['opt-in-not-required'],
    };
    const matches = compileFilters<null>(
      filtersParam(ctx.params),
      (n) => Object.hasOwn(fields, n),
      (_, n) => fields[n],
    );
    const shown = matches(null) ? [region] : [];
    return [
      items(
        'regionInfo',
        shown.map((name) => [
          leaf('regionName', name),
          leaf('regionEndpoint', endpointUrl),
          leaf('optInStatus', 'opt-in-not-required'),
        ]),
      ),
    ];
  },
};

/** DescribeAvailabilityZones: the pool is the one zone of the region. */
export const describeAvailabilityZones: Ec2Action = {
  role: 'read-only',
  mutating: false,
  async handle(ctx) {
    const { region, zone } = ctx.site;
    const zoneId = `${region.toLowerCase()}-${zone.toLowerCase()}`;
    const names = listParam(ctx.params, 'ZoneName');
    const ids = listParam(ctx.params, 'ZoneId');
    const unknown = names.find((n) => n !== zone) ?? ids.find((id) => id !== zoneId);
    if (unknown)
      throw new Ec2Error(
        'InvalidParameterValue',
        `The zone '${unknown.slice(0, 100)}' does not exist in region ${region} (its zone is ${zone})`,
      );
    const fields: Record<string, string[]> = {
      'zone-name': [zone],
      'zone-id': [zoneId],
      'region-name': [region],
      state: ['available'],
      'zone-type': ['availability-zone'],
      'group-name': [region],
      'opt-in-status': ['opt-in-not-required'],
      'network-border-group': [region],
    };
    const matches = compileFilters<null>(
      filtersParam(ctx.params),
      (n) => Object.hasOwn(fields, n),
      (_, n) => fields[n],
    );
    const shown = matches(null) ? [zone] : [];
    return [
      items(
        'availabilityZoneInfo',
        shown.map((name) => [
          leaf('zoneName', name),
          leaf('zoneState', 'available'),
          leaf('regionName', region),
          leaf('zoneId', zoneId),
          valueItems('messageSet', []),
          leaf('optInStatus', 'opt-in-not-required'),
          leaf('groupName', region),
          leaf('networkBorderGroup', region),
          leaf('zoneType', 'availability-zone'),
        ]),
      ),
    ];
  },
};

/** DescribeAddresses: Flotilla has no elastic IPs yet, so the set is empty and named ones do not exist. */
export const describeAddresses: Ec2Action = {
  role: 'read-only',
  mutating: false,
  async handle(ctx) {
    const ip = listParam(ctx.params, 'PublicIp')[0];
    if (ip) throw new Ec2Error('InvalidAddress.NotFound', `Address '${ip.slice(0, 100)}' not found.`);
    const allocation = listParam(ctx.params, 'AllocationId')[0];
    if (allocation)
      throw new Ec2Error(
        'InvalidAllocationID.NotFound',
        `The allocation ID '${allocation.slice(0, 100)}' does not exist`,
      );
    filtersParam(ctx.params);
    return [items('addressesSet', [])];
  },
};

/** DescribeSecurityGroups: none exist until Flotilla's network service provides them. */
export const describeSecurityGroups: Ec2Action = {
  role: 'read-only',
  mutating: false,
  async handle(ctx) {
    const named = [...listParam(ctx.params, 'GroupId'), ...listParam(ctx.params, 'GroupName')][0];
    if (named)
      throw new Ec2Error(
        'InvalidGroup.NotFound',
        `The security group '${named.slice(0, 100)}' does not exist`,
      );
    filtersParam(ctx.params);
    return [items('securityGroupInfo', [])];
  },
};
