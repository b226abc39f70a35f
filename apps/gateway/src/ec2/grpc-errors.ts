import { status } from '@grpc/grpc-js';
import { isGrpcStatus, Logger } from '@flotilla/platform';
import { Ec2Error } from './errors';

/**
 * The one place where the pool's gRPC errors become EC2 errors. `subject` says what the call was about, so
 * NOT_FOUND names the right resource (InvalidInstanceID.NotFound, InvalidAMIID.NotFound, …) and
 * INVALID_ARGUMENT the EC2 parameter the client sent. Unknown errors are logged once here and answered as
 * InternalError without internals.
 */
export interface ErrorSubject {
  /** EC2's not-found code for the resource, e.g. "InvalidInstanceID.NotFound". */
  notFoundCode: string;
  /** The message for not found, e.g. "The instance ID 'i-…' does not exist". */
  notFoundMessage: string;
  /** The EC2 parameter an INVALID_ARGUMENT is about, e.g. "InstanceType". */
  parameter?: string;
}

export function ec2ErrorFromGrpc(e: unknown, subject: ErrorSubject, logger: Logger): Ec2Error {
  if (e instanceof Ec2Error) return e;
  if (!isGrpcStatus(e)) {
    logger.error({ err: e }, 'EC2 front: unexpected error');
    return internalError();
  }
  const details = e.details || e.message;
  switch (e.code) {
    case status.NOT_FOUND:
      return new Ec2Error(subject.notFoundCode, subject.notFoundMessage);
    case status.FAILED_PRECONDITION:
      return new Ec2Error('IncorrectInstanceState', details);
    case status.RESOURCE_EXHAUSTED:
      return /quota/i.test(details)
        ? new Ec2Error('InstanceLimitExceeded', details)
        : new Ec2Error('InsufficientInstanceCapacity', details, 500);
    case status.PERMISSION_DENIED:
      return new Ec2Error(
        'UnauthorizedOperation',
        `You are not authorized to perform this operation: ${details}`,
        403,
      );
    case status.INVALID_ARGUMENT: {
      const field = e.metadata?.get('x-flotilla-field')[0];
      const parameter = subject.parameter ?? (field ? String(field) : 'the request');
      return new Ec2Error('InvalidParameterValue', `Invalid value for ${parameter}: ${details}`);
    }
    case status.UNAVAILABLE:
    case status.DEADLINE_EXCEEDED:
      return new Ec2Error('Unavailable', 'The service is unavailable. Please try again shortly.', 503);
    default:
      logger.error({ code: status[e.code], details }, 'EC2 front: the pool answered an unexpected error');
      return internalError();
  }
}

export function internalError(): Ec2Error {
  return new Ec2Error('InternalError', 'An internal error has occurred', 500);
}
