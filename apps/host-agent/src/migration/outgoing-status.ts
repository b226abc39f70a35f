import { migrationV1 } from '@flotilla/contracts';
import type { DriverOutgoingState, DriverOutgoingStatus } from '@flotilla/hypervisor';

const S = migrationV1.OutgoingState;

/** Every driver state has its proto state: a state added to the seam fails the build here. */
const outgoingStates: Record<DriverOutgoingState, migrationV1.OutgoingState> = {
  mirroring: S.OUTGOING_STATE_MIRRORING,
  setup: S.OUTGOING_STATE_SETUP,
  active: S.OUTGOING_STATE_ACTIVE,
  'pre-switchover': S.OUTGOING_STATE_PRE_SWITCHOVER,
  device: S.OUTGOING_STATE_DEVICE,
  'postcopy-active': S.OUTGOING_STATE_POSTCOPY_ACTIVE,
  completed: S.OUTGOING_STATE_COMPLETED,
  failed: S.OUTGOING_STATE_FAILED,
  cancelling: S.OUTGOING_STATE_CANCELLING,
  cancelled: S.OUTGOING_STATE_CANCELLED,
};

/** The driver's view of an outgoing migration as the MigrationAgentService reports it. */
export function toOutgoingStatus(s: DriverOutgoingStatus): migrationV1.OutgoingStatus {
  return {
    state: outgoingStates[s.state] ?? S.OUTGOING_STATE_UNSPECIFIED,
    error: s.error ?? '',
    totalTimeMs: s.totalTimeMs,
    downtimeMs: s.downtimeMs,
    setupTimeMs: s.setupTimeMs,
    expectedDowntimeMs: s.expectedDowntimeMs,
    memoryTotalBytes: s.memoryTotalBytes,
    memoryTransferredBytes: s.memoryTransferredBytes,
    memoryRemainingBytes: s.memoryRemainingBytes,
    bytesTransferred: s.bytesTransferred,
    rounds: s.rounds,
    dirtyRateBytesPerSec: s.dirtyRateBytesPerSec,
    transferRateBytesPerSec: s.transferRateBytesPerSec,
    cpuThrottlePercent: s.cpuThrottlePercent,
    postCopyRequests: s.postCopyRequests,
    disks: s.disks.map((d) => ({
      vbdId: d.diskId,
      totalBytes: d.totalBytes,
      doneBytes: d.doneBytes,
      ready: d.ready,
      error: d.error ?? '',
    })),
  };
}
