import { DataSource } from 'typeorm';
import { DomainError, ErrorCode, invalidArgument } from '@flotilla/domain';
import { Logger } from '../logging';
import { quotedTable } from './data-source';
import { OutboxEvent } from './outbox';

export interface FeedEvent {
  seq: bigint;
  kind: string;
  type: OutboxEvent['type'];
  resourceId: string;
  tenantId: string;
  payload: unknown;
  createdAt: Date;
}

export interface Subscription {
  /** Events after the resume point, in commit order, each once; ends when the subscription is closed. */
  events: AsyncIterable<FeedEvent>;
  /** Token of the last event this subscriber passed, delivered or filtered out: a safe resume point. */
  position(): string;
  close(): void;
}

const batchSize = 500;

/**
 * Reads the outbox in commit order for Watch streams. One poller per process serves every subscriber; a
 * subscriber that resumes from an older token first catches up from the table, buffering live events, and
 * drops anything at or below the last sequence it delivered, so nothing is missed or repeated.
 *
 * While nobody watches, the feed reads no events: the poller only advances its head with `max(seq)` (no
 * payloads), local commits do not wake it, and the first subscriber refreshes the head before it starts
 * "now". Sequence numbers commit in order (the outbox lock), so every event at or below a `max(seq)` that
 * was read is committed and any later commit has a higher number: skipping the rows loses nothing.
 */
export class EventFeed {
  private head = 0n;
  private readonly subscribers = new Set<Subscriber>();
  private timer?: NodeJS.Timeout;
  private pruner?: NodeJS.Timeout;
  private polling?: Promise<void>;
  private wakeRequested = false;
  private started = false;

  constructor(
    private readonly dataSource: DataSource,
    private readonly logger: Logger,
    private readonly pollIntervalMs = 200,
  ) {}

  async start(): Promise<void> {
    this.head = await this.maxSeq();
    this.started = true;
    this.timer = setInterval(() => void this.poll(), this.pollIntervalMs);
    this.timer.unref();
  }

  /**
   * Deletes events older than `hours` once a minute until stop(): the history a watcher can resume from
   * (FLOTILLA_EVENT_RETENTION_HOURS).
   */
  keepHistory(hours: number): void {
    const retentionMs = hours * 3600 * 1000;
    clearInterval(this.pruner);
    this.pruner = setInterval(
      () =>
        void this.pruneBefore(new Date(Date.now() - retentionMs))
          .then((n) => n && this.logger.info({ events: n }, 'pruned Watch history'))
          .catch((e: unknown) => this.logger.warn({ err: e }, 'pruning Watch history failed')),
      60_000,
    );
    this.pruner.unref();
  }

  stop(): void {
    clearInterval(this.timer);
    clearInterval(this.pruner);
    for (const s of this.subscribers) s.close();
  }

  /**
   * Called after a local commit that appended events, so watchers see it without waiting for the poll.
   * Without watchers there is nobody to tell: the head catches up on the next poll or subscribe.
   */
  wake(): void {
    if (this.subscribers.size) void this.poll();
  }

  /** The token for "now" (as of the last poll): a watcher without a resume token starts here. */
  currentToken(): string {
    return this.head.toString();
  }

  parseToken(token: string): bigint {
    if (!/^\d{1,19}$/.test(token))
      throw invalidArgument(
        'resume_token',
        'is not a token from this Watch stream: omit it to start from now',
      );
    return BigInt(token);
  }

  async subscribe(resumeToken: string, accept: (e: FeedEvent) => boolean): Promise<Subscription> {
    if (!this.started) throw new Error('event feed not started');
    // Nobody was watching, so local commits did not wake the poller: catch the head up first, so that a
    // watcher without a token starts after every event committed before it asked.
    if (!this.subscribers.size) await this.poll();
    const from = resumeToken ? this.parseToken(resumeToken) : this.head;
    if (from > this.head) {
      await this.poll();
      if (from > this.head)
        throw new DomainError(
          ErrorCode.OutOfRange,
          `resume_token ${from} is ahead of this stream (at ${this.head})`,
        );
    }
    if (from < this.head) await this.assertRetained(from);
    const sub = new Subscriber(from, accept, () => this.subscribers.delete(sub));
    this.subscribers.add(sub);
    void this.catchUp(sub);
    return { events: sub, position: () => sub.last.toString(), close: () => sub.close() };
  }

  private async assertRetained(from: bigint): Promise<void> {
    const rows: Array<{ min: string | null }> = await this.dataSource.query(
      `SELECT min(seq)::text AS min FROM ${this.table()}`,
    );
    const min = rows[0]?.min ? BigInt(rows[0].min) : this.head + 1n;
    if (from + 1n < min)
      throw new DomainError(
        ErrorCode.OutOfRange,
        `resume_token ${from} is older than the retained history (oldest ${min - 1n}): list the resources again and watch from now`,
      );
  }

