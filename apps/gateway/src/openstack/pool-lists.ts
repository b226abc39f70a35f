import type { Metadata } from '@grpc/grpc-js';
import { commonV1, storageV1 } from '@flotilla/contracts';
import { listAllImages } from '../compat/list-all';
import type { PoolApi } from '../compat/pool-api';

type Call = { metadata: Metadata };

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
