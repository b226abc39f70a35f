import { status as GrpcStatus } from '@grpc/grpc-js';

/** The four OpenStack services this front serves; each renders errors in its own shape. */
export type OpenStackService = 'identity' | 'compute' | 'image' | 'network';

/**
 * An error as an OpenStack service answers it. `kind` overrides the shape's name where the service has
 * a more precise one (Neutron's "NetworkNotFound", Nova's "conflictingRequest" for a 400-range code).
 */
export class OpenStackError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly kind?: string,
  ) {
    super(message);
  }
}

const reasons: Record<number, string> = {
  400: 'Bad Request',
  401: 'Unauthorized',
  403: 'Forbidden',
  404: 'Not Found',
  405: 'Method Not Allowed',
  406: 'Not Acceptable',
  409: 'Conflict',
  411: 'Length Required',
  413: 'Request Entity Too Large',
  415: 'Unsupported Media Type',
  500: 'Internal Server Error',
  501: 'Not Implemented',
  503: 'Service Unavailable',
};

/** Nova's fault names (nova/api/openstack/wsgi.py Fault._fault_names). */
const novaFaults: Record<number, string> = {
  400: 'badRequest',
  401: 'unauthorized',
  403: 'forbidden',
  404: 'itemNotFound',
  405: 'badMethod',
  409: 'conflictingRequest',
  413: 'overLimit',
  415: 'badMediaType',
  429: 'overLimit',
  501: 'notImplemented',
  503: 'serviceUnavailable',
};

export interface RenderedError {
  status: number;
  contentType: string;
  body: string;
}

/**
 * The error body of each service. A 401 always has Keystone's shape: keystonemiddleware answers it in
 * front of every real service.
 */
export function renderError(service: OpenStackService, e: OpenStackError): RenderedError {
  const status = e.status;
  const title = reasons[status] ?? 'Error';
  const json = (value: unknown) => ({
    status,
    contentType: 'application/json',
    body: JSON.stringify(value),
  });
  if (service === 'identity' || status === 401)
    return json({ error: { code: status, title, message: e.message } });
  if (service === 'compute') {
    const name = e.kind ?? novaFaults[status] ?? 'computeFault';
    return json({ [name]: { code: status, message: e.message } });
  }
  if (service === 'network')
    return json({
      NeutronError: { type: e.kind ?? `HTTP${title.replace(/ /g, '')}`, message: e.message, detail: '' },
    });
  // Glance (webob) answers errors as plain text: "<status> <reason>\n\n<message>\n\n   ".
  return {
    status,
    contentType: 'text/plain; charset=UTF-8',
    body: `${status} ${title}\n\n${e.message}\n\n   `,
  };
}

/** A pool service's gRPC error as the HTTP status OpenStack would give; unknown failures become 500. */
export function fromGrpc(e: unknown): OpenStackError | undefined {
  const err = e as { code?: number; details?: string; message?: string };
  if (typeof err?.code !== 'number' || err.code < 1 || err.code > 16) return undefined;
  const message = err.details || err.message || 'the pool refused the request';
  switch (err.code) {
    case GrpcStatus.INVALID_ARGUMENT:
    case GrpcStatus.OUT_OF_RANGE:
      return new OpenStackError(400, message);
    case GrpcStatus.NOT_FOUND:
      return new OpenStackError(404, message);
    case GrpcStatus.ALREADY_EXISTS:
    case GrpcStatus.FAILED_PRECONDITION:
    case GrpcStatus.ABORTED:
      return new OpenStackError(409, message);
    case GrpcStatus.PERMISSION_DENIED:
    case GrpcStatus.RESOURCE_EXHAUSTED:
      // Nova answers quota and policy refusals with 403.
      return new OpenStackError(403, message);
    case GrpcStatus.UNAUTHENTICATED:
      return new OpenStackError(401, message);
    case GrpcStatus.UNIMPLEMENTED:
      return new OpenStackError(501, message);
    case GrpcStatus.UNAVAILABLE:
    case GrpcStatus.DEADLINE_EXCEEDED:
      return new OpenStackError(503, message);
    default:
      return undefined;
  }
}

export const notFound = (what: string) => new OpenStackError(404, what);
export const badRequest = (what: string) => new OpenStackError(400, what);
