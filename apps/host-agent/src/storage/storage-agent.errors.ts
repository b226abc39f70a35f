import { DomainError, ErrorCode } from '@flotilla/domain';
import { DiskError, DriverError } from '@flotilla/hypervisor';
import { fromDriverError } from '../agent.errors';

/** The storage library's and the driver's errors in the domain's vocabulary (one place for this context). */
export function toDomainError(e: unknown): unknown {
  if (e instanceof DiskError) {
    const code = {
      invalid: ErrorCode.InvalidArgument,
      'not-found': ErrorCode.NotFound,
      exists: ErrorCode.AlreadyExists,
      refused: ErrorCode.FailedPrecondition,
      'in-use': ErrorCode.FailedPrecondition,
      precondition: ErrorCode.FailedPrecondition,
      'no-space': ErrorCode.ResourceExhausted,
      // The image needed more CPU or memory than any image should: the image is at fault, not the host.
      limit: ErrorCode.FailedPrecondition,
      cancelled: ErrorCode.Cancelled,
      failed: ErrorCode.Internal,
    }[e.kind];
    return new DomainError(code, e.message, e.field ? { field: e.field } : {});
  }
  if (e instanceof DriverError) return fromDriverError(e);
  if ((e as NodeJS.ErrnoException)?.code === 'ENOSPC')
    return new DomainError(
      ErrorCode.ResourceExhausted,
      'the SR file system is full: free space or extend it',
    );
  return e;
}
