import { computeV1 } from '@flotilla/contracts';
import { EventFeed, WatchStream } from '@flotilla/platform';

/**
 * Watch streams for compute: outbox events filtered to what the caller may see (its tenant's VMs and
 * operations, every flavor; hosts only for operators), a BOOKMARK first and then every few seconds while idle.
 */
export class EventStream extends WatchStream<computeV1.WatchResponse> {
  constructor(feed: EventFeed, bookmarkIntervalMs = 5000) {
    super(feed, {
      kinds: ['vm', 'host', 'flavor', 'operation'],
      dateFields: ['createdAt', 'updatedAt', 'lastHeartbeatAt', 'finishedAt'],
      visible: (caller, e) =>
        caller.crossTenant || e.kind === 'flavor' || (e.kind !== 'host' && e.tenantId === caller.tenantId),
      bookmarkIntervalMs,
    });
  }
}
