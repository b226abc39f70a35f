import { Metadata } from '@grpc/grpc-js';
import { Controller, Inject } from '@nestjs/common';
import { GrpcMethod } from '@nestjs/microservices';
import { Observable } from 'rxjs';
import { migrationV1 } from '@flotilla/contracts';
import { EventFeed, ServiceIdentity, WatchStream } from '@flotilla/platform';

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

@Controller()
export class MigrationEventGrpc implements migrationV1.MigrationEventServiceController {
  constructor(
    @Inject(ServiceIdentity) private readonly identity: ServiceIdentity,
    @Inject(MigrationEventStream) private readonly stream: MigrationEventStream,
  ) {}

  @GrpcMethod('MigrationEventService', 'Watch')
  watch(req: migrationV1.WatchRequest, md: Metadata): Observable<migrationV1.WatchResponse> {
    return this.stream.watch(this.identity.caller(md), req.cursor);
  }
}
