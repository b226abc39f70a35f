import type { Ec2State } from './instance-state';
import { Generations } from '../compat/generations';
import { ec2Time, el, escapeXml, items, leaf, Xml, type XmlPart } from './xml';

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

/** Writes one reservation's item of a reservationSet: as text, or as UTF-8 kept from earlier (ReservationItems). */
export type ReservationWriter = (reservationId: string, ownerId: string, members: InstanceView[]) => XmlPart;

function reservationItem(reservationId: string, ownerId: string, members: InstanceView[]): string {
  return `<item>${reservationMembers(reservationId, ownerId, members)}</item>`;
}

/** Instances grouped into reservations in first-seen order. */
export function reservationSet(
  views: InstanceView[],
  ownerId: string,
  write: ReservationWriter = reservationItem,
): Xml {
  const groups = new Map<string, InstanceView[]>();
  for (const v of views) {
    const g = groups.get(v.reservationId);
    if (g) g.push(v);
    else groups.set(v.reservationId, [v]);
  }
  return el('reservationSet', new Xml([...groups].map(([id, members]) => write(id, ownerId, members))));
}

/** One reservation's members, as RunInstancesResponse carries them at its top level. */
export function reservationXml(reservationId: string, ownerId: string, members: InstanceView[]): Xml[] {
  return [new Xml(reservationMembers(reservationId, ownerId, members))];
}

/**
 * Whether two views write the same item, field by field (a listing compares a thousand: one expression, no
 * call per field). Every field of InstanceView must be here: the spec changes each one and expects a difference.
 */
export function sameView(a: InstanceView, b: InstanceView): boolean {
  return (
    a.instanceId === b.instanceId &&
    a.reservationId === b.reservationId &&
    a.imageId === b.imageId &&
    a.state.code === b.state.code &&
    a.state.name === b.state.name &&
    a.reason === b.reason &&
    a.keyName === b.keyName &&
    a.launchIndex === b.launchIndex &&
    a.instanceType === b.instanceType &&
    a.launchTime.getTime() === b.launchTime.getTime() &&
    a.zone === b.zone &&
    a.architecture === b.architecture &&
    a.rootDeviceType === b.rootDeviceType &&
    a.clientToken === b.clientToken &&
    a.vcpus === b.vcpus &&
    sameTags(a.tags, b.tags)
  );
}

function sameTags(a: InstanceView['tags'], b: InstanceView['tags']): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i].key !== b[i].key || a[i].value !== b[i].value) return false;
  return true;
}

/**
 * Reservations' items as UTF-8, kept by reservation id and written again only when their owner or one of the
 * instances listed in them changed. Pollers list the same, mostly unchanged instances over and over, and a
 * listing of a thousand cost the gateway ~9 ms writing and encoding their items. Bounded (Generations):
 * reservations not listed lately are forgotten.
 */
export class ReservationItems {
  private readonly kept: Generations<string, { ownerId: string; members: InstanceView[]; xml: Uint8Array }>;

  constructor(capacity = 20_000) {
    this.kept = new Generations(capacity);
  }

  readonly write: ReservationWriter = (reservationId, ownerId, members) => {
    const kept = this.kept.get(reservationId);
    if (
      kept &&
      kept.ownerId === ownerId &&
      kept.members.length === members.length &&
      kept.members.every((m, i) => sameView(m, members[i]))
    )
      return kept.xml;
    // Copies: the caller's views may be kept elsewhere (a paginated walk), and what is compared must not move.
    const copies = members.map((v) => ({ ...v, state: { ...v.state }, tags: v.tags.map((t) => ({ ...t })) }));
    const xml = Buffer.from(reservationItem(reservationId, ownerId, copies));
    this.kept.set(reservationId, { ownerId, members: copies, xml });
    return xml;
  };
}
