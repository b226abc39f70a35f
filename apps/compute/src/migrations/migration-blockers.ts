import { commonV1 } from '@flotilla/contracts';
import type { HostState, PowerState } from '@flotilla/domain';
import {
  FILTER_STACK,
  type CandidateView,
  type FilterName,
  type PlacementRequest,
} from '@flotilla/scheduler';
import { cpuIncompatibility } from './cpu-compatibility';

/**
 * Compute's side of a migration's preflight, as a pure function of a snapshot: what compute alone knows
 * (the VM's state and lock, both hosts' state, capacity and placement constraints, driver, accelerator and
 * the CPU guests get).
 * Every blocker is listed, never only the first. Blockers are ErrorDetails: reason the BlockerKind name
 * without its prefix, description what is wrong and what to do, metadata resource_kind and resource_id.
 *
 * Power state: LIVE needs RUNNING or PAUSED, OFFLINE RUNNING or HALTED, and compute is not told the mode.
 * So compute blocks only what no mode can move (UNKNOWN, SUSPENDED, a VM snapshot) and reports the power
 * state in CheckVmMigrationResponse.vm for the migration service to judge HALTED.
 */

export type BlockerKind =
  | 'VM_POWER_STATE'
  | 'VM_OPERATION_IN_PROGRESS'
  | 'SAME_HOST'
  | 'SOURCE_HOST_UNAVAILABLE'
  | 'DESTINATION_HOST_STATE'
  | 'NO_DESTINATION'
  | 'INSUFFICIENT_MEMORY'
  | 'INSUFFICIENT_CPU'
  | 'DRIVER_MISMATCH'
  | 'ACCELERATOR_MISMATCH'
  | 'CPU_INCOMPATIBLE'
  | 'PLACEMENT_CONSTRAINT';

/** Blockers that only capacity lifts: a begin refused for these alone is RESOURCE_EXHAUSTED. */
export const capacityBlockers: ReadonlySet<string> = new Set<BlockerKind>([
  'INSUFFICIENT_MEMORY',
  'INSUFFICIENT_CPU',
  'NO_DESTINATION',
]);

export interface BlockerVm {
  id: string;
  name: string;
  powerState: PowerState;
  isSnapshot: boolean;
  currentOperationId: string | null;
  migrationId: string | null;
  vcpus: number;
  memoryMib: number;
  antiAffinityGroup: string;
  requiredHostLabels: Record<string, string>;
}

export interface BlockerHost {
  id: string;
  name: string;
  state: HostState;
  stateReason: string;
  driver: string;
  accelerator: string;
  /** As the agent reports them (RegisterHostRequest); '' not reported. */
  cpuModel: string;
  cpuFlags: string[];
}

export interface BlockerInputs {
  vm: BlockerVm;
  /** The migration asking: its own lock on the VM is no blocker. */
  migrationId: string;
  /**
   * The VM holds vCPUs and memory (it runs): the destination's capacity and the VM's placement
   * constraints count. A HALTED VM's move is checked for the destination's state only; its next start
   * places it.
   */
  holdsCapacity: boolean;
  /** The host the VM runs on; absent when it has none (HALTED). */
  source?: BlockerHost;
  /** The destination with its capacity as the scheduler sees it (the VM's own holdings left out). */
  destination?: { host: BlockerHost; view: CandidateView };
}

