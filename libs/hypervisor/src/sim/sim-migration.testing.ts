import { DriverMigrationParameters, DriverOutgoingStatus, DriverVmSpec, DriverVmStatus } from '../driver';
import { SimDriver } from './sim-driver';
import { SimTimers } from './sim-outgoing';

/** A clock that moves only when told: deterministic migrations in tests. */
export class ManualSimTimers implements SimTimers {
  private t = 0;
  private seq = 0;
  private readonly due = new Map<number, { at: number; fn: () => void }>();

  now(): number {
    return this.t;
  }

  after(ms: number, fn: () => void): () => void {
    const id = this.seq++;
    this.due.set(id, { at: this.t + Math.max(0, ms), fn });
    return () => this.due.delete(id);
  }

  /** Moves the clock forward by `ms`, running every timer that falls due on the way, in order. */
  advance(ms: number): void {
    const target = this.t + ms;
    for (;;) {
      let next: [number, { at: number; fn: () => void }] | undefined;
      for (const entry of this.due)
        if (entry[1].at <= target && (!next || entry[1].at < next[1].at)) next = entry;
      if (!next) break;
      this.due.delete(next[0]);
      this.t = next[1].at;
      next[1].fn();
    }
    this.t = target;
  }
}

export interface SimMigrationResult {
  status: DriverOutgoingStatus;
  destination?: DriverVmStatus;
}

/**
 * What the migration service does with two sim hosts' drivers, reduced to the happy path: prepare the
 * incoming VM, send, switch over at pre-switchover (or post-copy after `postCopyAfterRounds`), finish both
 * sides; on failure abort the incoming VM. For tests and benches of the sim driver only.
 */
export async function migrateBetweenSimHosts(options: {
  source: SimDriver;
  destination: SimDriver;
  spec: DriverVmSpec;
  migrationId: string;
  parameters: DriverMigrationParameters;
  postCopyAfterRounds?: number;
  /** Give up (cancel) after this many rounds without reaching the switchover. */
  maxRounds?: number;
}): Promise<SimMigrationResult> {
  const { source, destination, spec, migrationId, parameters } = options;
  const vmId = spec.vmId;
  const incoming = await destination.prepareIncoming(spec, {
    migrationId,
    listenHost: '127.0.0.1',
    receiveDiskIds: [],
    postCopy: parameters.postCopy,
  });
  await source.startOutgoing(vmId, migrationId, incoming.migrationAddress, parameters);
  let status = await source.outgoingStatus(vmId, migrationId, 0);
  while (!['pre-switchover', 'postcopy-active', 'completed', 'failed', 'cancelled'].includes(status.state)) {
    if (
      options.postCopyAfterRounds !== undefined &&
      status.state === 'active' &&
      status.rounds >= options.postCopyAfterRounds
    )
      await source.tuneOutgoing(vmId, migrationId, { startPostCopy: true });
    else if (options.maxRounds !== undefined && status.rounds >= options.maxRounds)
      await source.cancelOutgoing(vmId, migrationId);
    status = await source.outgoingStatus(vmId, migrationId, 1000);
  }
  if (status.state === 'pre-switchover') await source.switchOver(vmId, migrationId);
  while (status.state !== 'completed' && status.state !== 'failed' && status.state !== 'cancelled')
    status = await source.outgoingStatus(vmId, migrationId, 1000);
  if (status.state !== 'completed') {
    await destination.abortIncoming(vmId, migrationId);
    return { status };
  }
  const arrived = await destination.finishIncoming(vmId, migrationId, 30_000);
  await source.finishOutgoing(vmId, migrationId);
  return { status, destination: arrived };
}
