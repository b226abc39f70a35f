import type { CredentialStore, OpenStackIdentity } from '../credentials/credential-store';
import { OpenStackError } from './errors';
import {
  CatalogOptions,
  identityVersions,
  v2AccessBody,
  v2VersionDoc,
  v3TokenBody,
  v3VersionDoc,
} from './keystone-documents';
import { signToken, verifyToken } from './keystone-token';
import { Ctx, header, isObject, json, objectAt, readJson, Reply } from './request';

export interface KeystoneOptions extends CatalogOptions {
  credentials: CredentialStore;
  tokenKey: Buffer;
  tokenTtlSeconds: number;
  now?: () => number;
}

const unauthorized = (message = 'The request you have made requires authentication.') =>
  new OpenStackError(401, message);

/**
 * Keystone v3 (password and token auth, token validation) and v2.0 (passwordCredentials and Rackspace's
 * RAX-KSKEY:apiKeyCredentials, which take the same secret). The project is the credential's Flotilla
 * tenant: a scope naming another project is refused, a request without scope is scoped to it.
 */
export class Keystone {
  private readonly now: () => number;

  constructor(private readonly o: KeystoneOptions) {
    this.now = o.now ?? Date.now;
  }

  /** The identity an X-Auth-Token stands for; 401 when missing, forged, expired or revoked. */
  async authenticate(token: string | undefined): Promise<OpenStackIdentity> {
    if (!token) throw unauthorized();
    const check = verifyToken(this.o.tokenKey, token, this.now());
    if (!check.ok)
      throw unauthorized(
        check.reason === 'expired'
          ? 'The token has expired: authenticate again.'
          : 'The request you have made requires authentication.',
      );
    const identity = await this.o.credentials.identityOf(check.payload.credentialId);
    if (!identity) throw unauthorized('The token’s credential was revoked or has expired.');
    return identity;
  }

  /** Routes under a Keystone mount; `base` is the mount's public URL (publicUrl or publicUrl/identity). */
  async handle(ctx: Ctx, base: string): Promise<Reply> {
    const [version, ...rest] = ctx.segments;
    const path = rest.join('/');
    const get = ctx.method === 'GET' || ctx.method === 'HEAD';
    if (version === undefined) {
      if (!get) throw methodNotAllowed();
      return json(300, identityVersions(base));
    }
    if (version === 'v3') {
      if (path === '') {
        if (!get) throw methodNotAllowed();
        return json(200, { version: v3VersionDoc(base) });
      }
      if (path === 'auth/tokens') {
        if (ctx.method === 'POST') return this.issueV3(ctx);
        if (get) return this.validateV3(ctx);
        throw methodNotAllowed();
      }
    }
    if (version === 'v2.0') {
      if (path === '') {
        if (!get) throw methodNotAllowed();
        return json(200, { version: v2VersionDoc(base) });
      }
      if (path === 'tokens') {
        if (ctx.method !== 'POST') throw methodNotAllowed();
        return this.issueV2(ctx);
      }
    }
    throw new OpenStackError(
      404,
      `Could not find ${ctx.method} ${ctx.req.url ?? ''}: not served by this Keystone.`,
    );
  }

  private async issueV3(ctx: Ctx): Promise<Reply> {
    const auth = objectAt(await readJson(ctx.req), 'auth');
    const identityPart = objectAt(auth, 'identity', 'auth.identity');
    const methods = identityPart.methods;
    if (!Array.isArray(methods) || methods.length === 0)
      throw new OpenStackError(
        400,
        "Invalid input: 'auth.identity.methods' must list 'password' or 'token'.",
      );
    let identity: OpenStackIdentity | undefined;
    if (methods.includes('password')) identity = await this.passwordIdentity(identityPart);
    else if (methods.includes('token')) {
      const token = objectAt(identityPart, 'token', 'auth.identity.token');
      identity = await this.authenticate(typeof token.id === 'string' ? token.id : undefined);
    } else
      throw unauthorized(
        `Unsupported authentication method(s) ${methods.join(', ')}: use password or token.`,
      );
    checkV3Scope(auth.scope, identity);
    const { token, payload } = signToken(this.o.tokenKey, {
      credentialId: identity.credentialId,
      nowMs: this.now(),
      ttlSeconds: this.o.tokenTtlSeconds,
    });
    return json(201, v3TokenBody(this.o, identity, payload, methods as string[]), {
      'x-subject-token': token,
    });
  }

