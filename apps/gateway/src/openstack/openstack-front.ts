import { randomUUID } from 'node:crypto';
import type * as http from 'node:http';
import type { Logger } from '@flotilla/platform';
import type { Catalogue } from '../compat/catalogue';
import type { PoolApi } from '../compat/pool-api';
import { splitTarget } from '../compat/http';
import type { CredentialStore } from '../credentials/credential-store';
import { fromGrpc, OpenStackError, OpenStackService, renderError } from './errors';
import { Glance } from './glance';
import { Keystone } from './keystone';
import { microversionHeaders, minMicroversion, negotiateMicroversion } from './microversion';
import { Neutron } from './neutron';
import { Nova, NovaRequest } from './nova';
import { AuthedCtx, Ctx, header, isUuid, Reply } from './request';

export interface OpenStackFrontDeps {
  pool: PoolApi;
  /** The pool's flavors and images, kept while nothing changes them. */
  catalogue: Catalogue;
  credentials: CredentialStore;
  /** 32 secret bytes signing Keystone tokens (stateless HMAC: tokens survive restarts). */
  tokenKey: Buffer;
  /** e.g. "http://127.0.0.1:8774": every catalog and link URL is built from it, never from the Host. */
  publicUrl: string;
  region: string;
  /** The pool name: OS-EXT-AZ:availability_zone. */
  zone: string;
  tokenTtlSeconds: number;
  logger: Logger;
}

/**
 * The OpenStack API subset on one port: Keystone at /identity and at the root (some clients append
 * /v3/auth/tokens to a path-less auth URL), Nova at /compute, Glance at /image, Neutron at /network.
 * Version documents answer without a token; everything else needs a valid X-Auth-Token.
 */
