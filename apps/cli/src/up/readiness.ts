import { computeV1 } from '@flotilla/contracts';
import { checkHealth, GrpcClient } from '@flotilla/platform';
import { Cloud } from '../cloud';
import { describeSr, ensureDefaultSr } from '../default-sr';
import { describeError } from '../errors';
import { formatBytes } from '../size';
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

/** How a registered host runs VMs, as `up` reports it: "host-1: qemu, accelerator tcg (why)". */
export function describeHost(h: Pick<computeV1.Host, 'name' | 'driver' | 'accelerator'>): string {
  const [accel, ...why] = h.accelerator.split(' ');
  const reason = why.join(' ').replace(/^\((.*)\)$/, '$1');
  return h.driver === 'sim'
    ? `${h.name}: sim driver (no guest runs: qemu-system-x86_64 is not installed or --driver sim)`
    : `${h.name}: ${h.driver}, accelerator ${accel}${reason ? ` (${reason})` : ''}`;
}

/**
 * Waits (bounded) until `names` have registered and says how each runs VMs. Best effort: a host that does
 * not register in time is named as such, and errors only say that the report is unavailable.
 */
export async function reportHosts(
  endpoint: string,
  token: string,
  names: string[],
  say: (line: string) => void,
  signal: AbortSignal,
  timeoutMs = 60_000,
): Promise<void> {
  const hosts = new GrpcClient<computeV1.HostServiceClient>({
    address: endpoint,
    service: 'flotilla.compute.v1.HostService',
    staticMetadata: { authorization: `Bearer ${token}` },
    defaultDeadlineMs: 5000,
  });
  const deadline = Date.now() + timeoutMs;
  let seen: computeV1.Host[] = [];
  try {
    while (!signal.aborted && Date.now() < deadline) {
      seen = (
        await hosts.call.listHosts({ page: { pageSize: 1000, pageToken: '', filter: '' } }).catch(() => ({
          hosts: [],
        }))
      ).hosts.filter((h) => names.includes(h.name));
      if (seen.length === names.length) break;
      await sleep(500, signal);
    }
  } finally {
    hosts.close();
  }
  if (signal.aborted) return;
  for (const name of names) {
    const h = seen.find((x) => x.name === name);
    say(`  ${h ? describeHost(h) : `${name}: not registered yet (see its log lines)`}`);
  }
}

/**
 * Makes sure the local cloud has its default SR and says so in one line. Best effort: a storage service
 * that does not serve SRs yet (UNIMPLEMENTED) or any failure is one note, never a reason to stop `up`.
 */
export async function reportDefaultSr(o: {
  endpoint: string;
  token: string;
  path: string;
  say: (line: string) => void;
  signal: AbortSignal;
}): Promise<void> {
  if (o.signal.aborted) return;
  const cloud = new Cloud({ endpoint: o.endpoint, token: o.token });
  try {
    const r = await ensureDefaultSr(cloud, { path: o.path, signal: o.signal });
    if (o.signal.aborted) return;
    if (r.outcome === 'unimplemented')
      return o.say('default SR: skipped (the storage service does not serve SRs yet)');
    const free = r.sr.capacityBytes
      ? formatBytes(Math.max(0, r.sr.capacityBytes - r.sr.physicalUtilisationBytes))
      : '';
    o.say(`default SR: ${describeSr(r.sr, free)}${r.outcome === 'created' ? ' (created)' : ''}`);
  } catch (e) {
    if (!o.signal.aborted) o.say(`default SR: not created (${describeError(e).message})`);
  } finally {
    cloud.close();
  }
}
