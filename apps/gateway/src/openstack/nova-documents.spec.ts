import { computeV1 } from '@flotilla/contracts';
import { flavorDocument, serverDocument, ServerFacts, serverState } from './nova-documents';

// Pure: server and flavor documents per microversion, and Nova status from Flotilla state.

const { PowerState: P } = computeV1;
const v = (minor: number) => ({ major: 2, minor });
const links = { base: 'http://h/compute/v2.1', bookmark: 'http://h/compute' };
const vm = (over: Partial<computeV1.Vm> = {}): computeV1.Vm =>
  ({
    id: '6d2b1f7e-9a0c-4c5e-8a11-000000000001',
    name: 'web-1',
    tenantId: 't1',
    labels: { tier: 'web' },
    createdAt: new Date('2026-01-01T00:00:00.123Z'),
    updatedAt: new Date('2026-01-01T00:01:00Z'),
    powerState: P.POWER_STATE_RUNNING,
    flavorId: 'f1',
    vcpus: 1,
    memoryMib: 256,
    rootDiskGib: 1,
    hostId: 'h1',
    nics: [{ mac: '52:54:00:00:00:01', forwards: [] }],
    allowedOperations: [],
    currentOperationId: '',
    ...over,
  }) as computeV1.Vm;
const facts = (over: Partial<ServerFacts> = {}): ServerFacts => ({
  vm: vm(),
  imageId: 'img-1',
  flavor: { id: 'f1', name: 'm1.tiny' } as computeV1.Flavor,
  ...over,
});
const context = (minor: number) => ({ ...links, version: v(minor), zone: 'dc1', userId: 'u1' });

describe('Nova server status', () => {
  it.each<[string, Partial<ServerFacts>, string, string, string | null, number]>([
    ['a running VM', {}, 'ACTIVE', 'active', null, 1],
    ['a halted VM', { vm: vm({ powerState: P.POWER_STATE_HALTED }) }, 'SHUTOFF', 'stopped', null, 4],
    ['a paused VM', { vm: vm({ powerState: P.POWER_STATE_PAUSED }) }, 'PAUSED', 'paused', null, 3],
    [
      'a suspended VM',
      { vm: vm({ powerState: P.POWER_STATE_SUSPENDED }) },
      'SUSPENDED',
      'suspended',
      null,
      7,
    ],
    [
      'a VM being created',
      { vm: vm({ powerState: P.POWER_STATE_HALTED }), operationKind: 'vm.create' },
      'BUILD',
      'building',
      'spawning',
      4,
    ],
    [
      'a VM being started',
      { vm: vm({ powerState: P.POWER_STATE_HALTED }), operationKind: 'vm.start' },
      'SHUTOFF',
      'stopped',
      'powering-on',
      4,
    ],
    ['a VM being stopped', { operationKind: 'vm.shutdown' }, 'ACTIVE', 'active', 'powering-off', 1],
    ['a VM rebooting', { operationKind: 'vm.reboot' }, 'REBOOT', 'active', 'rebooting', 1],
    [
      'a VM whose create failed',
      { vm: vm({ powerState: P.POWER_STATE_HALTED }), failedCreate: 'no host' },
      'ERROR',
      'error',
      null,
      4,
    ],
    [
      'a VM whose host stopped reporting',
      { vm: vm({ powerState: P.POWER_STATE_UNKNOWN }) },
      'UNKNOWN',
      'unknown',
      null,
      0,
    ],
  ])('shows %s as %s', (_what, over, status, vmState, taskState, powerState) => {
    expect(serverState(facts(over))).toEqual({ status, vmState, taskState, powerState });
  });
});

