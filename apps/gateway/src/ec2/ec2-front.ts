import { randomUUID } from 'node:crypto';
import type * as http from 'node:http';
import type { DataSource } from 'typeorm';
import { Logger, requestContext, roleAtLeast } from '@flotilla/platform';
import type { Principal } from '../auth/token-auth';
import { BodyTooLargeError, defaultBodyLimitBytes, readBody, send, splitTarget } from '../compat/http';
import type { Catalogue } from '../compat/catalogue';
import type { PoolApi } from '../compat/pool-api';
import type { CredentialStore } from '../credentials/credential-store';
import { ec2Actions } from './actions';
import { Ec2Signatures1764000000012, Ec2SignatureRow, SignatureReplayGuard } from './auth/replay-guard';
import type { SignedRequest } from './auth/signed-request';
import { KeyThrottle } from './auth/throttle';
import { verifyEc2Request } from './auth/verify';
import { Ec2Context, Ec2Site, PoolLookups } from './context';
import { Ec2Error } from './errors';
import { ec2ErrorFromGrpc } from './grpc-errors';
import { InstanceRows } from './instance-rows';
import { ReservationItems } from './instance-view';
import { PageWalks } from './page-walks';
import { booleanParam, missing, parseParams } from './params';
import {
  Ec2ClientTokenRow,
  Ec2Compat1764000000011,
  Ec2InstanceRow,
  Ec2InstanceVersionRow,
  Ec2InstanceVersions1764000000013,
  Ec2KeyPairRow,
  Ec2TagRow,
} from './persistence';
import { errorDocument, responseDocument, utf8 } from './xml';

export interface Ec2FrontDeps {
  pool: PoolApi;
  /** The pool's flavors and images, kept while nothing changes them. */
  catalogue: Catalogue;
  credentials: CredentialStore;
  /** The gateway's database: the front's tables and the replay guard's. */
  dataSource: DataSource;
  /** The only region served, e.g. "RegionOne". */
  region: string;
  /** The pool name, e.g. "dc1": the region's one availability zone. */
  zone: string;
  /** Public URL of this front (DescribeRegions' regionEndpoint). */
  endpointUrl: string;
  throttle: { ratePerSecond: number; burst: number };
  logger: Logger;
}

// eslint-disable-next-line @typescript-eslint/no-unsafe-function-type
export const ec2Entities: Function[] = [
  Ec2InstanceRow,
  Ec2InstanceVersionRow,
  Ec2ClientTokenRow,
  Ec2TagRow,
  Ec2KeyPairRow,
  Ec2SignatureRow,
];
// eslint-disable-next-line @typescript-eslint/no-unsafe-function-type
export const ec2Migrations: Function[] = [
  Ec2Compat1764000000011,
  Ec2Signatures1764000000012,
  Ec2InstanceVersions1764000000013,
];

/** The API version served; EC2 clients all send it (interop.md §2.1). */
export const ec2ApiVersion = '2016-11-15';

/** Paths EC2 clients use: aws-cli and the SDKs keep an endpoint path, Eucalyptus-style clients their own. */
const ec2Paths = new Set([
  '/',
  '/services/compute',
  '/services/compute/',
  '/services/Eucalyptus',
  '/services/Eucalyptus/',
]);

/**
 * The EC2 Query API front (issue 7): parameters from the query and a form body → signature → per-key
 * throttle → version → action → (mutating: the signature's one run) → handler → XML in the 2016-11-15
 * namespace, with the request id in the body and the x-amzn-RequestId header. Every failure is an EC2 error
 * document with EC2's code and status.
 */
