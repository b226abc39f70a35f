import type { Ec2State } from './instance-state';
import { ec2Time, el, escapeXml, items, leaf, Xml } from './xml';

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
export function instanceItem(v: InstanceView): Xml {
  // One template per item: DescribeInstances writes a thousand of these per page. Every value from data goes
  // through text() (escaped); the rest is fixed markup.
  return new Xml(
    '<item>' +
      text('instanceId', v.instanceId) +
      (v.imageId === undefined ? '' : text('imageId', v.imageId)) +
      stateXml('instanceState', v.state).raw +
      '<privateDnsName/><dnsName/>' +
      text('reason', v.reason) +
      (v.keyName === undefined ? '' : text('keyName', v.keyName)) +
      `<amiLaunchIndex>${v.launchIndex}</amiLaunchIndex><productCodes/>` +
      text('instanceType', v.instanceType) +
      `<launchTime>${ec2Time(v.launchTime)}</launchTime><placement>` +
      text('availabilityZone', v.zone) +
      '<groupName/><tenancy>default</tenancy></placement><monitoring><state>disabled</state></monitoring><groupSet/>' +
      text('architecture', v.architecture) +
      text('rootDeviceType', v.rootDeviceType) +
      '<rootDeviceName>/dev/vda</rootDeviceName><blockDeviceMapping/><virtualizationType>hvm</virtualizationType>' +
      text('clientToken', v.clientToken) +
      (v.tags.length ? tagSet(v.tags).raw : '') +
      '<hypervisor>xen</hypervisor><networkInterfaceSet/><ebsOptimized>false</ebsOptimized><enaSupport>false</enaSupport>' +
      `<cpuOptions><coreCount>${v.vcpus}</coreCount><threadsPerCore>1</threadsPerCore></cpuOptions>` +
      '<metadataOptions><state>applied</state><httpTokens>optional</httpTokens><httpPutResponseHopLimit>1</httpPutResponseHopLimit><httpEndpoint>disabled</httpEndpoint></metadataOptions>' +
      '</item>',
  );
}

/** <name>escaped</name>, or <name/> when empty: what leaf() writes, as a plain string. */
function text(name: string, value: string): string {
  return value ? `<${name}>${escapeXml(value)}</${name}>` : `<${name}/>`;
}

// Per element name (instanceState, currentState, previousState) and state code: a handful, each written once.
const stateXmls = new Map<string, Map<number, Xml>>();

/** <name><code/><name/></name>. A state's code and name go together (ec2State), so the code is the key. */
export function stateXml(name: string, state: Ec2State): Xml {
  let byCode = stateXmls.get(name);
  if (!byCode) stateXmls.set(name, (byCode = new Map()));
  let xml = byCode.get(state.code);
  if (!xml) byCode.set(state.code, (xml = el(name, leaf('code', state.code), leaf('name', state.name))));
  return xml;
}

export function tagSet(tags: ReadonlyArray<{ key: string; value: string }>): Xml {
  return items(
    'tagSet',
    tags.map((t) => [leaf('key', t.key), leaf('value', t.value)]),
  );
}

/** The instances' items as one string; no join for the usual one (a join copies each into a flat string). */
function instanceItems(members: InstanceView[]): string {
  let out = '';
  for (const m of members) out += instanceItem(m).raw;
  return out;
}

/**
 * A reservation's members (reservationId, ownerId, groupSet, instancesSet) as one template: a listing writes up
 * to a thousand reservations, and the generic builders would cost as much again as the instances' own items.
 */
function reservationMembers(reservationId: string, ownerId: string, members: InstanceView[]): string {
  const instances = members.length
    ? `<instancesSet>${instanceItems(members)}</instancesSet>`
    : '<instancesSet/>';
  return `${text('reservationId', reservationId)}${text('ownerId', ownerId)}<groupSet/>${instances}`;
}

/** Instances grouped into reservations in first-seen order. */
export function reservationSet(views: InstanceView[], ownerId: string): Xml {
  const groups = new Map<string, InstanceView[]>();
  for (const v of views) {
    const g = groups.get(v.reservationId);
    if (g) g.push(v);
    else groups.set(v.reservationId, [v]);
  }
  return el(
    'reservationSet',
    ...[...groups].map(
      ([reservationId, members]) =>
        new Xml(`<item>${reservationMembers(reservationId, ownerId, members)}</item>`),
    ),
  );
}

/** One reservation's members, as RunInstancesResponse carries them at its top level. */
export function reservationXml(reservationId: string, ownerId: string, members: InstanceView[]): Xml[] {
  return [new Xml(reservationMembers(reservationId, ownerId, members))];
}
