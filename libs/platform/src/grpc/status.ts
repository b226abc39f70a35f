import { Metadata, status } from '@grpc/grpc-js';
import { DomainError, ErrorCode, truncate } from '@flotilla/domain';

/** The error shape grpc-js sends as a status: code, details (the message) and trailing metadata. */
export interface GrpcStatusError extends Error {
  code: status;
  details: string;
  metadata: Metadata;
}

/** One mapping from domain errors to gRPC codes; a new ErrorCode fails the build here until it is mapped. */
export function grpcCodeOf(code: ErrorCode): status {
  switch (code) {
    case ErrorCode.InvalidArgument:
      return status.INVALID_ARGUMENT;
    case ErrorCode.NotFound:
      return status.NOT_FOUND;
    case ErrorCode.AlreadyExists:
      return status.ALREADY_EXISTS;
    case ErrorCode.FailedPrecondition:
      return status.FAILED_PRECONDITION;
    case ErrorCode.ResourceExhausted:
      return status.RESOURCE_EXHAUSTED;
    case ErrorCode.Conflict:
      return status.ABORTED;
    case ErrorCode.Unavailable:
      return status.UNAVAILABLE;
    case ErrorCode.PermissionDenied:
      return status.PERMISSION_DENIED;
    case ErrorCode.Unauthenticated:
      return status.UNAUTHENTICATED;
    case ErrorCode.DeadlineExceeded:
      return status.DEADLINE_EXCEEDED;
    case ErrorCode.Cancelled:
      return status.CANCELLED;
    case ErrorCode.OutOfRange:
      return status.OUT_OF_RANGE;
    case ErrorCode.Unimplemented:
      return status.UNIMPLEMENTED;
    case ErrorCode.Internal:
      return status.INTERNAL;
    default: {
      const unmapped: never = code;
      throw new Error(`unmapped error code ${String(unmapped)}`);
    }
  }
}

const domainCodeByGrpc = new Map<number, ErrorCode>(
  Object.values(ErrorCode).map((c) => [grpcCodeOf(c), c] as [number, ErrorCode]),
);

/** Reads a status received from another service back into a domain error (for operation records). */
export function domainErrorFromGrpc(e: unknown): DomainError {
  const err = e as Partial<GrpcStatusError>;
  const code = typeof err.code === 'number' ? domainCodeByGrpc.get(err.code) : undefined;
  if (code) {
    const field = err.metadata?.get?.('x-flotilla-field')?.[0];
    return new DomainError(
      code,
      err.details || err.message || 'error',
      field ? { field: String(field) } : {},
    );
  }
  return new DomainError(ErrorCode.Internal, err instanceof Error ? err.message : String(e));
}

/** Builds the status a handler answers with. Messages are bounded: they travel in a header. */
export function toGrpcStatus(e: DomainError): GrpcStatusError {
  const metadata = new Metadata();
  if (e.fields.field) metadata.set('x-flotilla-field', truncate(e.fields.field, 200));
  const details = truncate(e.message, 2000);
  return Object.assign(new Error(details), { code: grpcCodeOf(e.code), details, metadata });
}

export function grpcStatus(code: status, message: string): GrpcStatusError {
  const details = truncate(message, 2000);
  return Object.assign(new Error(details), { code, details, metadata: new Metadata() });
}

export function isGrpcStatus(e: unknown, code?: status): e is GrpcStatusError {
  return (
    typeof (e as GrpcStatusError)?.code === 'number' &&
    (code === undefined || (e as GrpcStatusError).code === code)
  );
}
