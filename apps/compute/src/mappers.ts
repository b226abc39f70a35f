import { computeV1 } from '@flotilla/contracts';
import { allowedOperations, occupiesHost } from '@flotilla/domain';
import { FlavorRow, HostRow, VmRow } from './persistence/entities';

/** Proto types stop here: rows in, contract messages out. */

export function vmToProto(vm: VmRow): computeV1.Vm {
  return {
    id: vm.id,
    name: vm.name,
    tenantId: vm.tenantId,
    labels: vm.labels,
    createdAt: vm.createdAt,
    updatedAt: vm.updatedAt,
    etag: String(vm.version),
    powerState: `POWER_STATE_${vm.powerState}` as computeV1.PowerState,
    powerStateReason: vm.powerStateReason,
    flavorId: vm.flavorId ?? '',
    vcpus: vm.vcpus,
    memoryMib: vm.memoryMib,
    rootDiskGib: vm.rootDiskGib,
    boot: {
      image: vm.boot.image ?? '',
      kernel: vm.boot.kernel ?? '',
      initrd: vm.boot.initrd ?? '',
      cmdline: vm.boot.cmdline ?? '',
    },
    hostId: occupiesHost(vm.powerState) ? (vm.hostId ?? '') : '',
    allowedOperations: allowedOperations(vm).map((op) => `VM_OPERATION_${op}` as computeV1.VmOperation),
    currentOperationId: vm.currentOperationId ?? '',
    antiAffinityGroup: vm.antiAffinityGroup,
    requiredHostLabels: vm.requiredHostLabels,
    nics: vm.nics.map((nic) => ({
      mac: nic.mac,
      forwards: nic.forwards.map((f) => ({
        guestPort: f.guestPort,
        hostAddress: occupiesHost(vm.powerState) ? (f.hostAddress ?? '') : '',
      })),
    })),
    isSnapshot: vm.isSnapshot,
    snapshotOf: vm.snapshotOf ?? '',
    snapshotTime: vm.snapshotTime ?? undefined,
  };
}

export interface HostAllocation {
  vcpus: number;
  memoryMib: number;
  vmCount: number;
}

export function hostState(
  host: Pick<HostRow, 'down' | 'adminState'>,
): 'ENABLED' | 'DISABLED' | 'MAINTENANCE' | 'DOWN' {
  return host.down ? 'DOWN' : host.adminState;
}

export function hostToProto(host: HostRow, allocation: HostAllocation): computeV1.Host {
  return {
    id: host.id,
    name: host.name,
    labels: host.labels,
    createdAt: host.createdAt,
    updatedAt: host.updatedAt,
    etag: String(host.version),
    pool: host.pool,
    address: host.address,
    state: `HOST_STATE_${hostState(host)}` as computeV1.HostState,
    stateReason: host.stateReason,
    driver: host.driver,
    accelerator: host.accelerator,
    cpus: host.cpus,
    memoryMib: host.memoryMib,
    cpuOvercommitRatio: host.cpuOvercommitRatio,
    memoryOvercommitRatio: host.memoryOvercommitRatio,
    vcpusAllocated: allocation.vcpus,
    memoryMibAllocated: allocation.memoryMib,
    vmCount: allocation.vmCount,
    lastHeartbeatAt: host.lastHeartbeatAt,
    epoch: host.epoch,
    cpuModel: host.cpuModel,
    cpuFlags: host.cpuFlags,
  };
}

/** A VM as a migration needs it. */
export function migrationVmToProto(vm: VmRow): computeV1.MigrationVm {
  return {
    id: vm.id,
    name: vm.name,
    tenantId: vm.tenantId,
    powerState: `POWER_STATE_${vm.powerState}` as computeV1.PowerState,
    vcpus: vm.vcpus,
    memoryMib: vm.memoryMib,
    currentOperationId: vm.currentOperationId ?? '',
    hostId: occupiesHost(vm.powerState) ? (vm.hostId ?? '') : '',
  };
}

/** A host as a migration needs it. */
export function migrationHostToProto(host: HostRow): computeV1.MigrationHost {
  return {
    id: host.id,
    name: host.name,
    address: host.address,
    epoch: host.epoch,
    state: `HOST_STATE_${hostState(host)}` as computeV1.HostState,
    driver: host.driver,
    accelerator: host.accelerator,
  };
}

export function flavorToProto(f: FlavorRow): computeV1.Flavor {
  return {
    id: f.id,
    name: f.name,
    vcpus: f.vcpus,
    memoryMib: f.memoryMib,
    rootDiskGib: f.rootDiskGib,
    createdAt: f.createdAt,
    etag: String(f.version),
  };
}
