import { Metadata } from '@grpc/grpc-js';
import { createHash, randomBytes } from 'node:crypto';
import { DataSource } from 'typeorm';
import { DomainError, ErrorCode } from '@flotilla/domain';
import { Caller, md } from '@flotilla/platform';
import { TokenRow } from '../persistence';

/** An authenticated gateway caller: the tenant and role of the token used. */
export interface Principal extends Caller {
  tokenId: string;
}

const cacheTtlMs = 5000;
const lastUsedEveryMs = 60_000;
const tokenPattern = /^flt_[A-Za-z0-9_-]{43}$/;

export function newSecret(): { secret: string; hash: string; prefix: string } {
  const secret = `flt_${randomBytes(32).toString('base64url')}`;
  return { secret, hash: hashSecret(secret), prefix: secret.slice(0, 10) };
}

/** The principal a token or credential row acts as: pool-admin and pool-operator act across tenants. */
export function principalOf(row: Pick<TokenRow, 'id' | 'tenantId' | 'role'>): Principal {
  return {
    tokenId: row.id,
    tenantId: row.tenantId,
    role: row.role,
    crossTenant: row.role === 'pool-admin' || row.role === 'pool-operator',
  };
}

/** The secret has 256 random bits, so one sha256 is enough; it is what the database keeps. */
export function hashSecret(secret: string): string {
  return createHash('sha256').update(secret).digest('hex');
}

/**
 * Bearer-token authentication. Valid tokens are cached for a few seconds so a call costs no database read;
 * a revoke on this gateway clears the cache at once (other gateways within cacheTtlMs).
 */
export class TokenAuth {
  private readonly cache = new Map<string, { principal: Principal; expiresAt: number; until: number }>();
  private readonly lastUsedWritten = new Map<string, number>();

  constructor(private readonly dataSource: DataSource) {}

  async authenticate(metadata: Metadata): Promise<Principal> {
    const header = metadata.get(md.authorization)[0];
    if (header === undefined)
      throw new DomainError(
        ErrorCode.Unauthenticated,
        'no bearer token: send metadata "authorization: Bearer <token>" (flotilla token create)',
      );
    const match = /^Bearer (\S+)$/i.exec(String(header));
    if (!match || !tokenPattern.test(match[1]))
      throw new DomainError(ErrorCode.Unauthenticated, 'malformed authorization: expected "Bearer flt_…"');
    const hash = hashSecret(match[1]);
    const now = Date.now();
    const hit = this.cache.get(hash);
    if (hit && hit.until > now && hit.expiresAt > now) return hit.principal;
    const row = await this.dataSource.manager.findOneBy(TokenRow, { secretHash: hash });
    if (!row || row.revoked || (row.expiresAt && row.expiresAt.getTime() <= now))
      throw new DomainError(ErrorCode.Unauthenticated, 'the bearer token is unknown, revoked or expired');
    const principal = principalOf(row);
    this.cache.set(hash, {
      principal,
      expiresAt: row.expiresAt?.getTime() ?? Infinity,
      until: now + cacheTtlMs,
    });
    this.touch(row.id, now);
    return principal;
  }

  forget(tokenId: string): void {
    for (const [hash, entry] of this.cache) if (entry.principal.tokenId === tokenId) this.cache.delete(hash);
  }

  /** Records use at most once a minute per token, off the request path. */
  private touch(tokenId: string, now: number): void {
    if ((this.lastUsedWritten.get(tokenId) ?? 0) + lastUsedEveryMs > now) return;
    this.lastUsedWritten.set(tokenId, now);
    void this.dataSource.manager
      .update(TokenRow, { id: tokenId }, { lastUsedAt: new Date(now) })
      .catch(() => undefined);
  }
}

/** Metadata the gateway sends to pool services on behalf of a principal. */
export function upstreamMetadata(principal: Principal, incoming: Metadata): Metadata {
  const requestId = incoming.get(md.requestId)[0];
  return callerMetadata(principal, requestId ? String(requestId) : undefined);
}

/** Metadata that acts as a tenant with a role towards a pool service; requestId is kept to 128 characters. */
export function callerMetadata(caller: Pick<Principal, 'tenantId' | 'role'>, requestId?: string): Metadata {
  const out = new Metadata();
  out.set(md.tenantId, caller.tenantId);
  out.set(md.role, caller.role);
  if (requestId) out.set(md.requestId, requestId.slice(0, 128));
  return out;
}
