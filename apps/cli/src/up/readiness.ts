import type { Observable } from 'rxjs';
import { GrpcClient } from '@flotilla/platform';
import { gatewayV1 } from '@flotilla/contracts';
import { sleep } from '../sleep';
import { readAdminToken } from './secrets';

/** grpc.health.v1.Health as a ts-proto style client (the shape GrpcClient turns into promises). */
interface HealthClient {
  check(req: { service: string }): Observable<{ status: string }>;
}

/**
 * Asks the gateway whether it serves: grpc.health.v1 Check when that service is among the loaded contracts,
 * else WhoAmI with the admin token (which needs the token file the gateway writes at first start).
 */
export async function gatewayServing(address: string, adminTokenFile: string): Promise<boolean> {
  let health: GrpcClient<HealthClient> | undefined;
  try {
    health = new GrpcClient<HealthClient>({
      address,
      service: 'grpc.health.v1.Health',
      defaultDeadlineMs: 2000,
    });
  } catch {
    // grpc.health.v1 is not among @flotilla/platform's contracts: fall back to WhoAmI below.
  }
  if (health) {
    try {
      const res = await health.call.check({ service: '' });
      return res.status === 'SERVING';
    } catch {
      return false;
    } finally {
      health.close();
    }
  }
  const token = readAdminToken(adminTokenFile);
  if (!token) return false;
  const tokens = new GrpcClient<gatewayV1.TokenServiceClient>({
    address,
    service: 'flotilla.gateway.v1.TokenService',
    staticMetadata: { authorization: `Bearer ${token}` },
    defaultDeadlineMs: 2000,
  });
  try {
    await tokens.call.whoAmI({});
    return true;
  } catch {
    return false;
  } finally {
    tokens.close();
  }
}

/** Polls until the gateway serves; false if the signal aborted first. */
export async function waitForGateway(
  address: string,
  adminTokenFile: string,
  signal: AbortSignal,
  intervalMs = 500,
): Promise<boolean> {
  while (!signal.aborted) {
    if (await gatewayServing(address, adminTokenFile)) return true;
    await sleep(intervalMs, signal);
  }
  return false;
}
