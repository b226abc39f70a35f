import { invalidArgument } from '../errors';

/**
 * Host evacuation as pure decisions: which resident VMs move, which are left or shut down (the plan), how
 * many migrations may start now, how far along it is and how it ends. The service does the I/O around it
 * (compute, the migrations, the database).
 */

export type EvacuationBlockedPolicy = 'FAIL' | 'SKIP' | 'SHUTDOWN';

export type EvacuationState = 'RUNNING' | 'CANCELLING' | 'SUCCEEDED' | 'PARTIAL' | 'FAILED' | 'CANCELLED';

export type EvacuationVmOutcome = 'PENDING' | 'MIGRATING' | 'MIGRATED' | 'SKIPPED' | 'SHUT_DOWN' | 'FAILED';

/** What the evacuation does with one VM, decided by the plan. */
export type EvacuationAction = 'MIGRATE' | 'SKIP' | 'SHUTDOWN';

/** Why a VM cannot move: kind is the blocker name without prefix ("LOCAL_STORAGE", "INSUFFICIENT_MEMORY"). */
export interface EvacuationBlocker {
  kind: string;
  message: string;
}

/** A VM resident on the host, with the blockers its preflight (no destination named) reported. */
export interface ResidentVm<B extends EvacuationBlocker = EvacuationBlocker> {
  vmId: string;
  memoryMib: number;
  vcpus: number;
  blockers: B[];
}

/** Room left on one host that may receive VMs (free capacity under its overcommit ratios). */
export interface DestinationRoom {
  freeMemoryMib: number;
  freeVcpus: number;
}

export interface PlannedVm<B extends EvacuationBlocker = EvacuationBlocker> {
  vmId: string;
  action: EvacuationAction;
  /** Empty for MIGRATE. */
  blockers: Array<B | EvacuationBlocker>;
}

export type EvacuationPlan<B extends EvacuationBlocker = EvacuationBlocker> =
  | { refused: false; vms: PlannedVm<B>[] }
  | {
      refused: true;
      /** NO_CAPACITY when every blocked VM is blocked only for lack of room, else BLOCKED. */
      reason: 'BLOCKED' | 'NO_CAPACITY';
      blocked: PlannedVm<B>[];
    };

/** Blockers that say "not enough room": with FAIL they refuse the evacuation as RESOURCE_EXHAUSTED. */
const capacityKinds = new Set([
  'NO_DESTINATION',
  'INSUFFICIENT_MEMORY',
  'INSUFFICIENT_CPU',
  'INSUFFICIENT_STORAGE',
]);

export const maxParallelDefault = 2;
export const maxParallelLimit = 16;

/** max_parallel as requested: 0 means the default; 1..16 otherwise. */
export function validateMaxParallel(value: number): number {
  if (value === 0) return maxParallelDefault;
  if (!Number.isInteger(value) || value < 1 || value > maxParallelLimit)
    throw invalidArgument(
      'max_parallel',
      `must be from 1 to ${maxParallelLimit} migrations at once (0 means ${maxParallelDefault}); got ${value}`,
    );
  return value;
}

/**
 * The plan: VMs whose preflight found no blocker move, unless the destinations cannot hold them all
 * together. Each preflight is answered alone, so the plan also checks the sum: VMs are admitted smallest
 * first (most VMs moved) while the total free memory and vCPUs of the destinations last; the rest are
 * blocked for lack of room. The sum is necessary, not sufficient (hosts fragment): migrations that still
 * find no room fail on their own. Blocked VMs then follow the policy.
 */
