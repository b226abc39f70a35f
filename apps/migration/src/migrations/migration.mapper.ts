import { migrationV1 } from '@flotilla/contracts';
import type { NewEvent } from '@flotilla/platform';
import type { MigrationRow, MigrationStatsRecord } from '../persistence/entities';

/** Options with every field unset (0, false): the server's defaults apply. */
export const emptyOptions = (): migrationV1.MigrationOptions => ({
  downtimeLimitMs: 0,
  bandwidthBytesPerSec: 0,
  autoConverge: false,
  postCopy: false,
  postCopyAfterRounds: 0,
  timeoutMs: 0,
  shutdownTimeoutMs: 0,
});

export const emptyStats = (): MigrationStatsRecord => ({
  totalTimeMs: 0,
  downtimeMs: 0,
  setupTimeMs: 0,
  bytesTransferred: 0,
  memoryTotalBytes: 0,
  memoryRemainingBytes: 0,
  storageTotalBytes: 0,
  storageTransferredBytes: 0,
  rounds: 0,
  dirtyRateBytesPerSec: 0,
  transferRateBytesPerSec: 0,
  expectedDowntimeMs: 0,
  cpuThrottlePercent: 0,
  postCopyRequests: 0,
});

/** The migration as the API shows it. */
export function migrationToProto(m: MigrationRow): migrationV1.Migration {
  return {
    id: m.id,
    name: m.name,
    tenantId: m.tenantId,
    labels: m.labels,
    createdAt: m.createdAt,
    updatedAt: m.updatedAt,
    etag: String(m.version),
    vmId: m.vmId,
    sourceHostId: m.sourceHostId,
    destinationHostId: m.destinationHostId,
    mode: `MIGRATION_MODE_${m.mode}` as migrationV1.MigrationMode,
    withStorage: m.withStorage,
    vdiMap: m.vdiMap,
    state: `MIGRATION_STATE_${m.state}` as migrationV1.MigrationState,
    stateReason: m.stateReason,
    phase: `MIGRATION_PHASE_${m.phase}` as migrationV1.MigrationPhase,
    progress: m.progress,
    pointOfNoReturnPassed: m.pointOfNoReturnPassed,
    pointOfNoReturnAt: m.pointOfNoReturnAt ?? undefined,
    options: {
      downtimeLimitMs: m.options.downtimeLimitMs,
      bandwidthBytesPerSec: m.options.bandwidthBytesPerSec,
      autoConverge: m.options.autoConverge,
      postCopy: m.options.postCopy,
      postCopyAfterRounds: m.options.postCopyAfterRounds,
      timeoutMs: m.options.timeoutMs,
      shutdownTimeoutMs: m.options.shutdownTimeoutMs,
    },
    stats: { ...emptyStats(), ...m.stats },
    phases: m.phases.map((p) => ({
      phase: `MIGRATION_PHASE_${p.phase}` as migrationV1.MigrationPhase,
      startedAt: new Date(p.startedAt),
      endedAt: p.endedAt ? new Date(p.endedAt) : undefined,
      detail: p.detail,
    })),
    error: m.error ?? undefined,
    operationId: m.operationId,
    evacuationId: m.evacuationId,
    startedAt: m.startedAt ?? undefined,
    finishedAt: m.finishedAt ?? undefined,
  };
}

/** The outbox event of a migration change. */
export function migrationEvent(type: NewEvent['type'], m: MigrationRow): NewEvent {
  return { kind: 'migration', type, resourceId: m.id, tenantId: m.tenantId, payload: migrationToProto(m) };
}
