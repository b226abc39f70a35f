import { SchedulerError, SchedulerErrorCode } from './errors';
import type { HostCandidate, HostState, PlacementPolicy, PlacementRequest } from './model';
import { WEIGHERS } from './stack';

/**
 * Checks that keep the index sound: a NaN or infinite capacity would break the weigher's total order and
 * silently misplace every later VM, so the scheduler refuses such input where it enters. Sizes are whole
 * numbers up to MAX_SIZE and ratios lie within [MIN_RATIO, MAX_RATIO], so that utilisation quotients
 * (`(allocated + request) / capacity`, numerators below 2^51) stay finite, normal doubles that tell every
 * two allocations of one capacity class apart: what keeps a class's request-independent order and the
 * spread weigher's request-dependent one in step (see utilisationAfter).
 */

/** 2^50: a petabyte host in MiB is 2^30; the headroom is for exactness, not for hosts. */
export const MAX_SIZE = 2 ** 50;
export const MIN_RATIO = 1 / 1024;
export const MAX_RATIO = 1024;

/** A size the index can rank exactly: a whole number from 0 to MAX_SIZE. */
export function isIndexableSize(value: number): boolean {
  return Number.isInteger(value) && value >= 0 && value <= MAX_SIZE;
}

const HOST_STATES: ReadonlySet<HostState> = new Set(['ENABLED', 'DISABLED', 'MAINTENANCE', 'DOWN']);

export function assertValidHost(host: HostCandidate): void {
  if (typeof host.id !== 'string' || host.id.length === 0) {
    throw new SchedulerError({
      code: SchedulerErrorCode.InvalidHost,
      resource: 'host id',
      expected: 'a non-empty string',
      actual: JSON.stringify(host.id),
      action: 'give every host its compute-service id',
    });
  }
  if (!HOST_STATES.has(host.state)) {
    throw new SchedulerError({
      code: SchedulerErrorCode.InvalidHost,
      resource: `host ${host.id} state`,
      expected: [...HOST_STATES].join(' | '),
      actual: String(host.state),
      action: 'map the host record state before upserting it',
    });
  }
  for (const field of ['cpus', 'memoryMib', 'vcpusAllocated', 'memoryMibAllocated'] as const) {
    assertSize(`host ${host.id} ${field}`, host[field], SchedulerErrorCode.InvalidHost);
  }
  for (const field of ['cpuOvercommitRatio', 'memoryOvercommitRatio'] as const) {
    const ratio = host[field];
    if (ratio !== undefined) assertRatio(`host ${host.id} ${field}`, ratio, SchedulerErrorCode.InvalidHost);
  }
}

export function assertValidReservation(hostId: string, request: PlacementRequest): void {
  assertSize(`reservation on host ${hostId} vcpus`, request.vcpus, SchedulerErrorCode.InvalidRequest);
  assertSize(`reservation on host ${hostId} memoryMib`, request.memoryMib, SchedulerErrorCode.InvalidRequest);
}

export function assertValidPolicy(policy: PlacementPolicy): void {
  if (!Object.hasOwn(WEIGHERS, policy.weigher)) {
    throw new SchedulerError({
      code: SchedulerErrorCode.InvalidPolicy,
      resource: 'policy weigher',
      expected: Object.keys(WEIGHERS).join(' | '),
      actual: String(policy.weigher),
      action: 'choose one of the known weighers',
    });
  }
  assertRatio('policy cpuOvercommitRatio', policy.cpuOvercommitRatio, SchedulerErrorCode.InvalidPolicy);
  assertRatio('policy memoryOvercommitRatio', policy.memoryOvercommitRatio, SchedulerErrorCode.InvalidPolicy);
}

function assertSize(resource: string, value: number, code: SchedulerErrorCode): void {
  if (!isIndexableSize(value)) {
    throw new SchedulerError({
      code,
      resource,
      expected: 'a whole number from 0 to 2^50',
      actual: String(value),
      action: 'validate sizes at the service edge before calling the scheduler',
    });
  }
}

function assertRatio(resource: string, value: number, code: SchedulerErrorCode): void {
  if (!(value >= MIN_RATIO && value <= MAX_RATIO)) {
    throw new SchedulerError({
      code,
      resource,
      expected: 'a ratio from 1/1024 to 1024',
      actual: String(value),
      action: 'leave the ratio out to use the policy default',
    });
  }
}
