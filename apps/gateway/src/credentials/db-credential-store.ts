import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { DataSource, FindOptionsWhere } from 'typeorm';
import { Principal, principalOf } from '../auth/token-auth';
import { TenantRow } from '../persistence';
import { CredentialRow } from './credential.entity';
import { accessKeyIdPattern, verifyPassword } from './credential-secrets';
import type { CredentialStore, OpenStackIdentity } from './credential-store';
import type { SecretBox } from './secret-key';

const cacheTtlMs = 5000;
const lastUsedEveryMs = 60_000;

interface Cached<T> {
  value: T;
  credentialId: string;
  /** The credential's own expiry (ms since the epoch; Infinity: never). */
  expiresAt: number;
  /** When this entry must be read again from the database. */
  until: number;
}

interface OpenStackUser {
  identity: OpenStackIdentity;
  passwordHash: string;
  /** HMAC of the last password that matched: a repeated login skips the deliberately slow scrypt. */
  verified?: Buffer;
}

/**
 * The credentials of the compatibility fronts, from the gateway database. Live credentials are cached for a
 * few seconds, so a SigV4 check or a Keystone token validation costs no database read in steady state; a
 * revoke through this gateway clears them at once (other gateways within cacheTtlMs), like TokenAuth.
 */
export class DbCredentialStore implements CredentialStore {
  private readonly ec2 = new Map<string, Cached<{ secret: string; principal: Principal }>>();
  private readonly users = new Map<string, Cached<OpenStackUser>>();
  private readonly identities = new Map<string, Cached<OpenStackIdentity>>();
  private readonly lastUsedWritten = new Map<string, number>();
  /** Keys the in-memory HMACs of verified passwords; never leaves this process. */
  private readonly memoryKey = randomBytes(32);

  constructor(
    private readonly dataSource: DataSource,
    private readonly box: SecretBox,
  ) {}

  async ec2Secret(accessKeyId: string): Promise<{ secret: string; principal: Principal } | undefined> {
    if (!accessKeyIdPattern.test(accessKeyId)) return undefined;
    let value = this.cached(this.ec2, accessKeyId);
    if (!value) {
      const row = await this.live({ kind: 'ec2', accessKeyId });
      if (!row?.sealedSecret) return undefined;
      value = { secret: this.box.open(row.sealedSecret, row.id), principal: principalOf(row) };
      this.ec2.set(accessKeyId, this.entry(row, value));
    }
    this.touch(value.principal.tokenId);
    return value;
  }

  async checkPassword(userName: string, password: string): Promise<OpenStackIdentity | undefined> {
    let user = this.cached(this.users, userName);
    if (!user) {
      const row = await this.live({ kind: 'openstack', name: userName });
      if (!row?.passwordHash) return undefined;
      user = { identity: await this.identityFrom(row), passwordHash: row.passwordHash };
      this.users.set(userName, this.entry(row, user));
    }
    const digest = createHmac('sha256', this.memoryKey).update(password).digest();
    if (!user.verified || !timingSafeEqual(user.verified, digest)) {
      if (!(await verifyPassword(password, user.passwordHash))) return undefined;
      user.verified = digest;
    }
    this.touch(user.identity.credentialId);
    return user.identity;
  }

  async identityOf(credentialId: string): Promise<OpenStackIdentity | undefined> {
    let identity = this.cached(this.identities, credentialId);
    if (!identity) {
      const row = await this.live({ kind: 'openstack', id: credentialId });
      if (!row) return undefined;
      identity = await this.identityFrom(row);
      this.identities.set(credentialId, this.entry(row, identity));
    }
    this.touch(credentialId);
    return identity;
  }

  /** Drops a credential from the caches (called on revoke). */
  forget(credentialId: string): void {
    for (const cache of [this.ec2, this.users, this.identities] as Map<string, Cached<unknown>>[])
      for (const [key, entry] of cache) if (entry.credentialId === credentialId) cache.delete(key);
  }

  private cached<T>(cache: Map<string, Cached<T>>, key: string): T | undefined {
    const hit = cache.get(key);
    const now = Date.now();
    return hit && hit.until > now && hit.expiresAt > now ? hit.value : undefined;
  }

  private entry<T>(row: CredentialRow, value: T): Cached<T> {
    return {
      value,
      credentialId: row.id,
      expiresAt: row.expiresAt?.getTime() ?? Infinity,
      until: Date.now() + cacheTtlMs,
    };
  }

  /** The credential matching `where`, unless it is revoked or expired. */
  private async live(where: FindOptionsWhere<CredentialRow>): Promise<CredentialRow | undefined> {
    const row = await this.dataSource.manager.findOneBy(CredentialRow, { ...where, revoked: false });
    if (!row || (row.expiresAt && row.expiresAt.getTime() <= Date.now())) return undefined;
    return row;
  }

  private async identityFrom(row: CredentialRow): Promise<OpenStackIdentity> {
    const tenant = await this.dataSource.manager.findOneBy(TenantRow, { id: row.tenantId });
    return {
      principal: principalOf(row),
      credentialId: row.id,
      userName: row.name,
      tenantName: tenant?.name ?? '',
    };
  }

  /** Records use at most once a minute per credential, off the request path. */
  private touch(credentialId: string): void {
    const now = Date.now();
    if ((this.lastUsedWritten.get(credentialId) ?? 0) + lastUsedEveryMs > now) return;
    this.lastUsedWritten.set(credentialId, now);
    void this.dataSource.manager
      .update(CredentialRow, { id: credentialId }, { lastUsedAt: new Date(now) })
      .catch(() => undefined);
  }
}
