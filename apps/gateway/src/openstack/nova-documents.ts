import { createHash } from 'node:crypto';
import { computeV1, storageV1 } from '@flotilla/contracts';
import { wireDate } from '../compat/wire-date';
import { atLeast, Microversion } from './microversion';
import { defaultNetwork } from './neutron-documents';
import { glanceIdOf } from './pool-lists';

/** Where links point: `base` is the versioned compute URL the client used, `bookmark` the unversioned one. */
export interface LinkBase {
  base: string;
  bookmark: string;
}

export interface ServerFacts {
  vm: computeV1.Vm;
  /** The VM's flavor when it has one (embedded from 2.47). */
  flavor?: computeV1.Flavor;
  /** Glance id of the image the VM boots from; '' when it boots from none known. */
  imageId: string;
  /** Kind of the operation in flight ("vm.start"…), when there is one. */
  operationKind?: string;
  /** The VM's create failed (it never ran): its message. */
  failedCreate?: string;
}

export interface ServerContext extends LinkBase {
  version: Microversion;
  zone: string;
  userId: string;
}

/** Nova's power_state values (nova/compute/power_state.py). */
const powerStates: Record<string, number> = {
  POWER_STATE_RUNNING: 1,
  POWER_STATE_PAUSED: 3,
  POWER_STATE_HALTED: 4,
  POWER_STATE_SUSPENDED: 7,
};

/** The stable status, vm_state and power state of each Flotilla power state. */
const stable: Record<string, { status: string; vmState: string }> = {
  POWER_STATE_RUNNING: { status: 'ACTIVE', vmState: 'active' },
  POWER_STATE_HALTED: { status: 'SHUTOFF', vmState: 'stopped' },
  POWER_STATE_PAUSED: { status: 'PAUSED', vmState: 'paused' },
  POWER_STATE_SUSPENDED: { status: 'SUSPENDED', vmState: 'suspended' },
};

/** Nova's task_state of each operation kind in flight; status changes only where Nova's does. */
const tasks: Record<string, { taskState: string; status?: string; vmState?: string }> = {
  'vm.create': { taskState: 'spawning', status: 'BUILD', vmState: 'building' },
  'vm.start': { taskState: 'powering-on' },
  'vm.shutdown': { taskState: 'powering-off' },
  'vm.reboot': { taskState: 'rebooting', status: 'REBOOT' },
  'vm.pause': { taskState: 'pausing' },
  'vm.unpause': { taskState: 'unpausing' },
  'vm.suspend': { taskState: 'suspending' },
  'vm.resume': { taskState: 'resuming' },
  'vm.destroy': { taskState: 'deleting' },
  'vm.snapshot': { taskState: 'image_snapshot' },
  'vm.revert': { taskState: 'rebuilding' },
  'vm.migrate': { taskState: 'migrating', status: 'MIGRATING' },
};

export const serverStatuses = [
  'ACTIVE',
  'BUILD',
  'SHUTOFF',
  'REBOOT',
  'PAUSED',
  'SUSPENDED',
  'ERROR',
  'MIGRATING',
  'UNKNOWN',
];

export interface ServerState {
  status: string;
  vmState: string;
  taskState: string | null;
  powerState: number;
}

export function serverState(f: Pick<ServerFacts, 'vm' | 'operationKind' | 'failedCreate'>): ServerState {
  const powerState = powerStates[f.vm.powerState] ?? 0;
  if (f.failedCreate !== undefined && !f.operationKind)
    return { status: 'ERROR', vmState: 'error', taskState: null, powerState };
  const base = stable[f.vm.powerState] ?? { status: 'UNKNOWN', vmState: 'unknown' };
  const task = f.operationKind ? tasks[f.operationKind] : undefined;
  if (f.operationKind && !task) return { ...base, taskState: null, powerState };
  return {
    status: task?.status ?? base.status,
    vmState: task?.vmState ?? base.vmState,
    taskState: task?.taskState ?? null,
    powerState,
  };
}

/** Nova's times: seconds, UTC, "Z". */
export function novaTime(t: unknown): string | null {
  const d = wireDate(t);
  return d ? d.toISOString().replace(/\.\d{3}Z$/, 'Z') : null;
}

const links = (l: LinkBase, kind: string, id: string) => [
  { rel: 'self', href: `${l.base}/${kind}/${id}` },
  { rel: 'bookmark', href: `${l.bookmark}/${kind}/${id}` },
];

/** A server as GET /servers (without detail) lists it. */
export function serverSummary(vm: Pick<computeV1.Vm, 'id' | 'name'>, l: LinkBase) {
  return { id: vm.id, name: vm.name, links: links(l, 'servers', vm.id) };
}

