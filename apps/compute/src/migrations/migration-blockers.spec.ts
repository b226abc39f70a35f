import { toCandidateView, placementPolicy, type HostCandidate } from '@flotilla/scheduler';
import { BlockerHost, BlockerInputs, BlockerVm, migrationBlockers } from './migration-blockers';

// Pure: the blockers compute derives from a snapshot of the VM and both hosts.

const vm: BlockerVm = {
  id: 'vm-1',
  name: 'web-1',
  powerState: 'RUNNING',
  isSnapshot: false,
  currentOperationId: null,
  migrationId: null,
  vcpus: 2,
  memoryMib: 1024,
  antiAffinityGroup: '',
  requiredHostLabels: {},
};
const host = (id: string, over: Partial<BlockerHost> = {}): BlockerHost => ({
  id,
  name: id,
  state: 'ENABLED',
  stateReason: '',
  driver: 'qemu',
  accelerator: 'tcg (no /dev/kvm)',
  cpuModel: 'qemu64',
  cpuFlags: [],
  ...over,
});
const view = (id: string, over: Partial<HostCandidate> = {}) =>
  toCandidateView(
    {
      id,
      state: 'ENABLED',
      cpus: 4,
      memoryMib: 4096,
      vcpusAllocated: 0,
      memoryMibAllocated: 0,
      labels: {},
      antiAffinityGroups: {},
      ...over,
    },
    placementPolicy(),
  );
const check = (over: Partial<BlockerInputs>) =>
  migrationBlockers({
    vm,
    migrationId: 'mig-1',
    holdsCapacity: true,
    source: host('src'),
    destination: { host: host('dst'), view: view('dst') },
    ...over,
  });
const reasons = (over: Partial<BlockerInputs>) => check(over).map((b) => b.reason);

describe('migration blockers', () => {
  it('finds none for a running VM moving to an ENABLED host with room', () => {
    expect(check({})).toEqual([]);
  });

  it('blocks a VM whose source host is DOWN, naming the host', () => {
    const [b] = check({ source: host('src', { state: 'DOWN', stateReason: 'no heartbeat' }) });
    expect(b).toMatchObject({
      reason: 'SOURCE_HOST_UNAVAILABLE',
      metadata: { resource_kind: 'host', resource_id: 'src' },
      description: expect.stringContaining('no heartbeat'),
    });
  });

  it('blocks UNKNOWN and SUSPENDED VMs and VM snapshots, but leaves HALTED to the migration service', () => {
    expect(reasons({ vm: { ...vm, powerState: 'UNKNOWN' } })).toEqual(['VM_POWER_STATE']);
    expect(reasons({ vm: { ...vm, powerState: 'SUSPENDED' } })).toEqual(['VM_POWER_STATE']);
    expect(reasons({ vm: { ...vm, isSnapshot: true } })).toEqual(['VM_POWER_STATE']);
    expect(reasons({ vm: { ...vm, powerState: 'HALTED' }, source: undefined, holdsCapacity: false })).toEqual(
      [],
    );
  });

  it('does not count the asking migration its own lock, but blocks on any other operation', () => {
    const held = { ...vm, currentOperationId: 'op-1', migrationId: 'mig-1' };
    expect(reasons({ vm: held })).toEqual([]);
    expect(reasons({ vm: held, migrationId: 'mig-2' })).toEqual(['VM_OPERATION_IN_PROGRESS']);
    expect(check({ vm: { ...vm, currentOperationId: 'op-9' } })[0].description).toContain(
      'flotilla op wait op-9',
    );
  });

  it('lists every destination blocker at once, not only the first the scheduler would blame', () => {
    const found = check({
      vm: { ...vm, antiAffinityGroup: 'db', requiredHostLabels: { zone: 'a' } },
      destination: {
        host: host('dst', { state: 'MAINTENANCE', stateReason: 'kernel upgrade', driver: 'sim' }),
        view: view('dst', {
          state: 'MAINTENANCE',
          cpus: 1,
          vcpusAllocated: 3,
          memoryMibAllocated: 3584,
          antiAffinityGroups: { db: 1 },
          labels: { zone: 'b' },
        }),
      },
    });
    expect(found.map((b) => b.reason)).toEqual([
      'DESTINATION_HOST_STATE',
      'INSUFFICIENT_MEMORY',
      'INSUFFICIENT_CPU',
      'PLACEMENT_CONSTRAINT',
      'PLACEMENT_CONSTRAINT',
      'DRIVER_MISMATCH',
    ]);
    expect(found[1].description).toContain('has 512 MiB of memory free');
    expect(found[2].description).toContain('has 1 vCPUs free (4 with overcommit, 3 held');
    expect(found[4].description).toContain('lacks labels zone=a');
    for (const b of found) expect(b.metadata).toEqual({ resource_kind: 'host', resource_id: 'dst' });
  });

  it('compares accelerators by name, not by the reason the agent gives', () => {
    const other = { host: host('dst', { accelerator: 'tcg (kvm probe failed)' }), view: view('dst') };
    expect(reasons({ destination: other })).toEqual([]);
    const kvm = { host: host('dst', { accelerator: 'kvm' }), view: view('dst') };
    expect(reasons({ destination: kvm })).toEqual(['ACCELERATOR_MISMATCH']);
  });

  it('blocks a running VM from a host giving another CPU, after the filters, but not a HALTED one', () => {
    const kvm = { accelerator: 'kvm (probe passed)', cpuModel: 'host: New' };
    const source = host('src', { ...kvm, cpuFlags: ['sse4_2', 'avx2'] });
    const older = host('dst', { ...kvm, cpuModel: 'host: Old', cpuFlags: ['sse4_2'] });
    const [state, cpu] = check({
      source,
      destination: { host: { ...older, state: 'DISABLED' }, view: view('dst', { state: 'DISABLED' }) },
    });
    expect([state.reason, cpu.reason]).toEqual(['DESTINATION_HOST_STATE', 'CPU_INCOMPATIBLE']);
    expect(cpu).toMatchObject({
      field: 'destination_host_id',
      metadata: { resource_kind: 'host', resource_id: 'dst' },
      description: expect.stringContaining(
        'lacks 1 CPU flag that vm web-1 sees on host src (host: New): avx2;',
      ),
    });
    expect(
      reasons({
        vm: { ...vm, powerState: 'HALTED' },
        holdsCapacity: false,
        source,
        destination: { host: older, view: view('dst') },
      }),
    ).toEqual([]);
  });

  it('reports a driver or accelerator mismatch without a CPU blocker on top', () => {
    const other = host('dst', { accelerator: 'kvm', cpuModel: 'host: Any', cpuFlags: [] });
    expect(reasons({ destination: { host: other, view: view('dst') } })).toEqual(['ACCELERATOR_MISMATCH']);
  });

  it('answers SAME_HOST alone when the destination is the source', () => {
    expect(
      reasons({ destination: { host: host('src'), view: view('src', { memoryMibAllocated: 4096 }) } }),
    ).toEqual(['SAME_HOST']);
  });

  it('checks only the destination state for a HALTED VM, which holds no capacity', () => {
    const full = {
      host: host('dst', { state: 'DISABLED' }),
      view: view('dst', { state: 'DISABLED', memoryMibAllocated: 4096 }),
    };
    expect(
      reasons({
        vm: { ...vm, powerState: 'HALTED' },
        source: undefined,
        holdsCapacity: false,
        destination: full,
      }),
    ).toEqual(['DESTINATION_HOST_STATE']);
  });
});
