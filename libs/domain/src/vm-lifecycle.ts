import { DomainError, ErrorCode } from './errors';

export type PowerState = 'HALTED' | 'RUNNING' | 'PAUSED' | 'SUSPENDED' | 'UNKNOWN';

export type VmOperation =
  | 'START'
  | 'CLEAN_SHUTDOWN'
  | 'HARD_SHUTDOWN'
  | 'CLEAN_REBOOT'
  | 'HARD_REBOOT'
  | 'PAUSE'
  | 'UNPAUSE'
  | 'SUSPEND'
  | 'RESUME'
  | 'DESTROY'
  | 'SNAPSHOT'
  | 'REVERT'
  | 'CLONE';

/**
 * The VM lifecycle as a table (XAPI's xapi_vm_lifecycle): which operations each power state allows.
 * One guard uses it and the API publishes it as allowed_operations.
 * UNKNOWN (host stopped reporting) allows only what is safe without the host: a hard shutdown or destroy
 * is recorded now and realised when the host returns or is fenced.
 */
const allowedByPowerState: Record<PowerState, readonly VmOperation[]> = {
  HALTED: ['START', 'DESTROY', 'SNAPSHOT', 'REVERT'],
  // A running VM's snapshot pauses it for the duration, so that its disks are taken as one set.
  RUNNING: [
    'CLEAN_SHUTDOWN',
    'HARD_SHUTDOWN',
    'CLEAN_REBOOT',
    'HARD_REBOOT',
    'PAUSE',
    'SUSPEND',
    'DESTROY',
    'SNAPSHOT',
  ],
  PAUSED: ['UNPAUSE', 'HARD_SHUTDOWN', 'HARD_REBOOT', 'SUSPEND', 'DESTROY', 'SNAPSHOT'],
  // A hard shutdown of a SUSPENDED VM discards its saved memory.
  SUSPENDED: ['RESUME', 'HARD_SHUTDOWN', 'DESTROY'],
  UNKNOWN: ['HARD_SHUTDOWN', 'DESTROY'],
};

/** A VM snapshot (XAPI is-a-snapshot) never runs: it is cloned into new VMs, or destroyed. */
const allowedForSnapshot: readonly VmOperation[] = ['CLONE', 'DESTROY'];

/** The power state an operation leaves the VM in when it succeeds. */
export const powerStateAfter: Record<VmOperation, PowerState | 'DELETED'> = {
  START: 'RUNNING',
  CLEAN_SHUTDOWN: 'HALTED',
  HARD_SHUTDOWN: 'HALTED',
  CLEAN_REBOOT: 'RUNNING',
  HARD_REBOOT: 'RUNNING',
  PAUSE: 'PAUSED',
  UNPAUSE: 'RUNNING',
  SUSPEND: 'SUSPENDED',
  RESUME: 'RUNNING',
  DESTROY: 'DELETED',
  // A snapshot is taken of a running VM without stopping it (the pause in between is internal).
  SNAPSHOT: 'RUNNING',
  REVERT: 'HALTED',
  CLONE: 'HALTED',
};

export interface VmLifecycleView {
  id: string;
  powerState: PowerState;
  /** Id of the operation in flight, if any: one at a time per VM. */
  currentOperationId?: string | null;
  /** A VM snapshot: its own, short table. */
  isSnapshot?: boolean;
}

const allowedNow = (vm: Pick<VmLifecycleView, 'powerState' | 'isSnapshot'>): readonly VmOperation[] =>
  vm.isSnapshot ? allowedForSnapshot : allowedByPowerState[vm.powerState];

export function allowedOperations(
  vm: Pick<VmLifecycleView, 'powerState' | 'currentOperationId' | 'isSnapshot'>,
): VmOperation[] {
  if (vm.currentOperationId) return [];
  return [...allowedNow(vm)];
}

/** Throws FAILED_PRECONDITION naming the state and the allowed operations when `op` is not allowed now. */
export function assertOperationAllowed(vm: VmLifecycleView, op: VmOperation): void {
  if (vm.currentOperationId) {
    throw new DomainError(
      ErrorCode.FailedPrecondition,
      `vm ${vm.id} has operation ${vm.currentOperationId} in progress: wait for it (flotilla op wait ${vm.currentOperationId}) and retry`,
      { resource: `vm ${vm.id}`, metadata: { current_operation_id: vm.currentOperationId } },
    );
  }
  const allowed = allowedNow(vm);
  if (vm.isSnapshot && !allowed.includes(op)) {
    throw new DomainError(
      ErrorCode.FailedPrecondition,
      `vm ${vm.id} is a snapshot: ${op} is not allowed; allowed operations: ${allowed.join(', ')} (clone it into a new VM to run or snapshot it)`,
      { resource: `vm ${vm.id}`, metadata: { is_snapshot: 'true', allowed: allowed.join(',') } },
    );
  }
  if (!allowed.includes(op)) {
    throw new DomainError(
      ErrorCode.FailedPrecondition,
      `vm ${vm.id} is ${vm.powerState}: ${op} is not allowed; allowed operations: ${allowed.join(', ') || 'none'}`,
      { resource: `vm ${vm.id}`, metadata: { power_state: vm.powerState, allowed: allowed.join(',') } },
    );
  }
}

/**
 * True while the VM holds capacity on a host. A SUSPENDED VM keeps its claim (as OpenStack's suspend
 * does): its saved memory lives on that host, so it resumes there.
 */
export function occupiesHost(state: PowerState): boolean {
  return state === 'RUNNING' || state === 'PAUSED' || state === 'SUSPENDED' || state === 'UNKNOWN';
}
