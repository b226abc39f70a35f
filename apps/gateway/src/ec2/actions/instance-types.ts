import type { computeV1 } from '@flotilla/contracts';
import type { Ec2Action } from '../context';
import { Ec2Error } from '../errors';
import { compileFilters } from '../filters';
import { pageOf } from '../pagination';
import { filtersParam, listParam, pageParams } from '../params';
import { el, items, leaf, valueItems, Xml } from '../xml';

const typeFields: Record<string, (f: computeV1.Flavor) => string[]> = {
  'instance-type': (f) => [f.name],
  'vcpu-info.default-vcpus': (f) => [String(f.vcpus)],
  'vcpu-info.default-cores': (f) => [String(f.vcpus)],
  'memory-info.size-in-mib': (f) => [String(f.memoryMib)],
  'current-generation': () => ['true'],
  'processor-info.supported-architecture': () => ['x86_64'],
  'supported-virtualization-type': () => ['hvm'],
  'bare-metal': () => ['false'],
};

/** DescribeInstanceTypes: Flotilla flavors, shaped as AWS shapes instance types. */
export const describeInstanceTypes: Ec2Action = {
  role: 'read-only',
  mutating: false,
  async handle(ctx) {
    const names = listParam(ctx.params, 'InstanceType');
    const page = pageParams(ctx.params, { min: 5, max: 100 }, 'InstanceType');
    const matches = compileFilters<computeV1.Flavor>(
      filtersParam(ctx.params),
      (n) => Object.hasOwn(typeFields, n),
      (f, n) => typeFields[n](f),
    );
    const flavors = [...(await ctx.lookups.allFlavors())].sort((a, b) => (a.name < b.name ? -1 : 1));
    const unknown = names.filter((n) => !flavors.some((f) => f.name === n));
    if (unknown.length)
      throw new Ec2Error(
        'InvalidInstanceType',
        `The following supplied instance types do not exist: [${unknown.join(', ')}]`,
      );
    const selected = flavors.filter((f) => !names.length || names.includes(f.name)).filter(matches);
    const { items: shown, nextToken } = pageOf(selected, (f) => f.name, page);
    return [items('instanceTypeSet', shown.map(instanceTypeItem)), leaf('nextToken', nextToken)];
  },
};

export function instanceTypeItem(f: computeV1.Flavor): Xml[] {
  return [
    leaf('instanceType', f.name),
    leaf('currentGeneration', true),
    leaf('freeTierEligible', false),
    valueItems('supportedUsageClasses', ['on-demand']),
    valueItems('supportedRootDeviceTypes', ['ebs', 'instance-store']),
    valueItems('supportedVirtualizationTypes', ['hvm']),
    leaf('bareMetal', false),
    leaf('hypervisor', 'nitro'),
    el('processorInfo', valueItems('supportedArchitectures', ['x86_64'])),
    el(
      'vCpuInfo',
      leaf('defaultVCpus', f.vcpus),
      leaf('defaultCores', f.vcpus),
      leaf('defaultThreadsPerCore', 1),
    ),
    el('memoryInfo', leaf('sizeInMiB', f.memoryMib)),
    leaf('instanceStorageSupported', false),
    el(
      'networkInfo',
      leaf('networkPerformance', 'Up to 10 Gigabit'),
      leaf('maximumNetworkInterfaces', 8),
      leaf('maximumNetworkCards', 1),
      leaf('defaultNetworkCardIndex', 0),
      leaf('ipv4AddressesPerInterface', 1),
      leaf('ipv6AddressesPerInterface', 0),
      leaf('ipv6Supported', false),
      leaf('enaSupport', 'unsupported'),
      leaf('efaSupported', false),
    ),
    leaf('hibernationSupported', false),
    leaf('burstablePerformanceSupported', false),
    leaf('dedicatedHostsSupported', false),
    leaf('autoRecoverySupported', false),
    valueItems('supportedBootModes', ['legacy-bios']),
  ];
}
