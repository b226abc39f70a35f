import { Logger, updateVersioned, quotedTable } from '@flotilla/platform';
import { events, ComputeStore } from '../persistence/compute-store';
import { HostRow, VmRow } from '../persistence/entities';

/**
 * Marks hosts DOWN when their heartbeats stop, and their VMs UNKNOWN: a VM on a silent host is not known
 * to be running. A VM a live migration holds is left to the migration, which rolls back or finishes and
 * then ends it (EndVmMigration marks it UNKNOWN if its host is still DOWN). Conditional updates make it
 * safe to run in every compute replica.
 */
export class HostReaper {
  private timer?: NodeJS.Timeout;
  private running = false;
  private startedAt = Number.POSITIVE_INFINITY;

  constructor(
    private readonly store: ComputeStore,
    private readonly downAfterMs: number,
    private readonly logger: Logger,
  ) {}

  start(): void {
    this.startedAt = Date.now();
    this.timer = setInterval(() => void this.sweep(), Math.min(1000, Math.max(100, this.downAfterMs / 4)));
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
  }

  async sweep(): Promise<number> {
    // Heartbeats sent while no compute ran were never heard: a host is judged only once this compute has
    // listened for the whole timeout, or a restart of the control plane that outlasted it would mark every
    // host DOWN and every VM UNKNOWN until their agents' next reports.
    if (this.running || Date.now() - this.startedAt < this.downAfterMs) return 0;
    this.running = true;
    try {
      return await this.store.tx(async (m, emit) => {
        const expired: HostRow[] = await m
          .createQueryBuilder(HostRow, 'h')
          .where('h.down = false')
          .andWhere(`h.last_heartbeat_at < now() - make_interval(secs => :secs)`, {
            secs: this.downAfterMs / 1000,
          })
          .setLock('pessimistic_write')
          .getMany();
        for (const host of expired) {
          const reason = `no heartbeat for more than ${Math.round(this.downAfterMs / 1000)} s`;
          await updateVersioned(
            m,
            HostRow,
            { kind: 'host', id: host.id, version: host.version },
            { down: true, stateReason: reason },
          );
          const vms: VmRow[] = await m
            .query(
              `UPDATE ${quotedTable(m, VmRow)} SET power_state = 'UNKNOWN', power_state_reason = $2,
                    version = version + 1, updated_at = now()
              WHERE host_id = $1 AND power_state IN ('RUNNING', 'PAUSED') AND migration_id IS NULL
              RETURNING id`,
              [host.id, `host ${host.name} is DOWN (${reason})`],
            )
            .then(
              (r: [Array<{ id: string }>, number] | Array<{ id: string }>) =>
                (Array.isArray(r[0]) ? r[0] : r) as VmRow[],
            );
          for (const { id } of vms) emit(events.vm('UPDATED', await m.findOneByOrFail(VmRow, { id })));
          emit(events.host('UPDATED', await m.findOneByOrFail(HostRow, { id: host.id })));
          this.logger.warn({ host: host.name, vms: vms.length }, 'host is DOWN');
        }
        return expired.length;
      });
    } catch (e) {
      this.logger.warn({ err: e }, 'host sweep failed');
      return 0;
    } finally {
      this.running = false;
    }
  }
}
