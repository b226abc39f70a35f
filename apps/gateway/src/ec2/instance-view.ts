import type { Ec2State } from './instance-state';
import { ec2Time, el, items, leaf, Xml } from './xml';

/** One instance as DescribeInstances and RunInstances show it. */
export interface InstanceView {
  instanceId: string;
  reservationId: string;
  imageId: string | undefined;
  state: Ec2State;
  /** Why the instance is in its state when that was not requested (compute's power_state_reason). */
  reason: string;
  keyName: string | undefined;
  launchIndex: number;
  instanceType: string;
  launchTime: Date;
  zone: string;
  architecture: string;
  rootDeviceType: 'ebs' | 'instance-store';
  clientToken: string;
  vcpus: number;
  tags: Array<{ key: string; value: string }>;
}

/**
 * An instance item in the element order AWS writes (interop.md §2.4 "Recommended"). Flotilla has no VPCs,
 * subnets, elastic IPs or security groups yet, so those members are absent or empty; the metadata service
 * does not exist either (httpEndpoint disabled). hypervisor is "xen" as AWS reports for its KVM-based
 * (Nitro) instances too: the enum knows no other value.
 */
export function instanceItem(v: InstanceView): Xml[] {
  return [
    leaf('instanceId', v.instanceId),
    leaf('imageId', v.imageId),
    stateXml('instanceState', v.state),
    leaf('privateDnsName', ''),
    leaf('dnsName', ''),
    leaf('reason', v.reason),
    leaf('keyName', v.keyName),
    leaf('amiLaunchIndex', v.launchIndex),
    el('productCodes'),
    leaf('instanceType', v.instanceType),
    leaf('launchTime', ec2Time(v.launchTime)),
    el('placement', leaf('availabilityZone', v.zone), leaf('groupName', ''), leaf('tenancy', 'default')),
    el('monitoring', leaf('state', 'disabled')),
    el('groupSet'),
    leaf('architecture', v.architecture),
    leaf('rootDeviceType', v.rootDeviceType),
    leaf('rootDeviceName', '/dev/vda'),
    el('blockDeviceMapping'),
    leaf('virtualizationType', 'hvm'),
    leaf('clientToken', v.clientToken),
    v.tags.length ? tagSet(v.tags) : undefined,
    leaf('hypervisor', 'xen'),
    el('networkInterfaceSet'),
    leaf('ebsOptimized', false),
    leaf('enaSupport', false),
    el('cpuOptions', leaf('coreCount', v.vcpus), leaf('threadsPerCore', 1)),
    el(
      'metadataOptions',
      leaf('state', 'applied'),
      leaf('httpTokens', 'optional'),
      leaf('httpPutResponseHopLimit', 1),
      leaf('httpEndpoint', 'disabled'),
    ),
  ].filter((x): x is Xml => x !== undefined);
}

export function stateXml(name: string, state: Ec2State): Xml {
  return el(name, leaf('code', state.code), leaf('name', state.name));
}

export function tagSet(tags: ReadonlyArray<{ key: string; value: string }>): Xml {
  return items(
    'tagSet',
    tags.map((t) => [leaf('key', t.key), leaf('value', t.value)]),
  );
}

/** Instances grouped into reservations in first-seen order (reservationId, ownerId, groupSet, instancesSet). */
export function reservationSet(views: InstanceView[], ownerId: string): Xml {
  const groups = new Map<string, InstanceView[]>();
  for (const v of views) {
    const g = groups.get(v.reservationId);
    if (g) g.push(v);
    else groups.set(v.reservationId, [v]);
  }
  return items(
    'reservationSet',
    [...groups].map(([reservationId, members]) => reservationXml(reservationId, ownerId, members)),
  );
}

export function reservationXml(reservationId: string, ownerId: string, members: InstanceView[]): Xml[] {
  return [
    leaf('reservationId', reservationId),
    leaf('ownerId', ownerId),
    el('groupSet'),
    items(
      'instancesSet',
      members.map((m) => instanceItem(m)),
    ),
  ];
}