export function createEc2Front(deps: Ec2FrontDeps): { listener: http.RequestListener; close(): void } {
  const throttle = new KeyThrottle(deps.throttle);
  const replay = new SignatureReplayGuard(deps.dataSource);
  const site: Ec2Site = {
    pool: deps.pool,
    dataSource: deps.dataSource,
    region: deps.region,
    zone: deps.zone,
    endpointUrl: deps.endpointUrl,
    logger: deps.logger,
    instanceWalks: new PageWalks(),
    reservationItems: new ReservationItems(),
    instanceRows: new InstanceRows(),
  };

  async function answer(req: http.IncomingMessage, requestId: string): Promise<Buffer> {
    const { rawPath, rawQuery } = splitTarget(req.url);
    if (!ec2Paths.has(rawPath))
      throw new Ec2Error(
        'InvalidAction',
        `No EC2 endpoint at ${rawPath.slice(0, 100)}: use / or /services/compute/`,
        404,
      );
    const method = req.method ?? 'GET';
    if (method !== 'GET' && method !== 'POST')
      throw new Ec2Error(
        'InvalidAction',
        `The EC2 Query API takes GET or POST, not ${method.slice(0, 20)}`,
        405,
      );
    const body = await readBody(req, defaultBodyLimitBytes).catch((e: unknown) => {
      if (e instanceof BodyTooLargeError)
        throw new Ec2Error(
          'RequestEntityTooLarge',
          `The request body is larger than ${e.limitBytes} bytes: EC2 requests are small form bodies`,
          413,
        );
      throw e;
    });
    const params = parseParams(rawQuery, body, req.headers['content-type']);
    const signed: SignedRequest = { method, rawPath, rawQuery, headers: req.headers, body, params };
    let principal: Principal | undefined;
    const signature = await verifyEc2Request(
      signed,
      async (accessKeyId) => {
        const found = await deps.credentials.ec2Secret(accessKeyId);
        principal = found?.principal;
        return found?.secret;
      },
      { regions: [deps.region] },
    );
    if (!principal)
      throw new Ec2Error('AuthFailure', 'AWS was not able to validate the provided access credentials', 401);
    throttle.take(signature.accessKeyId);

    const version = params.get('Version');
    if (!version) throw missing('Version');
    if (version !== ec2ApiVersion)
      throw new Ec2Error(
        'NoSuchVersion',
        `The requested version (${version.slice(0, 40)}) of service AmazonEC2 does not exist: Flotilla serves ${ec2ApiVersion}`,
      );
    const actionName = params.get('Action');
    if (!actionName) throw new Ec2Error('MissingAction', 'The request must contain the parameter Action');
    const action = Object.hasOwn(ec2Actions, actionName) ? ec2Actions[actionName] : undefined;
    if (!action)
      throw new Ec2Error(
        'InvalidAction',
        `The action ${actionName.slice(0, 100)} is not valid for this web service.`,
      );
    if (!roleAtLeast(principal.role, action.role))
      throw new Ec2Error(
        'UnauthorizedOperation',
        `You are not authorized to perform this operation: ${actionName} needs role ${action.role} or above; this access key has ${principal.role}`,
        403,
      );
    if (booleanParam(params, 'DryRun'))
      throw new Ec2Error('DryRunOperation', 'Request would have succeeded, but DryRun flag is set.', 412);
    const claimed = action.mutating
      ? replay.claim(signature).then((first) => {
          if (!first)
            throw new Ec2Error(
              'AuthFailure',
              'This signature was already used by a request that ran: a signed request runs a changing action once. Sign the request again to repeat it.',
              401,
            );
        })
      : Promise.resolve();
    if (!action.readsWhileClaiming) await claimed;

    const call = deps.pool.as(principal, requestId);
    const ctx: Ec2Context = {
      site,
      principal,
      requestId,
      params,
      call,
      lookups: new PoolLookups(deps.pool, deps.catalogue, { principal, call }),
      claimed,
    };
    const tenantId = principal.tenantId;
    const handled = requestContext.run({ requestId, method: `ec2:${actionName}`, tenantId }, () =>
      action.handle(ctx),
    );
    // A replayed signature answers AuthFailure even when the action failed first.
    const [claim, outcome] = await Promise.allSettled([claimed, handled]);
    if (claim.status === 'rejected') throw claim.reason;
    if (outcome.status === 'rejected') throw outcome.reason;
    const result = outcome.value;
    return utf8(responseDocument(actionName, requestId, result));
  }

  const listener: http.RequestListener = (req, res) => {
    const requestId = randomUUID();
    const headers = { 'content-type': 'text/xml;charset=UTF-8', 'x-amzn-RequestId': requestId };
    answer(req, requestId).then(
      (xml) => send(res, 200, xml, headers),
      (e: unknown) => {
        const err = ec2ErrorFromGrpc(
          e,
          {
            notFoundCode: 'InvalidParameterValue',
            notFoundMessage: 'A resource named in the request does not exist',
          },
          deps.logger,
        );
        if (err.status >= 500)
          deps.logger.warn({ requestId, code: err.code }, `EC2 request failed: ${err.message}`);
        send(res, err.status, errorDocument(err.code, err.message, requestId), {
          ...headers,
          ...(err.status === 413 ? { connection: 'close' } : {}),
        });
      },
    );
  };

  return { listener, close: () => replay.close() };
}
