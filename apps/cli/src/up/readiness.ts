import { checkHealth } from '@flotilla/platform';
import { sleep } from '../sleep';

/** Polls the gateway's grpc.health.v1 until it serves; false if the signal aborted first. */
export async function waitForGateway(
  address: string,
  signal: AbortSignal,
  intervalMs = 500,
): Promise<boolean> {
  while (!signal.aborted) {
    if ((await checkHealth(address, { deadlineMs: 2000 })) === 'SERVING') return true;
    await sleep(intervalMs, signal);
  }
  return false;
}