/** The full server document at the negotiated microversion (GET /servers/{id}, /servers/detail). */
export function serverDocument(f: ServerFacts, c: ServerContext, o: { show?: boolean } = {}) {
  const { vm } = f;
  const state = serverState(f);
  const v = c.version;
  const created = novaTime(vm.createdAt);
  const doc: Record<string, unknown> = {
    id: vm.id,
    name: vm.name,
    status: state.status,
    tenant_id: vm.tenantId,
    user_id: c.userId,
    metadata: { ...vm.labels },
    hostId: vm.hostId
      ? createHash('sha224')
          .update(vm.tenantId + vm.hostId)
          .digest('hex')
      : '',
    image: f.imageId
      ? { id: f.imageId, links: [{ rel: 'bookmark', href: `${c.bookmark}/images/${f.imageId}` }] }
      : '',
    flavor: flavorOfServer(f, c),
    created,
    updated: novaTime(vm.updatedAt),
    // A VM whose create failed never had a NIC up.
    addresses: state.status === 'ERROR' ? {} : addresses(vm),
    accessIPv4: '',
    accessIPv6: '',
    links: links(c, 'servers', vm.id),
    key_name: null,
    progress: state.status === 'BUILD' ? 0 : state.status === 'ACTIVE' ? 100 : 0,
    config_drive: '',
    'OS-DCF:diskConfig': 'MANUAL',
    'OS-EXT-AZ:availability_zone': c.zone,
    'OS-EXT-STS:power_state': state.powerState,
    'OS-EXT-STS:task_state': state.taskState,
    'OS-EXT-STS:vm_state': state.vmState,
    'OS-SRV-USG:launched_at': state.status === 'BUILD' || state.status === 'ERROR' ? null : launchedAt(vm),
    'OS-SRV-USG:terminated_at': null,
    security_groups: [{ name: 'default' }],
    'os-extended-volumes:volumes_attached': [],
  };
  if (state.status === 'ERROR')
    doc.fault = { code: 500, created: novaTime(vm.updatedAt), message: f.failedCreate ?? 'create failed' };
  if (atLeast(v, 9)) doc.locked = false;
  if (atLeast(v, 19)) doc.description = null;
  if (atLeast(v, 26)) doc.tags = [];
  if (atLeast(v, 63)) doc.trusted_image_certificates = null;
  if (atLeast(v, 71) && o.show) doc.server_groups = [];
  if (atLeast(v, 73)) doc.locked_reason = null;
  if (atLeast(v, 96)) doc.pinned_availability_zone = null;
  return doc;
}

/** Nova has no launch record here: the VM's creation time stands in, with Nova's microsecond format. */
function launchedAt(vm: computeV1.Vm): string | null {
  const t = novaTime(vm.createdAt);
  return t ? t.replace(/Z$/, '.000000') : null;
}

function flavorOfServer(f: ServerFacts, c: ServerContext) {
  const { vm } = f;
  if (atLeast(c.version, 47))
    return {
      vcpus: vm.vcpus,
      ram: Number(vm.memoryMib),
      disk: Number(vm.rootDiskGib),
      ephemeral: 0,
      swap: 0,
      original_name: f.flavor?.name ?? 'custom',
      extra_specs: {},
    };
  return {
    id: vm.flavorId,
    links: [{ rel: 'bookmark', href: `${c.bookmark}/flavors/${vm.flavorId}` }],
  };
}

/**
 * Every NIC uses QEMU's user-mode networking until the network service exists: the guest's DHCP address
 * there is 10.0.2.15 on each NIC (reachable from nowhere but the guest), on the one network "default".
 */
export function addresses(vm: Pick<computeV1.Vm, 'nics'>) {
  const nics = vm.nics ?? [];
  if (nics.length === 0) return {};
  return {
    [defaultNetwork.name]: nics.map((n) => ({
      version: 4,
      addr: '10.0.2.15',
      'OS-EXT-IPS:type': 'fixed',
      'OS-EXT-IPS-MAC:mac_addr': n.mac,
    })),
  };
}

/** A flavor at the negotiated microversion; `detail` adds the sizes (GET /flavors/detail, /flavors/{id}). */
export function flavorDocument(
  fl: computeV1.Flavor,
  c: LinkBase & { version: Microversion },
  detail: boolean,
) {
  const doc: Record<string, unknown> = { id: fl.id, name: fl.name, links: links(c, 'flavors', fl.id) };
  if (atLeast(c.version, 55)) doc.description = null;
  if (!detail) return doc;
  Object.assign(doc, {
    ram: Number(fl.memoryMib),
    vcpus: fl.vcpus,
    disk: Number(fl.rootDiskGib),
    'OS-FLV-EXT-DATA:ephemeral': 0,
    'OS-FLV-DISABLED:disabled': false,
    swap: atLeast(c.version, 75) ? 0 : '',
    rxtx_factor: 1.0,
    'os-flavor-access:is_public': true,
  });
  if (atLeast(c.version, 61)) doc.extra_specs = {};
  return doc;
}

const novaImageStatuses: Record<string, string> = {
  IMAGE_STATE_AVAILABLE: 'ACTIVE',
  IMAGE_STATE_REGISTERING: 'SAVING',
  IMAGE_STATE_UNAVAILABLE: 'ERROR',
};

/** A catalogue image as the 2.1 image proxy (GET /images/detail, gone at 2.36) shows it. */
export function novaImageDocument(i: storageV1.Image, l: LinkBase, detail: boolean) {
  const id = glanceIdOf(i);
  const summary = { id, name: i.name, links: links(l, 'images', id) };
  if (!detail) return summary;
  const registering = i.state === storageV1.ImageState.IMAGE_STATE_REGISTERING;
  return {
    ...summary,
    status: novaImageStatuses[i.state] ?? 'ERROR',
    progress: registering ? 50 : 100,
    minDisk: Math.ceil(Number(i.minDiskBytes) / 2 ** 30),
    minRam: Number(i.minMemoryMib),
    created: novaTime(i.createdAt),
    updated: novaTime(i.updatedAt),
    metadata: {},
    'OS-EXT-IMG-SIZE:size': Number(i.sizeBytes),
  };
}
