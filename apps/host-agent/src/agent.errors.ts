import { DomainError, ErrorCode } from '@flotilla/domain';
import { DriverError } from '@flotilla/hypervisor';

/** The driver's errors in the domain's vocabulary: one mapping for the agent's VM and storage services. */
export function fromDriverError(e: DriverError): DomainError {
  const code = {
    'not-found': ErrorCode.NotFound,
    'invalid-state': ErrorCode.FailedPrecondition,
    capacity: ErrorCode.ResourceExhausted,
    'invalid-spec': ErrorCode.InvalidArgument,
    unsupported: ErrorCode.Unimplemented,
    failed: ErrorCode.Internal,
    timeout: ErrorCode.DeadlineExceeded,
  }[e.kind];
  return new DomainError(code, e.message);
}

/** Runs driver work, its DriverErrors turned into domain errors (the gRPC edge maps those). */
export async function withDriverErrors<T>(work: () => Promise<T>): Promise<T> {
  try {
    return await work();
  } catch (e) {
    throw e instanceof DriverError ? fromDriverError(e) : e;
  }
}
