import { Metadata } from '@grpc/grpc-js';
import { Controller, Inject, Type } from '@nestjs/common';
import { GrpcMethod } from '@nestjs/microservices';
import { Observable } from 'rxjs';
import { commonV1 } from '@flotilla/contracts';
import { invalidArgument } from '@flotilla/domain';
import { type Caller, ServiceIdentity } from '../grpc/metadata';
import type { EventFeed, FeedEvent, Subscription } from './event-feed';

/** A service's Watch response: the event, and the resource under the field named by its kind. */
export interface WatchEventResponse {
  event?: commonV1.EventMeta;
}

export interface WatchStreamOptions {
  /** The resource kinds the service publishes; a cursor naming another is INVALID_ARGUMENT. */
  kinds: readonly string[];
  /** Timestamp fields of the resources (also nested ones): JSON made them strings, the wire wants dates. */
  dateFields: readonly string[];
  /** Whether the caller may see an event (its tenant's resources; operators' kinds for operators). */
  visible(caller: Caller, e: FeedEvent): boolean;
  /**
   * The payload (outbox JSON, before dates are revived) as this caller may see it, for services whose
   * events carry fields only some roles read (storage's SR and image host paths). Called for visible events
   * only; must not modify `e`. Absent: every watcher gets the payload as recorded.
   */
  redact?(caller: Caller, e: FeedEvent): unknown;
  bookmarkIntervalMs?: number;
}

/**
 * Watch streams over a service's outbox feed: events filtered to what the caller may see, resumed from the
 * cursor's token, a BOOKMARK first and then every few seconds while idle (so a client always holds a
 * recent token to resume from).
 */
export class WatchStream<R extends WatchEventResponse> {
  constructor(
    private readonly feed: EventFeed,
    private readonly options: WatchStreamOptions,
  ) {}

  watch(caller: Caller, cursor: commonV1.WatchCursor | undefined): Observable<R> {
    const { kinds } = this.options;
    const wanted = new Set(cursor?.kinds?.length ? cursor.kinds : kinds);
    for (const k of wanted)
      if (!kinds.includes(k))
        throw invalidArgument(
          'cursor.kinds',
          `unknown kind ${JSON.stringify(k.slice(0, 40))}; use ${kinds.join(', ')}`,
        );
    const visible = (e: FeedEvent) => wanted.has(e.kind) && this.options.visible(caller, e);
    const resumeToken = cursor?.resumeToken ?? '';
    if (resumeToken) this.feed.parseToken(resumeToken);
    const intervalMs = this.options.bookmarkIntervalMs ?? 5000;

    return new Observable<R>((subscriber) => {
      let subscription: Subscription | undefined;
      let timer: NodeJS.Timeout | undefined;
      let closed = false;
      let lastSent = Date.now();
      void (async () => {
        subscription = await this.feed.subscribe(resumeToken, visible);
        if (closed) return subscription.close();
        subscriber.next(bookmark(subscription.position()) as R);
        timer = setInterval(() => {
          if (Date.now() - lastSent >= intervalMs && subscription) {
            subscriber.next(bookmark(subscription.position()) as R);
            lastSent = Date.now();
          }
        }, intervalMs);
        for await (const e of subscription.events) {
          subscriber.next(
            this.toResponse(e, this.options.redact ? this.options.redact(caller, e) : e.payload),
          );
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

  private toResponse(e: FeedEvent, payload: unknown): R {
    const response: WatchEventResponse & Record<string, unknown> = {
      event: {
        token: e.seq.toString(),
        type: `EVENT_TYPE_${e.type}` as commonV1.EventType,
        kind: e.kind,
        resourceId: e.resourceId,
        tenantId: e.tenantId,
        time: e.createdAt,
      },
      [e.kind]: this.revive(payload),
    };
    return response as R;
  }

  private revive(value: unknown): unknown {
    if (Array.isArray(value)) return value.map((v) => this.revive(v));
    if (!value || typeof value !== 'object') return value;
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value))
      out[k] = this.options.dateFields.includes(k) && typeof v === 'string' ? new Date(v) : this.revive(v);
    return out;
  }
}

/** A Watch controller: the request, with the caller's metadata; the stream of responses. */
export interface WatchGrpc<R> {
  watch(req: { cursor?: commonV1.WatchCursor }, md: Metadata): Observable<R>;
}

/**
 * The gRPC controller of a service's Watch: `service` as its proto names it (e.g. "EventService"),
 * streaming from the WatchStream its module provides under `stream` (the class), to the caller the
 * module's ServiceIdentity vouches for.
 */
export function watchController<R extends WatchEventResponse>(
  service: string,
  stream: abstract new (...args: never[]) => WatchStream<R>,
): Type<WatchGrpc<R>> {
  @Controller()
  class WatchController implements WatchGrpc<R> {
    constructor(
      @Inject(ServiceIdentity) private readonly identity: ServiceIdentity,
      @Inject(stream) private readonly events: WatchStream<R>,
    ) {}

    @GrpcMethod(service, 'Watch')
    watch(req: { cursor?: commonV1.WatchCursor }, md: Metadata): Observable<R> {
      return this.events.watch(this.identity.caller(md), req.cursor);
    }
  }
  Object.defineProperty(WatchController, 'name', { value: `${service}Grpc` });
  return WatchController;
}

function bookmark(token: string): WatchEventResponse {
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
