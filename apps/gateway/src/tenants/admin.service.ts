import { randomUUID } from 'node:crypto';
import * as fs from 'node:fs';
import { DataSource, EntityManager } from 'typeorm';
import { gatewayV1 } from '@flotilla/contracts';
import {
  DomainError,
  ErrorCode,
  failedPrecondition,
  invalidArgument,
  isUuid,
  notFound,
  parsePage,
  validateIntRange,
  validateLabels,
  validateName,
  validateRequestId,
} from '@flotilla/domain';
import { Logger, requireRole, roles, type Role, fetchPage } from '@flotilla/platform';
import { TenantRow, TokenRow } from '../persistence';
import { newSecret, Principal, TokenAuth } from '../auth/token-auth';

const tenantNamePattern = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;

/** Tenants and API tokens: pool-admin only, except WhoAmI. */
export class AdminService {
  constructor(
    private readonly dataSource: DataSource,
    private readonly auth: TokenAuth,
    private readonly countVms: (tenantId: string) => Promise<number>,
  ) {}

  /** At first start: the admin tenant and a pool-admin token, whose secret is shown once. */
  async bootstrap(logger: Logger, tokenFile: string): Promise<void> {
    const secret = await this.dataSource.transaction(async (m) => {
      await m.query(`SELECT pg_advisory_xact_lock(hashtext('flotilla.gateway.bootstrap'))`);
      if ((await m.count(TokenRow)) > 0) return undefined;
      const tenant = await this.insertTenant(m, {
        name: 'admin',
        description: 'operators of this installation',
      });
      const { secret } = await this.insertToken(m, {
        name: 'admin',
        tenantId: tenant.id,
        role: 'pool-admin',
        ttlSeconds: 0,
      });
      return secret;
    });
    if (!secret) return;
    if (tokenFile) fs.writeFileSync(tokenFile, `${secret}\n`, { mode: 0o600 });
    // The one time the admin secret is printed: stdout, not the structured log.
    process.stdout.write(
      `\nFlotilla admin token (shown once${tokenFile ? `, also in ${tokenFile}` : ''}):\n  ${secret}\n\n`,
    );
    logger.info({ tokenFile: tokenFile || undefined }, 'created the admin tenant and its pool-admin token');
  }

  async createTenant(p: Principal, req: gatewayV1.CreateTenantRequest): Promise<TenantRow> {
    requireRole(p, 'pool-admin', 'creating a tenant');
    const requestId = validateRequestId(req.requestId);
    if (!tenantNamePattern.test(req.name))
      throw invalidArgument(
        'name',
        'must be 1..63 lowercase letters, digits or "-", not starting or ending with "-"',
      );
    if (req.description.length > 1024) throw invalidArgument('description', 'is longer than 1024 characters');
    const labels = validateLabels('labels', req.labels);
    return this.dataSource.transaction(async (m) => {
      if (requestId) {
        const earlier = await m.findOneBy(TenantRow, { requestId });
        if (earlier) return earlier;
      }
      if (await m.existsBy(TenantRow, { name: req.name }))
        throw new DomainError(ErrorCode.AlreadyExists, `tenant ${req.name} already exists`, {
          field: 'name',
        });
      return this.insertTenant(m, { name: req.name, description: req.description, labels, requestId });
    });
  }

  async getTenant(p: Principal, idOrName: string): Promise<TenantRow> {
    if (p.role !== 'pool-admin') {
      const own = await findTenant(this.dataSource.manager, p.tenantId);
      if (own.id === idOrName || own.name === idOrName) return own;
      requireRole(p, 'pool-admin', 'reading another tenant');
    }
    return findTenant(this.dataSource.manager, idOrName);
  }

  async listTenants(
    p: Principal,
    page: gatewayV1.ListTenantsRequest['page'],
  ): Promise<{ tenants: TenantRow[]; nextPageToken: string }> {
    requireRole(p, 'pool-admin', 'listing tenants');
    const spec = parsePage(page, ['name']);
    const qb = this.dataSource.manager.createQueryBuilder(TenantRow, 't');
    for (const [i, { value }] of spec.filter.entries()) qb.andWhere(`t.name = :f${i}`, { [`f${i}`]: value });
    const { rows, nextPageToken } = await fetchPage(qb.orderBy('t.name'), spec, page?.filter);
    return { tenants: rows, nextPageToken };
  }

  async deleteTenant(p: Principal, idOrName: string): Promise<void> {
    requireRole(p, 'pool-admin', 'deleting a tenant');
    const tenant = await findTenant(this.dataSource.manager, idOrName);
    if (tenant.id === p.tenantId)
      throw failedPrecondition('you cannot delete the tenant of the token you are using');
    const vms = await this.countVms(tenant.id);
    if (vms > 0) throw failedPrecondition(`tenant ${tenant.name} owns ${vms} VM(s): delete them first`);
    const tokens = await this.dataSource.transaction(async (m) => {
      const tokens = await m.findBy(TokenRow, { tenantId: tenant.id });
      await m.delete(TokenRow, { tenantId: tenant.id });
      await m.delete(TenantRow, { id: tenant.id });
      return tokens;
    });
    for (const t of tokens) this.auth.forget(t.id);
  }

