import type { Metadata } from '@grpc/grpc-js';
import type { computeV1, storageV1 } from '@flotilla/contracts';
import type { PoolApi } from './pool-api';

type Call = { metadata: Metadata };
const page = (pageToken: string) => ({ page: { pageSize: 1000, pageToken, filter: '' } });

/**
 * Follows next_page_token to the end. Both fronts cut their own pages (EC2 NextToken, OpenStack
 * limit/marker) from the whole list, filtered as their clients ask, so they need every page of the pool's.
 */
async function listAll<T>(
  fetch: (pageToken: string) => Promise<{ items: T[] | undefined; next: string }>,
): Promise<T[]> {
  const out: T[] = [];
  let token = '';
  do {
    const { items, next } = await fetch(token);
    out.push(...(items ?? []));
    token = next;
  } while (token);
  return out;
}

/** Every VM the caller sees (snapshots included: the fronts decide what to show). */
export const listAllVms = (pool: PoolApi, call: Call): Promise<computeV1.Vm[]> =>
  listAll(async (token) => {
    const r = await pool.vms.call.listVms(page(token), call);
    return { items: r.vms, next: r.nextPageToken };
  });

export const listAllFlavors = (pool: PoolApi, call: Call): Promise<computeV1.Flavor[]> =>
  listAll(async (token) => {
    const r = await pool.flavors.call.listFlavors(page(token), call);
    return { items: r.flavors, next: r.nextPageToken };
  });

export const listAllImages = (pool: PoolApi, call: Call): Promise<storageV1.Image[]> =>
  listAll(async (token) => {
    const r = await pool.images.call.listImages(page(token), call);
    return { items: r.images, next: r.nextPageToken };
  });
