import { DataSource, EntityManager } from 'typeorm';
import { EventFeed } from './event-feed';
import { appendEvents, NewEvent } from './outbox';
import { inTransactionScope } from './transaction-scope';

export type Emit = (event: NewEvent) => void;

/**
 * A service's one way to write: a transaction whose events go to the outbox in the same commit, after
 * which local watchers are woken.
 */
export class TransactionalStore {
  constructor(
    readonly dataSource: DataSource,
    /** Woken after commits with events; absent in a service that serves no Watch stream yet. */
    readonly feed?: EventFeed,
  ) {}

  async tx<T>(work: (m: EntityManager, emit: Emit) => Promise<T>): Promise<T> {
    const events: NewEvent[] = [];
    const result = await this.dataSource.transaction((m) =>
      inTransactionScope(async () => {
        const out = await work(m, (e) => events.push(e));
        await appendEvents(m, events);
        return out;
      }),
    );
    if (events.length) this.feed?.wake();
    return result;
  }

  get manager(): EntityManager {
    return this.dataSource.manager;
  }
}
