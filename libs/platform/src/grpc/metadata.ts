import { Metadata } from '@grpc/grpc-js';
import { timingSafeEqual, createHash } from 'node:crypto';
import { DomainError, ErrorCode } from '@flotilla/domain';

/** Metadata keys Flotilla services exchange. */
export const md = {
  requestId: 'x-request-id',
  serviceToken: 'x-flotilla-service-token',
  tenantId: 'x-flotilla-tenant-id',
  role: 'x-flotilla-role',
  authorization: 'authorization',
} as const;

export type Role =
  'pool-admin' | 'pool-operator' | 'vm-power-admin' | 'vm-admin' | 'vm-operator' | 'read-only';

/** Roles from most to least powerful (XAPI RBAC): a role may do what every role after it may. */
export const roles: readonly Role[] = [
  'pool-admin',
  'pool-operator',
  'vm-power-admin',
  'vm-admin',
  'vm-operator',
  'read-only',
];

export function roleAtLeast(actual: Role, required: Role): boolean {
  return roles.indexOf(actual) <= roles.indexOf(required);
}

/** Who is calling a pool service: the gateway on behalf of a tenant, or another service. */
export interface Caller {
  tenantId: string;
  role: Role;
  /** pool-admin and pool-operator act across tenants. */
  crossTenant: boolean;
}

const first = (m: Metadata, key: string): string | undefined => {
  const v = m.get(key)[0];
  return v === undefined ? undefined : String(v);
};

export function metadataValue(m: Metadata | undefined, key: string): string | undefined {
  return m ? first(m, key) : undefined;
}

/** Checks the caller's service identity and reads the tenant and role the gateway vouched for. */
export class ServiceIdentity {
  private readonly expected: Buffer;

  constructor(serviceToken: string) {
    this.expected = createHash('sha256').update(serviceToken).digest();
  }

  verify(m: Metadata): void {
    const presented = first(m, md.serviceToken);
    const ok =
      presented !== undefined &&
      timingSafeEqual(createHash('sha256').update(presented).digest(), this.expected);
    if (!ok)
      throw new DomainError(
        ErrorCode.Unauthenticated,
        'this is an internal Flotilla service: call the gateway with a bearer token instead',
      );
  }

  caller(m: Metadata): Caller {
    this.verify(m);
    const role = (first(m, md.role) ?? 'pool-admin') as Role;
    if (!roles.includes(role)) throw new DomainError(ErrorCode.PermissionDenied, `unknown role ${role}`);
    const tenantId = first(m, md.tenantId) ?? '';
    return { tenantId, role, crossTenant: role === 'pool-admin' || role === 'pool-operator' };
  }
}

export function requireRole(caller: Caller, required: Role, action: string): void {
  if (!roleAtLeast(caller.role, required))
    throw new DomainError(
      ErrorCode.PermissionDenied,
      `${action} needs role ${required} or above; this token has ${caller.role}`,
    );
}
