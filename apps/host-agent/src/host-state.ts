import { DomainError, ErrorCode } from '@flotilla/domain';

/** What this agent knows of its registration: commands from compute must carry the current epoch. */
export class HostRegistration {
  hostId = '';
  epoch = 0;

  get registered(): boolean {
    return this.epoch > 0;
  }

  checkEpoch(epoch: number): void {
    if (!this.registered)
      throw new DomainError(
        ErrorCode.Unavailable,
        'this host agent has not registered with compute yet: retry shortly',
      );
    if (epoch !== this.epoch)
      throw new DomainError(
        ErrorCode.FailedPrecondition,
        `stale host epoch ${epoch} (this host is at epoch ${this.epoch}): the host re-registered; re-read it and retry`,
      );
  }
}

/** Runs commands for one VM one at a time, so a repeated command never interleaves with the first. */
export class PerVmQueue {
  private readonly tails = new Map<string, Promise<unknown>>();

  run<T>(vmId: string, work: () => Promise<T>): Promise<T> {
    const previous = this.tails.get(vmId) ?? Promise.resolve();
    const next = previous.then(work, work);
    const tail = next.catch(() => undefined);
    this.tails.set(vmId, tail);
    void tail.then(() => {
      if (this.tails.get(vmId) === tail) this.tails.delete(vmId);
    });
    return next;
  }
}