  async createToken(
    p: Principal,
    req: gatewayV1.CreateTokenRequest,
  ): Promise<{ token: TokenRow; secret: string }> {
    requireRole(p, 'pool-admin', 'creating a token');
    const requestId = validateRequestId(req.requestId);
    const name = req.name ? validateName('name', req.name) : 'token';
    const role = roleFromProto(req.role);
    const ttlSeconds = validateIntRange('ttl_seconds', req.ttlSeconds, 0, 31_622_400, ' s');
    if (!req.tenantId)
      throw invalidArgument('tenant_id', 'is required: the tenant id or name the token acts for');
    return this.dataSource.transaction(async (m) => {
      if (requestId && (await m.existsBy(TokenRow, { requestId })))
        throw new DomainError(
          ErrorCode.AlreadyExists,
          'a token was already created with this request_id; its secret was shown then and cannot be shown again',
          { field: 'request_id' },
        );
      const tenant = await findTenant(m, req.tenantId, 'tenant_id');
      return this.insertToken(m, { name, tenantId: tenant.id, role, ttlSeconds, requestId });
    });
  }

  async listTokens(
    p: Principal,
    page: gatewayV1.ListTokensRequest['page'],
  ): Promise<{ tokens: TokenRow[]; nextPageToken: string }> {
    requireRole(p, 'pool-admin', 'listing tokens');
    const spec = parsePage(page, ['tenant_id', 'role']);
    const qb = this.dataSource.manager.createQueryBuilder(TokenRow, 't');
    for (const [i, { field, value }] of spec.filter.entries()) {
      if (field === 'tenant_id') qb.andWhere(`t.tenant_id::text = :f${i}`, { [`f${i}`]: value });
      else
        qb.andWhere(`t.role = :f${i}`, {
          [`f${i}`]: value
            .toLowerCase()
            .replace(/^role_/, '')
            .replace(/_/g, '-'),
        });
    }
    const { rows, nextPageToken } = await fetchPage(
      qb.orderBy('t.created_at').addOrderBy('t.id'),
      spec,
      page?.filter,
    );
    return { tokens: rows, nextPageToken };
  }

  async revokeToken(p: Principal, id: string): Promise<TokenRow> {
    requireRole(p, 'pool-admin', 'revoking a token');
    if (!isUuid(id)) throw invalidArgument('id', 'is not a token id (a UUID): see flotilla token list');
    const token = await this.dataSource.manager.findOneBy(TokenRow, { id: id.toLowerCase() });
    if (!token) throw notFound('token', id);
    await this.dataSource.manager.update(
      TokenRow,
      { id: token.id },
      { revoked: true, version: token.version + 1 },
    );
    this.auth.forget(token.id);
    return { ...token, revoked: true };
  }

  async whoAmI(p: Principal): Promise<{ token: TokenRow; tenantName: string }> {
    const token = await this.dataSource.manager.findOneByOrFail(TokenRow, { id: p.tokenId });
    const tenant = await this.dataSource.manager.findOneBy(TenantRow, { id: p.tenantId });
    return { token, tenantName: tenant?.name ?? '' };
  }

  private async insertTenant(
    m: EntityManager,
    t: { name: string; description: string; labels?: Record<string, string>; requestId?: string },
  ): Promise<TenantRow> {
    const id = randomUUID();
    await m.insert(TenantRow, {
      id,
      name: t.name,
      description: t.description,
      labels: t.labels ?? {},
      requestId: t.requestId ?? null,
      version: 1,
    });
    return m.findOneByOrFail(TenantRow, { id });
  }

  private async insertToken(
    m: EntityManager,
    t: { name: string; tenantId: string; role: Role; ttlSeconds: number; requestId?: string },
  ): Promise<{ token: TokenRow; secret: string }> {
    const { secret, hash, prefix } = newSecret();
    const id = randomUUID();
    await m.insert(TokenRow, {
      id,
      name: t.name,
      tenantId: t.tenantId,
      role: t.role,
      secretHash: hash,
      prefix,
      expiresAt: t.ttlSeconds ? new Date(Date.now() + t.ttlSeconds * 1000) : null,
      lastUsedAt: null,
      revoked: false,
      requestId: t.requestId ?? null,
      version: 1,
    });
    return { token: await m.findOneByOrFail(TokenRow, { id }), secret };
  }
}

/** A tenant by id or name; NOT_FOUND naming `field` otherwise. */
export async function findTenant(m: EntityManager, idOrName: string, field = 'id'): Promise<TenantRow> {
  const tenant = isUuid(idOrName)
    ? await m.findOneBy(TenantRow, { id: idOrName.toLowerCase() })
    : idOrName
      ? await m.findOneBy(TenantRow, { name: idOrName })
      : null;
  if (!tenant) {
    const e = notFound('tenant', idOrName);
    throw new DomainError(e.code, e.message, { ...e.fields, field });
  }
  return tenant;
}

export function roleFromProto(role: gatewayV1.Role | string): Role {
  const name = String(role)
    .replace(/^ROLE_/, '')
    .toLowerCase()
    .replace(/_/g, '-');
  if (!(roles as readonly string[]).includes(name))
    throw invalidArgument(
      'role',
      `must be one of ${roles.map((r) => `ROLE_${r.toUpperCase().replace(/-/g, '_')}`).join(', ')}`,
    );
  return name as Role;
}

export function roleToProto(role: Role): gatewayV1.Role {
  return `ROLE_${role.toUpperCase().replace(/-/g, '_')}` as gatewayV1.Role;
}
