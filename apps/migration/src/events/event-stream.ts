import { Metadata } from '@grpc/grpc-js';
import { Controller, Inject } from '@nestjs/common';
import { GrpcMethod } from '@nestjs/microservices';
import { Observable } from 'rxjs';
import { commonV1, migrationV1 } from '@flotilla/contracts';
import { invalidArgument } from '@flotilla/domain';
import { Caller, EventFeed, FeedEvent, ServiceIdentity, Subscription } from '@flotilla/platform';

const kinds = ['migration', 'evacuation', 'appliance', 'operation'] as const;
/** Timestamp fields of every resource kind, and of the records nested in them (phases). */
const dateFields = [
  'createdAt',
  'updatedAt',
  'finishedAt',
  'startedAt',
  'endedAt',
  'pointOfNoReturnAt',
  'checkedAt',
];

/**
 * Watch streams of the migration service: outbox events filtered to what the caller may see (its tenant's
 * migrations and operations; evacuations only for pool operators), a BOOKMARK first and then every few
 * seconds while idle. Progress and stats reach the outbox at most once a second per migration (the runner
 * throttles its writes).
 */
export class MigrationEventStream {
  constructor(
    private readonly feed: EventFeed,
    private readonly bookmarkIntervalMs = 5000,
  ) {}

  watch(caller: Caller, cursor: commonV1.WatchCursor | undefined): Observable<migrationV1.WatchResponse> {
    const wanted = new Set(cursor?.kinds?.length ? cursor.kinds : kinds);
    for (const k of wanted)
      if (!(kinds as readonly string[]).includes(k))
        throw invalidArgument(
          'cursor.kinds',
          `unknown kind ${JSON.stringify(k.slice(0, 40))}; use ${kinds.join(', ')}`,
        );
    const visible = (e: FeedEvent) =>
      wanted.has(e.kind) &&
      (caller.crossTenant || (e.kind !== 'evacuation' && e.tenantId === caller.tenantId));
    const resumeToken = cursor?.resumeToken ?? '';
    if (resumeToken) this.feed.parseToken(resumeToken);

    return new Observable<migrationV1.WatchResponse>((subscriber) => {
      let subscription: Subscription | undefined;
      let timer: NodeJS.Timeout | undefined;
      let closed = false;
      let lastSent = Date.now();
      void (async () => {
        subscription = await this.feed.subscribe(resumeToken, visible);
        if (closed) return subscription.close();
        subscriber.next(bookmark(subscription.position()));
        timer = setInterval(() => {
          if (Date.now() - lastSent >= this.bookmarkIntervalMs && subscription) {
            subscriber.next(bookmark(subscription.position()));
            lastSent = Date.now();
          }
        }, this.bookmarkIntervalMs);
        for await (const e of subscription.events) {
          subscriber.next(toResponse(e));
          lastSent = Date.now();
        }
        subscriber.complete();
      })().catch((err: unknown) => subscriber.error(err));
      return () => {
        closed = true;
        clearInterval(timer);
        subscription?.close();
      };
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

function bookmark(token: string): migrationV1.WatchResponse {
  return {
    event: {
      token,
      type: commonV1.EventType.EVENT_TYPE_BOOKMARK,
      kind: '',
      resourceId: '',
      tenantId: '',
      time: new Date(),
    },
  };
}

function toResponse(e: FeedEvent): migrationV1.WatchResponse {
  return {
    event: {
      token: e.seq.toString(),
      type: `EVENT_TYPE_${e.type}` as commonV1.EventType,
      kind: e.kind,
      resourceId: e.resourceId,
      tenantId: e.tenantId,
      time: e.createdAt,
    },
    [e.kind]: revive(e.payload),
  };
}

/** JSON turned the resource's timestamps (also nested ones: phases) into strings; the wire wants dates. */
function revive(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(revive);
  if (!value || typeof value !== 'object') return value;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value)) {
    out[k] = dateFields.includes(k) && typeof v === 'string' ? new Date(v) : revive(v);
  }
  return out;
}