  private async catchUp(sub: Subscriber): Promise<void> {
    try {
      for (;;) {
        const rows = await this.read(sub.last, batchSize);
        for (const e of rows) sub.push(e);
        if (rows.length < batchSize) break;
      }
      sub.live();
    } catch (e) {
      this.logger.warn({ err: e }, 'watch catch-up failed');
      sub.fail(e);
    }
  }

  private poll(): Promise<void> {
    if (this.polling) {
      this.wakeRequested = true;
      return this.polling;
    }
    this.polling = (async () => {
      try {
        do {
          this.wakeRequested = false;
          if (!this.subscribers.size) {
            // Nobody to deliver to: move the head without reading the events.
            const max = await this.maxSeq();
            if (max > this.head) this.head = max;
            continue;
          }
          const rows = await this.read(this.head, batchSize);
          for (const e of rows) {
            this.head = e.seq;
            for (const s of this.subscribers) s.offer(e);
          }
          if (rows.length === batchSize) this.wakeRequested = true;
        } while (this.wakeRequested);
      } catch (e) {
        this.logger.warn({ err: e }, 'event poll failed');
      } finally {
        this.polling = undefined;
      }
    })();
    return this.polling;
  }

  private async read(after: bigint, limit: number): Promise<FeedEvent[]> {
    // Order by the qualified column: a bare `seq` would name the text output column and sort "10" before "9".
    const rows: Array<Record<string, unknown>> = await this.dataSource.query(
      `SELECT e.seq::text AS seq, e.kind, e.type, e.resource_id, e.tenant_id, e.payload, e.created_at
         FROM ${this.table()} e WHERE e.seq > $1 ORDER BY e.seq LIMIT $2`,
      [after.toString(), limit],
    );
    return rows.map((r) => ({
      seq: BigInt(r.seq as string),
      kind: r.kind as string,
      type: r.type as FeedEvent['type'],
      resourceId: r.resource_id as string,
      tenantId: r.tenant_id as string,
      payload: r.payload,
      createdAt: new Date(r.created_at as string),
    }));
  }

  private async maxSeq(): Promise<bigint> {
    const rows: Array<{ max: string | null }> = await this.dataSource.query(
      `SELECT max(seq)::text AS max FROM ${this.table()}`,
    );
    return rows[0]?.max ? BigInt(rows[0].max) : 0n;
  }

  /**
   * Deletes events committed before `cutoff`, keeping the newest one so the stream's position survives.
   * A watcher whose token is older than what remains gets OUT_OF_RANGE and lists again.
   */
  async pruneBefore(cutoff: Date): Promise<number> {
    const result: [unknown[], number] = await this.dataSource.query(
      `DELETE FROM ${this.table()} WHERE created_at < $1 AND seq < (SELECT max(seq) FROM ${this.table()})`,
      [cutoff],
    );
    return result[1] ?? 0;
  }

  private table(): string {
    return quotedTable(this.dataSource.manager, OutboxEvent);
  }
}

/** One watcher's queue: catch-up rows first, then live events, never one at or below `last`. */
class Subscriber implements AsyncIterable<FeedEvent> {
  last: bigint;
  private isLive = false;
  private readonly buffered: FeedEvent[] = [];
  private readonly queue: FeedEvent[] = [];
  private waiting?: () => void;
  private closed = false;
  private error?: unknown;

  constructor(
    from: bigint,
    private readonly accept: (e: FeedEvent) => boolean,
    private readonly onClose: () => void,
  ) {
    this.last = from;
  }

  /** A live event from the poller. */
  offer(e: FeedEvent): void {
    if (this.isLive) this.push(e);
    else this.buffered.push(e);
  }

  /** Deliver in order, once. */
  push(e: FeedEvent): void {
    if (e.seq <= this.last) return;
    this.last = e.seq;
    if (this.accept(e)) {
      this.queue.push(e);
      this.waiting?.();
    }
  }

  live(): void {
    for (const e of this.buffered.splice(0)) this.push(e);
    this.isLive = true;
  }

  fail(e: unknown): void {
    this.error = e;
    this.waiting?.();
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.onClose();
    this.waiting?.();
  }

  async *[Symbol.asyncIterator](): AsyncIterator<FeedEvent> {
    try {
      for (;;) {
        if (this.error) throw this.error;
        const next = this.queue.shift();
        if (next) {
          yield next;
          continue;
        }
        if (this.closed) return;
        await new Promise<void>((resolve) => (this.waiting = resolve));
        this.waiting = undefined;
      }
    } finally {
      this.close();
    }
  }
}