describe('Nova server documents', () => {
  it('has the 2.1 fields with links from the base, an image and a flavor reference, and user-mode addresses', () => {
    const doc = serverDocument(facts(), context(1));
    expect(doc).toMatchObject({
      id: vm().id,
      status: 'ACTIVE',
      tenant_id: 't1',
      user_id: 'u1',
      metadata: { tier: 'web' },
      created: '2026-01-01T00:00:00Z',
      image: { id: 'img-1', links: [{ rel: 'bookmark', href: 'http://h/compute/images/img-1' }] },
      flavor: { id: 'f1', links: [{ rel: 'bookmark', href: 'http://h/compute/flavors/f1' }] },
      addresses: {
        default: [{ version: 4, addr: '10.0.2.15', 'OS-EXT-IPS-MAC:mac_addr': '52:54:00:00:00:01' }],
      },
      links: [
        { rel: 'self', href: `http://h/compute/v2.1/servers/${vm().id}` },
        { rel: 'bookmark', href: `http://h/compute/servers/${vm().id}` },
      ],
      'OS-EXT-AZ:availability_zone': 'dc1',
      'OS-EXT-STS:power_state': 1,
      'OS-DCF:diskConfig': 'MANUAL',
    });
    expect(doc.hostId).toMatch(/^[0-9a-f]{56}$/);
    for (const later of ['locked', 'description', 'tags', 'locked_reason', 'pinned_availability_zone'])
      expect(doc).not.toHaveProperty(later);
  });

  it.each<[number, string[], string[]]>([
    [9, ['locked'], ['description']],
    [19, ['locked', 'description'], ['tags']],
    [26, ['tags'], ['trusted_image_certificates']],
    [73, ['locked_reason'], ['pinned_availability_zone']],
    [96, ['pinned_availability_zone'], []],
  ])('adds the fields of 2.%i', (minor, present, absent) => {
    const doc = serverDocument(facts(), context(minor));
    for (const k of present) expect(doc).toHaveProperty(k);
    for (const k of absent) expect(doc).not.toHaveProperty(k);
  });

  it('embeds the flavor from 2.47', () => {
    expect(serverDocument(facts(), context(47)).flavor).toEqual({
      vcpus: 1,
      ram: 256,
      disk: 1,
      ephemeral: 0,
      swap: 0,
      original_name: 'm1.tiny',
      extra_specs: {},
    });
  });

  it('lists server groups only when showing one server, from 2.71', () => {
    expect(serverDocument(facts(), context(71), { show: true })).toHaveProperty('server_groups', []);
    expect(serverDocument(facts(), context(71))).not.toHaveProperty('server_groups');
  });

  it('shows a failed create with its fault and no addresses', () => {
    const doc = serverDocument(
      facts({ vm: vm({ powerState: P.POWER_STATE_HALTED }), failedCreate: 'no host fits' }),
      context(1),
    );
    expect(doc).toMatchObject({
      status: 'ERROR',
      addresses: {},
      fault: { code: 500, message: 'no host fits' },
    });
  });
});

describe('Nova flavor documents', () => {
  const flavor = { id: 'f1', name: 'm1.tiny', vcpus: 1, memoryMib: 256, rootDiskGib: 1 } as computeV1.Flavor;

  it('lists id, name and links without detail', () => {
    expect(flavorDocument(flavor, { ...links, version: v(1) }, false)).toEqual({
      id: 'f1',
      name: 'm1.tiny',
      links: [
        { rel: 'self', href: 'http://h/compute/v2.1/flavors/f1' },
        { rel: 'bookmark', href: 'http://h/compute/flavors/f1' },
      ],
    });
  });

  it('gives swap as an empty string before 2.75 and 0 from it', () => {
    expect(flavorDocument(flavor, { ...links, version: v(74) }, true).swap).toBe('');
    expect(flavorDocument(flavor, { ...links, version: v(75) }, true).swap).toBe(0);
  });

  it('adds description from 2.55 and extra_specs from 2.61', () => {
    const at = (minor: number) => flavorDocument(flavor, { ...links, version: v(minor) }, true);
    expect(at(54)).not.toHaveProperty('description');
    expect(at(55)).toHaveProperty('description', null);
    expect(at(60)).not.toHaveProperty('extra_specs');
    expect(at(61)).toHaveProperty('extra_specs', {});
  });
});
