import { storageV1 } from '@flotilla/contracts';
import { Caller, EventFeed, FeedEvent, watchController, WatchStream } from '@flotilla/platform';

type Payload = Record<string, unknown>;

/**
 * Fields the List and Get RPCs show pool-operator and above only (srToProto, imageToProto): the outbox keeps
 * the operator's view, and tenants' streams get them emptied.
 */
const operatorOnly: Record<string, readonly string[]> = {
  sr: ['path'],
  image: ['kernelPath', 'initrdPath', 'vdiId'],
};

/**
 * What a caller may see, as the List RPCs let it: operators everything; others their tenant's VDIs (never
 * hidden chain nodes, managed=false), VBDs and operations, the pool-wide SRs (no tenant) and their
 * tenant's, and PUBLIC images and their tenant's.
 */
function visible(caller: Caller, e: FeedEvent): boolean {
  if (caller.crossTenant) return true;
  const own = e.tenantId === caller.tenantId;
  const payload = (e.payload ?? {}) as Payload;
  switch (e.kind) {
    case 'sr':
      return own || e.tenantId === '';
    case 'image':
      return own || payload.visibility === 'IMAGE_VISIBILITY_PUBLIC';
    case 'vdi':
      return own && payload.managed !== false;
    default:
      return own;
  }
}

function redact(caller: Caller, e: FeedEvent): unknown {
  const hidden = operatorOnly[e.kind];
  if (caller.crossTenant || !hidden || !e.payload || typeof e.payload !== 'object') return e.payload;
  const out: Payload = { ...(e.payload as Payload) };
  for (const field of hidden) if (field in out) out[field] = '';
  return out;
}

/**
 * Watch streams of the storage service: outbox events filtered and redacted to what the caller's List RPCs
 * show it (see `visible` and `operatorOnly`), a BOOKMARK first and then every few seconds while idle.
 */
export class StorageEventStream extends WatchStream<storageV1.WatchResponse> {
  constructor(feed: EventFeed, bookmarkIntervalMs = 5000) {
    super(feed, {
      kinds: ['sr', 'vdi', 'vbd', 'image', 'operation'],
      // Every Timestamp of Sr, Vdi, Vbd, Image and Operation.
      dateFields: ['createdAt', 'updatedAt', 'finishedAt', 'lastScannedAt', 'snapshotTime'],
      visible,
      redact,
      bookmarkIntervalMs,
    });
  }
}

export const StorageEventGrpc = watchController('StorageEventService', StorageEventStream);
