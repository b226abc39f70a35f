/**
 * Domain errors: what went wrong in the model's terms. The platform maps each code to one gRPC status in one
 * place (libs/platform), so nothing here knows about transports.
 */
export enum ErrorCode {
  InvalidArgument = 'INVALID_ARGUMENT',
  NotFound = 'NOT_FOUND',
  AlreadyExists = 'ALREADY_EXISTS',
  FailedPrecondition = 'FAILED_PRECONDITION',
  ResourceExhausted = 'RESOURCE_EXHAUSTED',
  Conflict = 'CONFLICT',
  Unavailable = 'UNAVAILABLE',
  PermissionDenied = 'PERMISSION_DENIED',
  Unauthenticated = 'UNAUTHENTICATED',
  DeadlineExceeded = 'DEADLINE_EXCEEDED',
  Cancelled = 'CANCELLED',
  OutOfRange = 'OUT_OF_RANGE',
  Unimplemented = 'UNIMPLEMENTED',
  Internal = 'INTERNAL',
}

export interface ErrorFields {
  /** The resource concerned, e.g. "vm 6f1c…" or "flavor m1.huge". */
  resource?: string;
  /** The request field at fault, as a path: "memory_mib", "labels.tier". */
  field?: string;
  /** Machine-readable extras (which filter rejected how many hosts, …). */
  metadata?: Record<string, string>;
}

export class DomainError extends Error {
  constructor(
    readonly code: ErrorCode,
    message: string,
    readonly fields: ErrorFields = {},
  ) {
    super(message);
    this.name = 'DomainError';
  }
}

export const invalidArgument = (field: string, message: string): DomainError =>
  new DomainError(ErrorCode.InvalidArgument, `${field}: ${message}`, { field });

export const notFound = (kind: string, id: string): DomainError =>
  new DomainError(ErrorCode.NotFound, `${kind} ${JSON.stringify(truncate(id, 80))} not found`, {
    resource: `${kind} ${truncate(id, 80)}`,
  });

export const failedPrecondition = (message: string, fields: ErrorFields = {}): DomainError =>
  new DomainError(ErrorCode.FailedPrecondition, message, fields);

export const conflict = (kind: string, id: string): DomainError =>
  new DomainError(
    ErrorCode.Conflict,
    `${kind} ${id} was changed by someone else (etag mismatch): read it again and retry`,
    { resource: `${kind} ${id}` },
  );

/**
 * `value`, which another part of Flotilla promises (a field its answer always sets, a row its query matched).
 * A broken promise is a bug: an INTERNAL error that says which one, never a TypeError further on.
 */
export function expectPresent<T>(value: T | null | undefined, broken: string): T {
  if (value === null || value === undefined) throw new DomainError(ErrorCode.Internal, broken);
  return value;
}

export function isDomainError(e: unknown): e is DomainError {
  return e instanceof DomainError;
}

/** Bounds user input echoed in messages: a status message travels in a header. */
export function truncate(s: string, max: number): string {
  return s.length <= max ? s : `${s.slice(0, max)}…`;
}
