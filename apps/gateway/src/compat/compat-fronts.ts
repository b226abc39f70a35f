import * as http from 'node:http';
import type { DataSource } from 'typeorm';
import { listenHttp, type Logger } from '@flotilla/platform';
import type { GatewayConfig } from '../gateway.app';
import type { CredentialStore } from '../credentials/credential-store';
import { deriveKey } from '../credentials/secret-key';
import { createEc2Front } from '../ec2/ec2-front';
import { createOpenStackFront } from '../openstack/openstack-front';
import { Catalogue } from './catalogue';
import type { PoolApi } from './pool-api';

export interface CompatFronts {
  close(): Promise<void>;
}

/**
 * The EC2 Query API and the OpenStack API subset: HTTP servers on their own ports, translating to the pool's
 * gRPC services through PoolApi, authenticated with the credentials `flotilla credential create` makes.
 */
export async function startCompatFronts(
  config: GatewayConfig,
  deps: { pool: PoolApi; dataSource: DataSource; credentials: CredentialStore; secretKey: Buffer },
  logger: Logger,
): Promise<CompatFronts> {
  const { pool, dataSource, credentials, secretKey } = deps;
  const catalogue = new Catalogue(pool, logger.child({ front: 'catalogue' }));
  const ec2 = createEc2Front({
    pool,
    catalogue,
    credentials,
    dataSource,
    region: config.FLOTILLA_REGION,
    zone: config.FLOTILLA_POOL_NAME,
    endpointUrl: config.FLOTILLA_EC2_PUBLIC_URL || `http://${config.FLOTILLA_EC2_ADDRESS}`,
    throttle: { ratePerSecond: config.FLOTILLA_EC2_RATE, burst: 2 * config.FLOTILLA_EC2_RATE },
    logger: logger.child({ front: 'ec2' }),
  });
  const openstack = createOpenStackFront({
    pool,
    catalogue,
    credentials,
    tokenKey: deriveKey(secretKey, 'keystone-token'),
    publicUrl: config.FLOTILLA_OPENSTACK_PUBLIC_URL || `http://${config.FLOTILLA_OPENSTACK_ADDRESS}`,
    region: config.FLOTILLA_REGION,
    zone: config.FLOTILLA_POOL_NAME,
    tokenTtlSeconds: config.FLOTILLA_OPENSTACK_TOKEN_TTL_S,
    logger: logger.child({ front: 'openstack' }),
  });
  const servers: http.Server[] = [];
  // A Glance upload holds its request until the import is registered: no whole-request time limit.
  const server = (listener: http.RequestListener) => http.createServer({ requestTimeout: 0 }, listener);
  const close = async () => {
    await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
    ec2.close();
    openstack.close();
    catalogue.close();
  };
  try {
    servers.push(await listenHttp(server(ec2.listener), config.FLOTILLA_EC2_ADDRESS));
    servers.push(await listenHttp(server(openstack.listener), config.FLOTILLA_OPENSTACK_ADDRESS));
  } catch (e) {
    await close();
    throw e;
  }
  return { close };
}