/** The accelerator's name: agents report it with the reason they chose it ("tcg (no /dev/kvm)"). */
export function acceleratorKind(accelerator: string): string {
  return accelerator.trim().split(/[\s(]/)[0] ?? '';
}

/** Whether a VM's guest state carries from one host to the other: one driver, one accelerator. */
export function sameHypervisor(
  a: Pick<BlockerHost, 'driver' | 'accelerator'>,
  b: Pick<BlockerHost, 'driver' | 'accelerator'>,
): boolean {
  return a.driver === b.driver && acceleratorKind(a.accelerator) === acceleratorKind(b.accelerator);
}

/** What the scheduler is asked for the VM. */
export function placementRequestOf(
  vm: Pick<BlockerVm, 'vcpus' | 'memoryMib' | 'requiredHostLabels' | 'antiAffinityGroup'>,
): PlacementRequest {
  return {
    vcpus: vm.vcpus,
    memoryMib: vm.memoryMib,
    requiredLabels: vm.requiredHostLabels,
    antiAffinityGroup: vm.antiAffinityGroup || undefined,
  };
}

export function blocker(
  reason: BlockerKind,
  description: string,
  resource: { kind: 'vm' | 'host'; id: string },
  field = '',
): commonV1.ErrorDetail {
  return { reason, field, description, metadata: { resource_kind: resource.kind, resource_id: resource.id } };
}

/** Every blocker compute sees for moving `vm` from `source` to `destination`. */
export function migrationBlockers(inputs: BlockerInputs): commonV1.ErrorDetail[] {
  const { vm, source, destination } = inputs;
  const vmRef = { kind: 'vm', id: vm.id } as const;
  const out: commonV1.ErrorDetail[] = [];
  if (vm.isSnapshot)
    out.push(
      blocker(
        'VM_POWER_STATE',
        `vm ${vm.name} is a snapshot, which never runs nor moves: migrate the VM it was taken of`,
        vmRef,
      ),
    );
  else if (vm.powerState === 'UNKNOWN' || vm.powerState === 'SUSPENDED')
    out.push(
      blocker(
        'VM_POWER_STATE',
        vm.powerState === 'UNKNOWN'
          ? `vm ${vm.name} is UNKNOWN (its host stopped reporting): wait until its host reports again, or hard-shut it down`
          : `vm ${vm.name} is SUSPENDED: resume it to migrate it live, or shut it down to move it offline`,
        vmRef,
      ),
    );
  if (vm.currentOperationId && !(vm.migrationId && vm.migrationId === inputs.migrationId))
    out.push(
      blocker(
        'VM_OPERATION_IN_PROGRESS',
        vm.migrationId
          ? `vm ${vm.name} is held by migration ${vm.migrationId} (operation ${vm.currentOperationId}): wait for it to end or cancel it`
          : `vm ${vm.name} has operation ${vm.currentOperationId} in progress: wait for it (flotilla op wait ${vm.currentOperationId}) and retry`,
        vmRef,
      ),
    );
  if (source?.state === 'DOWN')
    out.push(
      blocker(
        'SOURCE_HOST_UNAVAILABLE',
        `host ${source.name}, where vm ${vm.name} runs, is DOWN${source.stateReason ? ` (${source.stateReason})` : ''}: a VM is moved from a host that answers; wait until it reports again`,
        { kind: 'host', id: source.id },
      ),
    );
  if (destination)
    out.push(...destinationBlockers(vm, inputs.holdsCapacity, source, destination.host, destination.view));
  return out;
}

function destinationBlockers(
  vm: BlockerVm,
  holdsCapacity: boolean,
  source: BlockerHost | undefined,
  host: BlockerHost,
  view: CandidateView,
): commonV1.ErrorDetail[] {
  const ref = { kind: 'host', id: host.id } as const;
  const field = 'destination_host_id';
  if (source?.id === host.id)
    return [
      blocker(
        'SAME_HOST',
        `vm ${vm.name} already runs on host ${host.name}: choose another destination, or none to let the scheduler pick`,
        ref,
        field,
      ),
    ];
  const out: commonV1.ErrorDetail[] = [];
  const request = placementRequestOf(vm);
  // Each filter on its own (not the scheduler's first-rejection rule), so that every reason shows.
  for (const filter of FILTER_STACK) {
    if ((!holdsCapacity && filter.name !== 'host-state') || filter.passes(view, request)) continue;
    const found = filterBlocker(filter.name, vm, host, view);
    if (found) out.push(blocker(found.kind, found.description, ref, field));
  }
  if (source && source.driver !== host.driver)
    out.push(
      blocker(
        'DRIVER_MISMATCH',
        `host ${host.name} runs driver ${host.driver} and vm ${vm.name} runs under ${source.driver} on host ${source.name}: a VM moves live only between hosts of one driver; choose a ${source.driver} host`,
        ref,
        field,
      ),
    );
  else if (source && !sameHypervisor(source, host)) {
    const [to, from] = [
      acceleratorKind(host.accelerator) || 'none',
      acceleratorKind(source.accelerator) || 'none',
    ];
    out.push(
      blocker(
        'ACCELERATOR_MISMATCH',
        `host ${host.name} uses accelerator ${to} and host ${source.name} ${from}: guest state does not carry across accelerators; choose a host with ${from}`,
        ref,
        field,
      ),
    );
  } else if (source && holdsCapacity) {
    // A running guest keeps its CPU; a HALTED VM boots with the destination's.
    const why = cpuIncompatibility(vm.name, source, host);
    if (why) out.push(blocker('CPU_INCOMPATIBLE', why, ref, field));
  }
  return out;
}

function filterBlocker(
  filter: FilterName,
  vm: BlockerVm,
  host: BlockerHost,
  view: CandidateView,
): { kind: BlockerKind; description: string } | undefined {
  const whole = (n: number) => Math.max(0, Math.floor(n));
  switch (filter) {
    case 'host-state':
      return {
        kind: 'DESTINATION_HOST_STATE',
        description: `host ${host.name} is ${host.state}${host.stateReason ? ` (${host.stateReason})` : ''}: ${
          host.state === 'DOWN'
            ? 'it takes VMs again once its agent reports'
            : `the scheduler keeps VMs away from it; choose an ENABLED host, or enable it (flotilla host enable ${host.name})`
        }`,
      };
    case 'memory':
      return {
        kind: 'INSUFFICIENT_MEMORY',
        description: `host ${host.name} has ${whole(view.freeMemoryMib)} MiB of memory free (${whole(view.memoryCapacityMib)} MiB with overcommit, ${view.memoryMibAllocated} MiB held by its VMs and migrations in flight); vm ${vm.name} needs ${vm.memoryMib} MiB: choose another destination or free memory there`,
      };
    case 'vcpus':
      return {
        kind: 'INSUFFICIENT_CPU',
        description: `host ${host.name} has ${whole(view.freeVcpus)} vCPUs free (${whole(view.vcpuCapacity)} with overcommit, ${view.vcpusAllocated} held by its VMs and migrations in flight); vm ${vm.name} needs ${vm.vcpus}: choose another destination or free vCPUs there`,
      };
    case 'anti-affinity':
      return {
        kind: 'PLACEMENT_CONSTRAINT',
        description: `host ${host.name} already holds a VM of anti-affinity group ${vm.antiAffinityGroup}, which vm ${vm.name} belongs to: choose a host without one`,
      };
    case 'required-labels': {
      const missing = Object.entries(vm.requiredHostLabels)
        .filter(([k, v]) => !(Object.hasOwn(view.labels, k) && view.labels[k] === v))
        .map(([k, v]) => `${k}=${v}`);
      return {
        kind: 'PLACEMENT_CONSTRAINT',
        description: `host ${host.name} lacks labels ${missing.join(', ')} that vm ${vm.name} requires: choose a host that has them`,
      };
    }
    // A named destination is never excluded.
    case 'excluded-host':
      return undefined;
  }
}
