import { status } from '@grpc/grpc-js';
import { CommanderError } from 'commander';

/** Exit codes scripts can rely on; documented in the top-level --help (exitCodeHelp). */
export enum ExitCode {
  Ok = 0,
  Usage = 1,
  NotFound = 2,
  Conflict = 3,
  Denied = 4,
  Unavailable = 5,
  OperationFailed = 6,
  Exhausted = 7,
  Other = 10,
  /** Ctrl-C while waiting: the operation goes on. */
  Interrupted = 130,
}

export const exitCodeHelp = `Exit codes:
  0   ok
  1   usage or configuration error (bad flags, bad profile, INVALID_ARGUMENT from the server)
  2   not found
  3   failed precondition, conflict (stale etag) or already exists
  4   unauthenticated or permission denied
  5   unavailable or deadline exceeded (the cloud cannot be reached or did not answer in time)
  6   the operation FAILED or was CANCELLED (its error is printed)
  7   resource exhausted (capacity or quota)
  10  any other error
  130 interrupted while waiting (Ctrl-C); the operation goes on`;

/** An error the CLI reports as one line with a chosen exit code. */
export class CliError extends Error {
  constructor(
    message: string,
    readonly exitCode: ExitCode,
  ) {
    super(message);
    this.name = 'CliError';
  }
}

/** The exit code for a gRPC status code; every code is listed so the mapping is a table, not a guess. */
export function exitCodeForGrpc(code: status): ExitCode {
  switch (code) {
    case status.OK:
      return ExitCode.Ok;
    case status.INVALID_ARGUMENT:
    case status.OUT_OF_RANGE:
      return ExitCode.Usage;
    case status.NOT_FOUND:
      return ExitCode.NotFound;
    case status.ALREADY_EXISTS:
    case status.FAILED_PRECONDITION:
    case status.ABORTED:
      return ExitCode.Conflict;
    case status.UNAUTHENTICATED:
    case status.PERMISSION_DENIED:
      return ExitCode.Denied;
    case status.UNAVAILABLE:
    case status.DEADLINE_EXCEEDED:
      return ExitCode.Unavailable;
    case status.RESOURCE_EXHAUSTED:
      return ExitCode.Exhausted;
    case status.CANCELLED:
    case status.UNKNOWN:
    case status.UNIMPLEMENTED:
    case status.INTERNAL:
    case status.DATA_LOSS:
      return ExitCode.Other;
    default: {
      // A code grpc-js does not know yet: still an error.
      const unmapped: never = code;
      void unmapped;
      return ExitCode.Other;
    }
  }
}

/** The name of a gRPC code as people read it: "FAILED_PRECONDITION". */
export function grpcCodeName(code: number): string {
  return (status as unknown as Record<number, string>)[code] ?? `code ${code}`;
}

interface GrpcLikeError {
  code: number;
  details?: string;
  message?: string;
  metadata?: { get(key: string): unknown[] };
}

function isGrpcLike(e: unknown): e is GrpcLikeError {
  return (
    typeof e === 'object' &&
    e !== null &&
    typeof (e as GrpcLikeError).code === 'number' &&
    ('details' in e || 'metadata' in e) &&
    !(e instanceof CommanderError)
  );
}

/** grpc-js says so when no connection could be made at all (as opposed to a service answering UNAVAILABLE). */
const connectFailure =
  /No connection established|ECONNREFUSED|EHOSTUNREACH|ENOTFOUND|Name resolution failed|waiting for (LB pick|connection)|Failed to connect/i;

export interface DescribedError {
  exitCode: ExitCode;
  /** One line, without the "flotilla: " prefix. */
  message: string;
}

/** Turns anything thrown into the one line and exit code the CLI reports; never a stack trace. */
export function describeError(e: unknown, context: { endpoint?: string } = {}): DescribedError {
  if (e instanceof CliError) return { exitCode: e.exitCode, message: oneLine(e.message) };
  if (e instanceof CommanderError)
    return { exitCode: ExitCode.Usage, message: oneLine(e.message.replace(/^error: /, '')) };
  if (isGrpcLike(e)) {
    const exitCode = exitCodeForGrpc(e.code as status);
    const details = cleanDetails(e.details || e.message || grpcCodeName(e.code));
    const fieldValue = e.metadata?.get('x-flotilla-field')?.[0];
    // Many messages already start with the field ("page.filter: unknown field"): say it once.
    const field =
      fieldValue === undefined || details.includes(String(fieldValue))
        ? ''
        : ` (field ${String(fieldValue)})`;
    if (exitCode === ExitCode.Unavailable && connectFailure.test(details)) {
      const where = context.endpoint ? ` at ${context.endpoint}` : '';
      return {
        exitCode,
        message: oneLine(
          `cannot reach the Flotilla gateway${where} (${details}). Start a local cloud with \`npx flotilla up\`, ` +
            'or point --endpoint, FLOTILLA_ENDPOINT or a profile at a running one',
        ),
      };
    }
    return { exitCode, message: oneLine(`${details}${field}`) };
  }
  if (e instanceof Error) return { exitCode: ExitCode.Other, message: oneLine(e.message) };
  return { exitCode: ExitCode.Other, message: oneLine(String(e)) };
}

/** grpc-js appends an empty "Resolution note: " to connection failures. */
export function cleanDetails(details: string): string {
  return details.replace(/\.?\s*Resolution note:\s*$/, '');
}

function oneLine(s: string): string {
  return s.replace(/\s*\n\s*/g, ' ').trim();
}
