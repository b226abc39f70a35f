import { migrationV1 } from '@flotilla/contracts';
import { EventFeed, watchController, WatchStream } from '@flotilla/platform';

/**
 * Watch streams of the migration service: outbox events filtered to what the caller may see (its tenant's
 * migrations and operations; evacuations only for pool operators), a BOOKMARK first and then every few
 * seconds while idle. Progress and stats reach the outbox at most once a second per migration (the runner
 * throttles its writes).
 */
export class MigrationEventStream extends WatchStream<migrationV1.WatchResponse> {
  constructor(feed: EventFeed, bookmarkIntervalMs = 5000) {
    super(feed, {
      kinds: ['migration', 'evacuation', 'appliance', 'operation'],
      // Also the timestamps of records nested in them (phases).
      dateFields: [
        'createdAt',
        'updatedAt',
        'finishedAt',
        'startedAt',
        'endedAt',
        'pointOfNoReturnAt',
        'checkedAt',
      ],
      visible: (caller, e) =>
        caller.crossTenant || (e.kind !== 'evacuation' && e.tenantId === caller.tenantId),
      bookmarkIntervalMs,
    });
  }
}

export const MigrationEventGrpc = watchController('MigrationEventService', MigrationEventStream);
