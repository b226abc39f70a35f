import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { MigrationRow } from '../persistence/entities';

/** Prometheus metrics of the migration service (/metrics on its admin address). */
export class MigrationMetrics {
  readonly registry = new Registry();
  private readonly total = new Counter({
    name: 'flotilla_migrations_total',
    help: 'Migrations finished, by mode and outcome (succeeded, failed, cancelled)',
    labelNames: ['mode', 'outcome'] as const,
    registers: [this.registry],
  });
  private readonly totalTime = new Histogram({
    name: 'flotilla_migration_total_time_seconds',
    help: 'Time from leaving QUEUED to DONE of succeeded migrations',
    labelNames: ['mode'] as const,
    buckets: [0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 900, 3600],
    registers: [this.registry],
  });
  private readonly downtime = new Histogram({
    name: 'flotilla_migration_downtime_seconds',
    help: 'Guest downtime of succeeded migrations, as QEMU measured it',
    labelNames: ['mode'] as const,
    buckets: [0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.3, 1, 5],
    registers: [this.registry],
  });
  private readonly bytes = new Counter({
    name: 'flotilla_migration_bytes_transferred_total',
    help: 'Bytes sent between hosts by finished migrations (memory, device state and disks)',
    registers: [this.registry],
  });
  private readonly rounds = new Histogram({
    name: 'flotilla_migration_rounds',
    help: 'Pre-copy rounds of finished migrations',
    buckets: [1, 2, 3, 5, 10, 20, 50, 100],
    registers: [this.registry],
  });
  private readonly dirtyRate = new Gauge({
    name: 'flotilla_migration_last_dirty_rate_bytes_per_second',
    help: 'Guest dirty rate measured by the most recently finished migration',
    registers: [this.registry],
  });

  constructor(running: () => number) {
    collectDefaultMetrics({ register: this.registry, prefix: 'flotilla_migration_' });
    new Gauge({
      name: 'flotilla_migrations_running',
      help: 'Migrations this service is running now',
      registers: [this.registry],
      collect() {
        this.set(running());
      },
    });
  }

  finished(m: MigrationRow): void {
    const mode = m.mode.toLowerCase();
    this.total.inc({ mode, outcome: m.state.toLowerCase() });
    this.bytes.inc(m.stats.bytesTransferred);
    if (m.stats.rounds > 0) this.rounds.observe(m.stats.rounds);
    if (m.stats.dirtyRateBytesPerSec > 0) this.dirtyRate.set(m.stats.dirtyRateBytesPerSec);
    if (m.state !== 'SUCCEEDED') return;
    this.totalTime.observe({ mode }, m.stats.totalTimeMs / 1000);
    this.downtime.observe({ mode }, m.stats.downtimeMs / 1000);
  }
}