export function createOpenStackFront(deps: OpenStackFrontDeps): {
  listener: http.RequestListener;
  close(): void;
} {
  const publicUrl = deps.publicUrl.replace(/\/+$/, '');
  const logger = deps.logger.child({ front: 'openstack' });
  const keystone = new Keystone({
    credentials: deps.credentials,
    tokenKey: deps.tokenKey,
    tokenTtlSeconds: deps.tokenTtlSeconds,
    publicUrl,
    region: deps.region,
  });
  const nova = new Nova({ pool: deps.pool, catalogue: deps.catalogue, publicUrl, zone: deps.zone });
  const glance = new Glance({ pool: deps.pool, publicUrl, logger });
  const neutron = new Neutron(publicUrl);

  const authenticate = async (ctx: Ctx, segments: string[]): Promise<AuthedCtx> => ({
    ...ctx,
    segments,
    identity: await keystone.authenticate(header(ctx.req, 'x-auth-token')),
  });
  const versionsOnly = (ctx: Ctx, status: number, body: unknown): Reply => {
    if (ctx.method !== 'GET' && ctx.method !== 'HEAD')
      throw new OpenStackError(405, `The method ${ctx.method} is not allowed for this resource.`);
    return { status, body };
  };

  async function compute(ctx: Ctx): Promise<Reply> {
    const [version, ...rest] = ctx.segments;
    if (version === undefined) return versionsOnly(ctx, 200, nova.versions());
    if ((version === 'v2.1' || version === 'v2') && rest.length === 0)
      return versionsOnly(ctx, 200, { version: nova.versionDoc(version === 'v2' ? 'v2.0' : 'v2.1') });
    if (version !== 'v2.1' && version !== 'v2')
      throw new OpenStackError(404, 'The resource could not be found.');
    const authed = await authenticate(ctx, rest);
    const tenantId = authed.identity.principal.tenantId;
    const legacy = version === 'v2';
    // /v2/{tenant}/… always names the project; /v2.1/… may (as Nova allows).
    let segments = rest;
    if (legacy || (rest[0] !== undefined && (isUuid(rest[0]) || rest[0] === tenantId))) {
      const [project, ...after] = rest;
      if (project !== tenantId)
        throw new OpenStackError(
          400,
          `Malformed request URL: URL's project_id '${project}' doesn't match Context's project_id '${tenantId}'`,
        );
      segments = after;
    }
    const scoped = segments !== rest;
    const negotiated = legacy
      ? { ok: true as const, version: minMicroversion }
      : negotiateMicroversion({
          legacy: ctx.req.headers['x-openstack-nova-api-version'],
          generic: ctx.req.headers['openstack-api-version'],
        });
    if (!negotiated.ok) throw new OpenStackError(negotiated.status, negotiated.message);
    const r: NovaRequest = {
      ctx: { ...authed, segments },
      version: negotiated.version,
      links: {
        base: `${publicUrl}/compute/${version}${scoped ? `/${tenantId}` : ''}`,
        bookmark: `${publicUrl}/compute${scoped ? `/${tenantId}` : ''}`,
      },
    };
    const reply = await nova.handle(r);
    if (!legacy) reply.headers = { ...microversionHeaders(negotiated.version), ...reply.headers };
    return reply;
  }

  async function image(ctx: Ctx): Promise<Reply | undefined> {
    const [version, ...rest] = ctx.segments;
    if (version === undefined) return versionsOnly(ctx, 300, glance.versions());
    if (version === 'versions' && rest.length === 0) return versionsOnly(ctx, 200, glance.versions());
    if (version !== 'v2') throw new OpenStackError(404, 'The resource could not be found.');
    return glance.handle(await authenticate(ctx, rest));
  }

  async function network(ctx: Ctx): Promise<Reply> {
    const [version, ...rest] = ctx.segments;
    if (version === undefined) return versionsOnly(ctx, 200, neutron.versions());
    if (version !== 'v2.0') throw new OpenStackError(404, 'The resource could not be found.', 'HTTPNotFound');
    return neutron.handle(await authenticate(ctx, rest));
  }

  /** The service a path belongs to, its handler and the rest of the path. */
  function route(segments: string[]): {
    service: OpenStackService;
    rest: string[];
    run: (ctx: Ctx) => Promise<Reply | undefined>;
  } {
    const [first, ...rest] = segments;
    switch (first) {
      case 'compute':
        return { service: 'compute', rest, run: compute };
      case 'image':
        return { service: 'image', rest, run: image };
      case 'network':
        return { service: 'network', rest, run: network };
      case 'identity':
        return { service: 'identity', rest, run: (ctx) => keystone.handle(ctx, `${publicUrl}/identity`) };
      default:
        return { service: 'identity', rest: segments, run: (ctx) => keystone.handle(ctx, publicUrl) };
    }
  }

  const listener: http.RequestListener = (req, res) => {
    const requestId = `req-${randomUUID()}`;
    const { rawPath, rawQuery } = splitTarget(req.url);
    const method = (req.method ?? 'GET').toUpperCase();
    let service: OpenStackService = 'identity';
    const write = (
      status: number,
      payload: Buffer | undefined,
      headers: Record<string, string | number> = {},
    ) => {
      res.writeHead(status, {
        'x-openstack-request-id': requestId,
        ...(service === 'compute' ? { 'x-compute-request-id': requestId } : {}),
        'content-length': payload?.length ?? 0,
        ...headers,
      });
      res.end(method === 'HEAD' ? undefined : payload);
    };
    const respond = (reply: Reply) =>
      reply.body === undefined || reply.status === 204
        ? write(reply.status, undefined, reply.headers)
        : write(reply.status, Buffer.from(JSON.stringify(reply.body)), {
            'content-type': 'application/json',
            ...reply.headers,
          });
    const fail = (e: unknown) => {
      let err = e instanceof OpenStackError ? e : fromGrpc(e);
      if (!err || err.status >= 500) {
        logger.error({ err: e, requestId, method, path: rawPath }, 'OpenStack request failed');
        err ??= new OpenStackError(
          500,
          `The server has either erred or is incapable of performing the requested operation (request ${requestId}).`,
        );
      }
      if (res.headersSent) {
        res.destroy();
        return;
      }
      const rendered = renderError(service, err);
      write(rendered.status, Buffer.from(rendered.body), {
        'content-type': rendered.contentType,
        ...(rendered.status === 401 ? { 'www-authenticate': `Keystone uri="${publicUrl}/identity"` } : {}),
      });
      // An unread upload body must not hold the connection.
      if (!req.complete) req.resume();
    };
    let segments: string[];
    try {
      segments = rawPath
        .split('/')
        .filter((s) => s !== '')
        .map((s) => decodeURIComponent(s));
    } catch {
      fail(new OpenStackError(400, `Malformed request URL: ${rawPath} is not valid percent-encoding.`));
      return;
    }
    const routed = route(segments);
    service = routed.service;
    const ctx: Ctx = {
      req,
      res,
      method,
      segments: routed.rest,
      query: new URLSearchParams(rawQuery),
      requestId,
    };
    routed
      .run(ctx)
      .then((reply) => {
        if (reply) respond(reply);
      })
      .catch(fail);
  };

  return { listener, close: () => glance.close() };
}
