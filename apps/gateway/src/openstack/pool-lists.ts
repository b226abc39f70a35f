import type { Metadata } from '@grpc/grpc-js';
import { commonV1, computeV1, storageV1 } from '@flotilla/contracts';
import type { PoolApi } from '../compat/pool-api';

type Call = { metadata: Metadata };
const pageSize = 1000;

/** Follows next_page_token to the end: OpenStack's limit/marker pages are cut from the whole list. */
async function listAll<T>(page: (token: string) => Promise<{ items: T[]; next: string }>): Promise<T[]> {
  const out: T[] = [];
  let token = '';
  do {
    const { items, next } = await page(token);
    out.push(...items);
    token = next;
  } while (token);
  return out;
}

export const listAllVms = (pool: PoolApi, call: Call): Promise<computeV1.Vm[]> =>
  listAll(async (pageToken) => {
    const r = await pool.vms.call.listVms({ page: { pageSize, pageToken, filter: '' } }, call);
    return { items: r.vms ?? [], next: r.nextPageToken };
  });

export const listAllFlavors = (pool: PoolApi, call: Call): Promise<computeV1.Flavor[]> =>
  listAll(async (pageToken) => {
    const r = await pool.flavors.call.listFlavors({ page: { pageSize, pageToken, filter: '' } }, call);
    return { items: r.flavors ?? [], next: r.nextPageToken };
  });

export const listAllImages = (pool: PoolApi, call: Call): Promise<storageV1.Image[]> =>
  listAll(async (pageToken) => {
    const r = await pool.images.call.listImages({ page: { pageSize, pageToken, filter: '' } }, call);
    return { items: r.images ?? [], next: r.nextPageToken };
  });

/**
 * The label that keeps the id a Glance client chose at POST /v2/images: the catalogue gives the registered
 * image its own id, so an image uploaded through Glance is known by the id its client already holds.
 */
export const glanceIdLabel = 'openstack.image-id';
/** The disk_format the image was uploaded in (downloads give the same format back). */
export const diskFormatLabel = 'openstack.disk-format';
/** The byte count of the data uploaded (Glance's size; the catalogue counts the stored qcow2). */
export const sizeLabel = 'openstack.size';

export const isTerminal = (op: Pick<commonV1.Operation, 'state'>): boolean =>
  op.state === commonV1.OperationState.OPERATION_STATE_SUCCEEDED ||
  op.state === commonV1.OperationState.OPERATION_STATE_FAILED ||
  op.state === commonV1.OperationState.OPERATION_STATE_CANCELLED;

export const glanceIdOf = (image: Pick<storageV1.Image, 'id' | 'labels'>): string =>
  image.labels?.[glanceIdLabel] || image.id;

export async function findImageByGlanceId(
  pool: PoolApi,
  call: Call,
  id: string,
): Promise<storageV1.Image | undefined> {
  return (await listAllImages(pool, call)).find((i) => glanceIdOf(i) === id);
}

/** Timestamps arrive as Dates (ts-proto types) or, from proto-loader, as {seconds, nanos}. */
export function toDate(value: unknown): Date | undefined {
  if (value instanceof Date) return value;
  if (value && typeof value === 'object' && 'seconds' in value) {
    const { seconds, nanos } = value as { seconds: number | string; nanos?: number };
    return new Date(Number(seconds) * 1000 + (nanos ?? 0) / 1e6);
  }
  return undefined;
}