  private async passwordIdentity(identityPart: Record<string, unknown>): Promise<OpenStackIdentity> {
    const password = objectAt(identityPart, 'password', 'auth.identity.password');
    const user = objectAt(password, 'user', 'auth.identity.password.user');
    if (typeof user.password !== 'string')
      throw new OpenStackError(400, "Invalid input: 'auth.identity.password.user.password' is required.");
    checkDomain(user.domain);
    let name = typeof user.name === 'string' ? user.name : undefined;
    if (name === undefined && typeof user.id === 'string')
      name = (await this.o.credentials.identityOf(user.id))?.userName;
    if (name === undefined) {
      if (typeof user.id !== 'string')
        throw new OpenStackError(400, "Invalid input: 'auth.identity.password.user' needs 'name' or 'id'.");
      throw badCredentials();
    }
    const identity = await this.o.credentials.checkPassword(name, user.password);
    if (!identity || (typeof user.id === 'string' && user.id !== identity.credentialId))
      throw badCredentials();
    return identity;
  }

  private async validateV3(ctx: Ctx): Promise<Reply> {
    await this.authenticate(header(ctx.req, 'x-auth-token'));
    const subject = header(ctx.req, 'x-subject-token');
    if (!subject)
      throw new OpenStackError(400, "Missing header 'X-Subject-Token': name the token to validate.");
    const check = verifyToken(this.o.tokenKey, subject, this.now());
    const identity = check.ok ? await this.o.credentials.identityOf(check.payload.credentialId) : undefined;
    if (!check.ok || !identity)
      throw new OpenStackError(404, 'Could not find token: it is invalid, expired or revoked.');
    return json(200, v3TokenBody(this.o, identity, check.payload, ['password']), {
      'x-subject-token': subject,
    });
  }

  private async issueV2(ctx: Ctx): Promise<Reply> {
    const auth = objectAt(await readJson(ctx.req), 'auth');
    let identity: OpenStackIdentity | undefined;
    const password = auth.passwordCredentials;
    const apiKey = auth['RAX-KSKEY:apiKeyCredentials'];
    if (isObject(password)) {
      if (typeof password.username !== 'string' || typeof password.password !== 'string')
        throw new OpenStackError(
          400,
          "Invalid input: 'auth.passwordCredentials' needs 'username' and 'password'.",
        );
      identity = await this.o.credentials.checkPassword(password.username, password.password);
    } else if (isObject(apiKey)) {
      if (typeof apiKey.username !== 'string' || typeof apiKey.apiKey !== 'string')
        throw new OpenStackError(
          400,
          "Invalid input: 'auth.RAX-KSKEY:apiKeyCredentials' needs 'username' and 'apiKey'.",
        );
      identity = await this.o.credentials.checkPassword(apiKey.username, apiKey.apiKey);
    } else if (isObject(auth.token)) {
      identity = await this.authenticate(typeof auth.token.id === 'string' ? auth.token.id : undefined);
    } else
      throw new OpenStackError(
        400,
        "Invalid input: 'auth' needs 'passwordCredentials', 'RAX-KSKEY:apiKeyCredentials' or 'token'.",
      );
    if (!identity) throw badCredentials();
    if (
      (typeof auth.tenantId === 'string' && auth.tenantId !== identity.principal.tenantId) ||
      (typeof auth.tenantName === 'string' && auth.tenantName !== identity.tenantName)
    )
      throw unauthorized(`The user ${identity.userName} has no access to the tenant requested.`);
    const { token, payload } = signToken(this.o.tokenKey, {
      credentialId: identity.credentialId,
      nowMs: this.now(),
      ttlSeconds: this.o.tokenTtlSeconds,
    });
    return json(200, v2AccessBody(this.o, identity, token, payload));
  }
}

const badCredentials = () =>
  unauthorized('The request you have made requires authentication: invalid user name or password.');
const methodNotAllowed = () => new OpenStackError(405, 'The method is not allowed for the requested URL.');

/** Only the Default domain exists: a user or project named in another is unknown. */
function checkDomain(d: unknown, error: () => OpenStackError = badCredentials): void {
  if (!isObject(d)) return;
  if ((d.id !== undefined && d.id !== 'default') || (d.name !== undefined && d.name !== 'Default'))
    throw error();
}

/** A project scope must be the credential's tenant (by id, or by name in the Default domain). */
function checkV3Scope(scope: unknown, identity: OpenStackIdentity): void {
  if (scope === undefined || scope === 'unscoped') return;
  if (!isObject(scope)) throw new OpenStackError(400, "Invalid input: 'auth.scope' must be an object.");
  const project = scope.project;
  if (!isObject(project))
    throw unauthorized(
      'Only project scope is served: scope the token to your project (the Flotilla tenant).',
    );
  checkDomain(project.domain, () =>
    unauthorized('Only the Default domain exists: projects are Flotilla tenants in it.'),
  );
  const byId = typeof project.id === 'string' ? project.id === identity.principal.tenantId : undefined;
  const byName = typeof project.name === 'string' ? project.name === identity.tenantName : undefined;
  if (byId === false || byName === false || (byId === undefined && byName === undefined))
    throw unauthorized(`The user ${identity.userName} has no access to the project requested.`);
}
