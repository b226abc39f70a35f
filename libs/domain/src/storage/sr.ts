import { DomainError, ErrorCode } from '../errors';

/** A storage repository (XAPI's SR): a directory of qcow2 files on one host (FILE) or on all (SHARED). */
export type SrType = 'FILE' | 'SHARED';
export type SrState = 'CREATING' | 'AVAILABLE' | 'DEGRADED' | 'UNAVAILABLE';
export type SrOperation = 'SCAN' | 'FORGET' | 'DESTROY' | 'VDI_CREATE';

/** Whether one host sees the SR (XAPI's PBD currently_attached), and why not. */
export interface SrHostAttachment {
  hostId: string;
  attached: boolean;
  reason: string;
}

export interface SrLifecycleView {
  id: string;
  name: string;
  state: SrState;
  /** The operation in flight on the SR itself (create, scan, destroy). */
  currentOperationId?: string | null;
  currentOperationKind?: string | null;
}

/**
 * What each state allows. CREATING allows nothing; UNAVAILABLE allows only FORGET (records only: no host
 * is needed). A scan in flight still lets VDIs be created; a destroy in flight allows nothing.
 */
const allowedByState: Record<SrState, readonly SrOperation[]> = {
  CREATING: [],
  AVAILABLE: ['SCAN', 'FORGET', 'DESTROY', 'VDI_CREATE'],
  DEGRADED: ['SCAN', 'FORGET', 'DESTROY', 'VDI_CREATE'],
  UNAVAILABLE: ['FORGET'],
};

export function srAllowedOperations(sr: Omit<SrLifecycleView, 'id' | 'name'>): SrOperation[] {
  const byState = allowedByState[sr.state];
  if (!sr.currentOperationId) return [...byState];
  if (sr.currentOperationKind === 'sr.scan') return byState.filter((o) => o === 'SCAN' || o === 'VDI_CREATE');
  return [];
}

const verb: Record<SrOperation, string> = {
  SCAN: 'scanned',
  FORGET: 'forgotten',
  DESTROY: 'destroyed',
  VDI_CREATE: 'given new VDIs',
};

/** FAILED_PRECONDITION naming the SR's state and the operation in flight when `op` is not allowed. */
export function assertSrOperationAllowed(sr: SrLifecycleView, op: SrOperation): void {
  if (srAllowedOperations(sr).includes(op)) return;
  const inFlight = sr.currentOperationId
    ? `; operation ${sr.currentOperationId}${sr.currentOperationKind ? ` (${sr.currentOperationKind})` : ''} is in progress: wait for it and retry`
    : '';
  const hint =
    sr.state === 'UNAVAILABLE'
      ? ': no host sees it; fix the directory or mount on its host(s) and scan it again'
      : sr.state === 'CREATING'
        ? ': wait for its sr.create operation'
        : '';
  throw new DomainError(
    ErrorCode.FailedPrecondition,
    `SR ${sr.name} is ${sr.state} and cannot be ${verb[op]} now${inFlight || hint}`,
    { resource: `sr ${sr.id}` },
  );
}

/**
 * The state an SR is in given which hosts see it. FILE: its one host. SHARED: the ENABLED hosts; some
 * missing is DEGRADED, all missing (or none ENABLED) UNAVAILABLE. The reason names the hosts at fault.
 */
export function srStateFromHosts(
  type: SrType,
  attachments: ReadonlyArray<SrHostAttachment & { hostName?: string }>,
): { state: Exclude<SrState, 'CREATING'>; reason: string } {
  const missing = attachments.filter((a) => !a.attached);
  const reason = missing
    .map((a) => `${a.hostName ?? a.hostId}: ${a.reason || 'does not see the SR'}`)
    .join('; ');
  if (attachments.length === 0)
    return {
      state: 'UNAVAILABLE',
      reason: type === 'FILE' ? 'its host is gone from the pool' : 'no ENABLED host in the pool',
    };
  if (missing.length === 0) return { state: 'AVAILABLE', reason: '' };
  if (missing.length === attachments.length) return { state: 'UNAVAILABLE', reason };
  return { state: 'DEGRADED', reason };
}

/** An SR a tenant may use: pool-wide ones and those dedicated to it. */
export function srVisibleTo(
  sr: { tenantId: string },
  caller: { tenantId: string; crossTenant: boolean },
): boolean {
  return caller.crossTenant || sr.tenantId === '' || sr.tenantId === caller.tenantId;
}
