import { status } from '@grpc/grpc-js';
import { storageV1 } from '@flotilla/contracts';
import type { Cloud } from './cloud';
import { assertSucceeded, waitForOperation } from './operations';

/**
 * The local cloud's default SR: a SHARED SR named "local" under the agents' first SR root, labelled
 * flotilla.default=true. `flotilla up` creates it; `image build-demo` imports the demo disk into it; the
 * storage service picks it for root disks when a VM names no SR.
 */
export const defaultSrName = 'local';
export const defaultSrLabel = 'flotilla.default';

type Sr = storageV1.Sr;

/** The SR labelled flotilla.default=true, else the one named "local"; undefined if neither exists. */
export async function findDefaultSr(cloud: Pick<Cloud, 'srs'>): Promise<Sr | undefined> {
  const { srs } = await cloud.srs.call.listSrs({ page: { pageSize: 1000, pageToken: '', filter: '' } });
  return srs.find((s) => s.labels?.[defaultSrLabel] === 'true') ?? srs.find((s) => s.name === defaultSrName);
}

export type DefaultSrOutcome =
  | { outcome: 'exists' | 'created'; sr: Sr }
  /** The storage service does not serve SRs yet (UNIMPLEMENTED). */
  | { outcome: 'unimplemented' };

/**
 * Creates the default SR at `path` unless an SR labelled as the default (or named "local") exists, and waits
 * until it is usable. Idempotent: the request id is fixed, so a retried creation returns the first one.
 */
export async function ensureDefaultSr(
  cloud: Pick<Cloud, 'srs' | 'operations'>,
  o: { path: string; signal?: AbortSignal; timeoutMs?: number },
): Promise<DefaultSrOutcome> {
  try {
    const existing = await findDefaultSr(cloud);
    if (existing) return { outcome: 'exists', sr: existing };
    const response = await cloud.srs.call.createSr({
      requestId: `flotilla-default-sr-${defaultSrName}`,
      name: defaultSrName,
      description: 'the local cloud’s default SR, shared by every host of `flotilla up` (created by it)',
      labels: { [defaultSrLabel]: 'true' },
      type: storageV1.SrType.SR_TYPE_SHARED,
      hostId: '',
      path: o.path,
      tenantId: '',
      overprovisionRatio: 0,
      adoptExisting: true,
    });
    if (response.operation) {
      const done = await waitForOperation(cloud as Cloud, response.operation, {
        progress: false,
        signal: o.signal,
        timeoutMs: o.timeoutMs ?? 120_000,
      });
      assertSucceeded(done);
    }
    const { sr } = await cloud.srs.call.getSr({ id: response.sr?.id || defaultSrName });
    return { outcome: 'created', sr: sr ?? (response.sr as Sr) };
  } catch (e) {
    if ((e as { code?: number }).code === status.UNIMPLEMENTED) return { outcome: 'unimplemented' };
    throw e;
  }
}

/** "local (shared, /data/sr/local): 2 of 2 hosts see it, 9.5 GiB free". */
export function describeSr(sr: Sr, free: string): string {
  const hosts = sr.hosts ?? [];
  const seen = hosts.length
    ? `, ${hosts.filter((h) => h.attached).length} of ${hosts.length} hosts see it`
    : '';
  const type = sr.type === storageV1.SrType.SR_TYPE_SHARED ? 'shared' : 'file';
  return `${sr.name} (${type}${sr.path ? `, ${sr.path}` : ''})${seen}${free ? `, ${free} free` : ''}`;
}
