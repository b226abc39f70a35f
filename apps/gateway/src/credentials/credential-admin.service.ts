import { randomUUID } from 'node:crypto';
import { DataSource, QueryFailedError } from 'typeorm';
import { gatewayV1 } from '@flotilla/contracts';
import {
  DomainError,
  ErrorCode,
  invalidArgument,
  isUuid,
  notFound,
  parsePage,
  truncate,
  validateIntRange,
  validateRequestId,
} from '@flotilla/domain';
import { fetchPage, requireRole } from '@flotilla/platform';
import type { Principal } from '../auth/token-auth';
import { findTenant, roleFromProto } from '../tenants/admin.service';
import { CredentialKindName, CredentialRow } from './credential.entity';
import {
  accessKeyIdPattern,
  hashPassword,
  newAccessKeyId,
  newEc2Secret,
  newNameSuffix,
  newPassword,
} from './credential-secrets';
import type { SecretBox } from './secret-key';

const namePattern = /^[A-Za-z0-9._@-]{1,63}$/;
const kinds: Record<string, CredentialKindName> = {
  [gatewayV1.CredentialKind.CREDENTIAL_KIND_EC2]: 'ec2',
  [gatewayV1.CredentialKind.CREDENTIAL_KIND_OPENSTACK]: 'openstack',
};

/**
 * Credentials of the compatibility fronts (EC2 access keys, OpenStack passwords): pool-admin only, like API
 * tokens. A secret is returned once, at creation.
 */
export class CredentialAdmin {
  constructor(
    private readonly dataSource: DataSource,
    private readonly box: SecretBox,
    /** The store whose cache a revoke clears at once. */
    private readonly store: { forget(credentialId: string): void },
  ) {}

  async create(
    p: Principal,
    req: gatewayV1.CreateCredentialRequest,
  ): Promise<{ credential: CredentialRow; secret: string }> {
    requireRole(p, 'pool-admin', 'creating a credential');
    const requestId = validateRequestId(req.requestId);
    const kind = kinds[req.kind];
    if (!kind) throw invalidArgument('kind', 'must be CREDENTIAL_KIND_EC2 or CREDENTIAL_KIND_OPENSTACK');
    if (req.name && !namePattern.test(req.name))
      throw invalidArgument(
        'name',
        `${JSON.stringify(truncate(req.name, 40))} is not valid: use 1..63 letters, digits, "-", "_", "." or "@"`,
      );
    const role = roleFromProto(req.role);
    const ttlSeconds = validateIntRange('ttl_seconds', req.ttlSeconds, 0, 31_622_400, ' s');
    if (!req.tenantId)
      throw invalidArgument('tenant_id', 'is required: the tenant id or name the credential acts for');
    const id = randomUUID();
    const accessKeyId = kind === 'ec2' ? newAccessKeyId() : null;
    const secret = kind === 'ec2' ? newEc2Secret() : newPassword();
    // Hashed before the transaction: scrypt is deliberately slow.
    const passwordHash = kind === 'openstack' ? await hashPassword(secret) : null;
    try {
      const credential = await this.dataSource.transaction(async (m) => {
        if (requestId && (await m.existsBy(CredentialRow, { requestId })))
          throw new DomainError(
            ErrorCode.AlreadyExists,
            'a credential was already created with this request_id; its secret was shown then and cannot be shown again',
            { field: 'request_id' },
          );
        const tenant = await findTenant(m, req.tenantId, 'tenant_id');
        const name = req.name || accessKeyId || `${tenant.name.slice(0, 54)}-${newNameSuffix()}`;
        if (await m.existsBy(CredentialRow, { kind, name, revoked: false })) throw nameTaken(kind, name);
        await m.insert(CredentialRow, {
          id,
          name,
          kind,
          tenantId: tenant.id,
          role,
          accessKeyId,
          sealedSecret: kind === 'ec2' ? this.box.seal(secret, id) : null,
          passwordHash,
          expiresAt: ttlSeconds ? new Date(Date.now() + ttlSeconds * 1000) : null,
          lastUsedAt: null,
          revoked: false,
          requestId: requestId ?? null,
          version: 1,
        });
        return m.findOneByOrFail(CredentialRow, { id });
      });
      return { credential, secret };
    } catch (e) {
      // Two creates racing past the checks above: the unique indexes decide.
      if (e instanceof QueryFailedError && (e.driverError as { code?: string }).code === '23505')
        throw new DomainError(
          ErrorCode.AlreadyExists,
          `a credential with this ${String(e.message).includes('request_id') ? 'request_id' : 'name'} was created at the same time`,
        );
      throw e;
    }
  }

  async list(
    p: Principal,
    page: gatewayV1.ListCredentialsRequest['page'],
  ): Promise<{ credentials: CredentialRow[]; nextPageToken: string }> {
    requireRole(p, 'pool-admin', 'listing credentials');
    const spec = parsePage(page, ['tenant_id', 'kind']);
    const qb = this.dataSource.manager.createQueryBuilder(CredentialRow, 'c');
    for (const [i, { field, value }] of spec.filter.entries()) {
      if (field === 'tenant_id') qb.andWhere(`c.tenant_id::text = :f${i}`, { [`f${i}`]: value });
      else qb.andWhere(`c.kind = :f${i}`, { [`f${i}`]: kindFilter(value) });
    }
    const { rows, nextPageToken } = await fetchPage(
      qb.orderBy('c.created_at').addOrderBy('c.id'),
      spec,
      page?.filter,
    );
    return { credentials: rows, nextPageToken };
  }

  /** By credential id or EC2 access key id; revoking twice is harmless. */
  async revoke(p: Principal, id: string): Promise<CredentialRow> {
    requireRole(p, 'pool-admin', 'revoking a credential');
    const where = isUuid(id)
      ? { id: id.toLowerCase() }
      : accessKeyIdPattern.test(id)
        ? { accessKeyId: id }
        : undefined;
    if (!where)
      throw invalidArgument(
        'id',
        'is neither a credential id (a UUID) nor an EC2 access key id (AKIA…): see flotilla credential list',
      );
    const credential = await this.dataSource.manager.findOneBy(CredentialRow, where);
    if (!credential) throw notFound('credential', id);
    await this.dataSource.manager.update(
      CredentialRow,
      { id: credential.id },
      { revoked: true, version: credential.version + 1 },
    );
    this.store.forget(credential.id);
    return { ...credential, revoked: true, version: credential.version + 1 };
  }
}

function nameTaken(kind: CredentialKindName, name: string): DomainError {
  return new DomainError(
    ErrorCode.AlreadyExists,
    `an ${kind === 'ec2' ? 'EC2' : 'OpenStack'} credential named ${name} already exists: choose another name, or revoke that one first`,
    { field: 'name' },
  );
}

/** "ec2", "openstack" or the enum names. */
function kindFilter(value: string): CredentialKindName {
  const kind =
    kinds[value.toUpperCase()] ?? (Object.values(kinds) as string[]).find((k) => k === value.toLowerCase());
  if (!kind)
    throw invalidArgument(
      'page.filter',
      `kind must be ec2 or openstack; got ${JSON.stringify(truncate(value, 40))}`,
    );
  return kind as CredentialKindName;
}