export function planEvacuation<B extends EvacuationBlocker>(input: {
  vms: ResidentVm<B>[];
  destinations: DestinationRoom[];
  onBlocked: EvacuationBlockedPolicy;
}): EvacuationPlan<B> {
  const blockers = new Map<string, Array<B | EvacuationBlocker>>(
    input.vms.map((v) => [v.vmId, [...v.blockers]]),
  );
  let freeMemoryMib = sum(input.destinations.map((d) => Math.max(0, d.freeMemoryMib)));
  let freeVcpus = sum(input.destinations.map((d) => Math.max(0, d.freeVcpus)));
  const totalMemoryMib = freeMemoryMib;
  const totalVcpus = freeVcpus;
  const movable = input.vms
    .filter((v) => v.blockers.length === 0)
    .sort((a, b) => a.memoryMib - b.memoryMib || a.vcpus - b.vcpus || a.vmId.localeCompare(b.vmId));
  for (const vm of movable) {
    if (vm.memoryMib > freeMemoryMib)
      blockers.get(vm.vmId)?.push({
        kind: 'INSUFFICIENT_MEMORY',
        message: `the other hosts have ${totalMemoryMib} MiB free together; the VMs moved before this one leave ${freeMemoryMib} MiB and it needs ${vm.memoryMib} MiB: free memory elsewhere or add a host`,
      });
    else if (vm.vcpus > freeVcpus)
      blockers.get(vm.vmId)?.push({
        kind: 'INSUFFICIENT_CPU',
        message: `the other hosts have ${totalVcpus} vCPUs free together; the VMs moved before this one leave ${freeVcpus} and it needs ${vm.vcpus}: free vCPUs elsewhere or add a host`,
      });
    else {
      freeMemoryMib -= vm.memoryMib;
      freeVcpus -= vm.vcpus;
    }
  }
  const planned: PlannedVm<B>[] = input.vms.map((v) => {
    const b = blockers.get(v.vmId) ?? [];
    return { vmId: v.vmId, action: b.length ? blockedAction(input.onBlocked) : 'MIGRATE', blockers: b };
  });
  const blocked = planned.filter((p) => p.blockers.length > 0);
  if (input.onBlocked === 'FAIL' && blocked.length)
    return {
      refused: true,
      reason: blocked.every((p) => p.blockers.every((b) => capacityKinds.has(b.kind)))
        ? 'NO_CAPACITY'
        : 'BLOCKED',
      blocked,
    };
  return { refused: false, vms: planned };
}

function blockedAction(policy: EvacuationBlockedPolicy): EvacuationAction {
  return policy === 'SHUTDOWN' ? 'SHUTDOWN' : 'SKIP';
}

/** One VM's place in a running evacuation, as the runner decides from it. */
export interface EvacuationVmStatus {
  vmId: string;
  action: EvacuationAction;
  outcome: EvacuationVmOutcome;
}

/** Outcomes after which nothing more happens to the VM. */
export function isVmDealtWith(outcome: EvacuationVmOutcome): boolean {
  return outcome !== 'PENDING' && outcome !== 'MIGRATING';
}

/** Fraction of the VMs dealt with, 0..1 (1 for a host with no VMs). */
export function evacuationProgress(vms: Pick<EvacuationVmStatus, 'outcome'>[]): number {
  return vms.length ? vms.filter((v) => isVmDealtWith(v.outcome)).length / vms.length : 1;
}

/** The VMs whose migration may start now: pending moves, in plan order, up to the free slots. */
export function vmsToStart(vms: EvacuationVmStatus[], maxParallel: number): string[] {
  const running = vms.filter((v) => v.outcome === 'MIGRATING').length;
  return vms
    .filter((v) => v.action === 'MIGRATE' && v.outcome === 'PENDING')
    .slice(0, Math.max(0, maxParallel - running))
    .map((v) => v.vmId);
}

export function isEvacuationFinished(state: EvacuationState): boolean {
  return state !== 'RUNNING' && state !== 'CANCELLING';
}

/**
 * How an evacuation ends once no VM is pending or migrating: CANCELLED when a cancel was asked, FAILED
 * when an error concerning the whole host stopped it, SUCCEEDED when every VM left the host (moved or shut
 * down), PARTIAL otherwise.
 */
export function evacuationEnd(input: {
  vms: Pick<EvacuationVmStatus, 'outcome'>[];
  cancelled: boolean;
  failedForHost: boolean;
}): Extract<EvacuationState, 'SUCCEEDED' | 'PARTIAL' | 'FAILED' | 'CANCELLED'> {
  if (input.cancelled) return 'CANCELLED';
  if (input.failedForHost) return 'FAILED';
  return input.vms.every((v) => v.outcome === 'MIGRATED' || v.outcome === 'SHUT_DOWN')
    ? 'SUCCEEDED'
    : 'PARTIAL';
}

function sum(values: number[]): number {
  return values.reduce((a, b) => a + b, 0);
}
