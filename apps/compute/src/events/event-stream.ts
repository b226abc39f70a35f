import { Observable } from 'rxjs';
import { computeV1, commonV1 } from '@flotilla/contracts';
import { invalidArgument } from '@flotilla/domain';
import { Caller, EventFeed, FeedEvent, Subscription } from '@flotilla/platform';

const kinds = ['vm', 'host', 'flavor', 'operation'] as const;
const dateFields = ['createdAt', 'updatedAt', 'lastHeartbeatAt', 'finishedAt'];

/**
 * Watch streams for compute: outbox events filtered to what the caller may see (its tenant's VMs and
 * operations; hosts only for operators), a BOOKMARK first and then every few seconds while idle.
 */
export class EventStream {
  constructor(
    private readonly feed: EventFeed,
    private readonly bookmarkIntervalMs = 5000,
  ) {}

  watch(caller: Caller, cursor: commonV1.WatchCursor | undefined): Observable<computeV1.WatchResponse> {
    const wanted = new Set(cursor?.kinds?.length ? cursor.kinds : kinds);
    for (const k of wanted)
      if (!(kinds as readonly string[]).includes(k))
        throw invalidArgument(
          'cursor.kinds',
          `unknown kind ${JSON.stringify(k.slice(0, 40))}; use ${kinds.join(', ')}`,
        );
    const visible = (e: FeedEvent) =>
      wanted.has(e.kind) &&
      (caller.crossTenant ||
        (e.kind === 'flavor' ? true : e.kind !== 'host' && e.tenantId === caller.tenantId));
    const resumeToken = cursor?.resumeToken ?? '';
    if (resumeToken) this.feed.parseToken(resumeToken);

    return new Observable<computeV1.WatchResponse>((subscriber) => {
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

function bookmark(token: string): computeV1.WatchResponse {
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

function toResponse(e: FeedEvent): computeV1.WatchResponse {
  const resource = revive(e.payload as Record<string, unknown>);
  return {
    event: {
      token: e.seq.toString(),
      type: `EVENT_TYPE_${e.type}` as commonV1.EventType,
      kind: e.kind,
      resourceId: e.resourceId,
      tenantId: e.tenantId,
      time: e.createdAt,
    },
    [e.kind]: resource,
  };
}

/** JSON turned the resource's timestamps into strings; the wire wants dates. */
function revive(payload: Record<string, unknown>): Record<string, unknown> {
  const out = { ...payload };
  for (const f of dateFields) if (typeof out[f] === 'string') out[f] = new Date(out[f]);
  return out;
}
