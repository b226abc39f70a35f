/** What people read about migrations and evacuations: pure formatters, tested without a cloud. */
import { migrationV1 } from '@flotilla/contracts';
import { grpcCodeName } from './errors';
import { percent, timestamp, toDate, word } from './format';
import type { Cell } from './output';
import { formatBytes } from './size';

type Migration = migrationV1.Migration;
type Evacuation = migrationV1.Evacuation;
const { MigrationState, EvacuationState } = migrationV1;

export const migrationState = (m: Pick<Migration, 'state'>): string => word(m.state, 'MIGRATION_STATE_');
export const migrationPhase = (m: Pick<Migration, 'phase'>): string => word(m.phase, 'MIGRATION_PHASE_');
export const evacuationState = (e: Pick<Evacuation, 'state'>): string => word(e.state, 'EVACUATION_STATE_');

export function isMigrationDone(m: Pick<Migration, 'state'>): boolean {
  return (
    m.state === MigrationState.MIGRATION_STATE_SUCCEEDED ||
    m.state === MigrationState.MIGRATION_STATE_FAILED ||
    m.state === MigrationState.MIGRATION_STATE_CANCELLED
  );
}

export function isEvacuationDone(e: Pick<Evacuation, 'state'>): boolean {
  return (
    e.state === EvacuationState.EVACUATION_STATE_SUCCEEDED ||
    e.state === EvacuationState.EVACUATION_STATE_PARTIAL ||
    e.state === EvacuationState.EVACUATION_STATE_FAILED ||
    e.state === EvacuationState.EVACUATION_STATE_CANCELLED
  );
}

/** 850 → "850 ms", 12345 → "12.3 s", 125000 → "2 min 5 s", 7384000 → "2 h 3 min". */
export function duration(ms: number | undefined): string {
  if (ms === undefined || ms === null || !Number.isFinite(ms) || ms < 0) return '';
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60_000) return `${+(ms / 1000).toFixed(1)} s`;
  const s = Math.round(ms / 1000);
  if (s < 3600) return `${Math.floor(s / 60)} min${s % 60 ? ` ${s % 60} s` : ''}`;
  const min = Math.floor(s / 60);
  return `${Math.floor(min / 60)} h${min % 60 ? ` ${min % 60} min` : ''}`;
}

/** Bytes per second as "80 MiB/s"; empty when unknown (0). */
export function rate(bytesPerSec: number | undefined): string {
  return bytesPerSec ? `${formatBytes(bytesPerSec)}/s` : '';
}

/** Where the VM goes, with host names where known: "host-1 → host-2". */
export function route(
  m: Pick<Migration, 'sourceHostId' | 'destinationHostId'>,
  hosts: Map<string, string>,
): string {
  const name = (id: string) => hosts.get(id) ?? id;
  return `${name(m.sourceHostId) || '?'} → ${name(m.destinationHostId) || '(scheduler)'}`;
}

/**
 * The one progress line while a migration runs: "transfer 42% · round 3 · 120 MiB left · dirty 80 MiB/s".
 * Parts that are not known yet are left out.
 */
export function progressLine(m: Migration): string {
  const s = m.stats;
  const phase = migrationPhase(m) || migrationState(m);
  const parts = [
    `${phase} ${percent(m.progress)}`,
    s?.rounds ? `round ${s.rounds}` : '',
    s?.memoryRemainingBytes ? `${formatBytes(s.memoryRemainingBytes)} left` : '',
    s?.dirtyRateBytesPerSec ? `dirty ${rate(s.dirtyRateBytesPerSec)}` : '',
    s?.cpuThrottlePercent ? `throttle ${s.cpuThrottlePercent}%` : '',
  ];
  return parts.filter(Boolean).join(' · ');
}

/** The statistics of a migration, as field/value pairs (unknown ones empty, so details() leaves them out). */
export function statsPairs(s: migrationV1.MigrationStats | undefined): Array<[string, Cell]> {
  if (!s) return [];
  return [
    ['total time', s.totalTimeMs ? duration(s.totalTimeMs) : ''],
    ['downtime', s.downtimeMs ? duration(s.downtimeMs) : ''],
    ['setup time', s.setupTimeMs ? duration(s.setupTimeMs) : ''],
    ['transferred', s.bytesTransferred ? formatBytes(s.bytesTransferred) : ''],
    ['memory', s.memoryTotalBytes ? formatBytes(s.memoryTotalBytes) : ''],
    [
      'storage copied',
      s.storageTotalBytes
        ? `${formatBytes(s.storageTransferredBytes)} of ${formatBytes(s.storageTotalBytes)}`
        : '',
    ],
    ['rounds', s.rounds || ''],
    ['dirty rate', rate(s.dirtyRateBytesPerSec)],
    ['transfer rate', rate(s.transferRateBytesPerSec)],
    ['cpu throttle', s.cpuThrottlePercent ? `${s.cpuThrottlePercent}%` : ''],
    ['post-copy page requests', s.postCopyRequests || ''],
  ];
}

/** One row per phase entered: PHASE, STARTED, DURATION (running ones until `now`), DETAIL. */
export function phaseRows(phases: migrationV1.PhaseRecord[], now = Date.now()): Cell[][] {
  return phases.map((p) => {
    const started = toDate(p.startedAt);
    const ended = toDate(p.endedAt);
    const end = ended && ended.getTime() > 0 ? ended.getTime() : undefined;
    const took = started ? (end ?? now) - started.getTime() : undefined;
    return [
      word(p.phase, 'MIGRATION_PHASE_'),
      timestamp(p.startedAt),
      took === undefined ? '' : `${duration(took)}${end ? '' : ' (running)'}`,
      p.detail,
    ];
  });
}

/** "vm 6f1c…", "host host-2", "" — the resource a blocker or warning is about. */
function resource(r: { kind: string; id: string; name?: string } | undefined): string {
  if (!r || (!r.kind && !r.id)) return '';
  return [r.kind, r.name || r.id].filter(Boolean).join(' ');
}

/** KIND, RESOURCE, MESSAGE rows for blockers or warnings (their kinds without the enum prefix). */
export function findingRows(
  findings: Array<{ kind: string; message: string; resource?: { kind: string; id: string; name?: string } }>,
  prefix: 'BLOCKER_KIND_' | 'WARNING_KIND_',
): Cell[][] {
  return findings.map((f) => [word(f.kind, prefix), resource(f.resource), f.message]);
}

/** The error of a FAILED or CANCELLED migration as one line, saying where the VM is. */
export function migrationFailure(m: Migration, vmName: string, hosts: Map<string, string>): string {
  const verb = m.state === MigrationState.MIGRATION_STATE_CANCELLED ? 'was cancelled' : 'failed';
  const err = m.error;
  const why = err?.message || m.stateReason;
  const code = err?.code ? ` [${grpcCodeName(err.code)}]` : '';
  const where = m.pointOfNoReturnPassed
    ? ''
    : `; vm ${vmName} stays on ${hosts.get(m.sourceHostId) ?? m.sourceHostId}`;
  return `migration ${m.id} of vm ${vmName} ${verb}${why ? `: ${why}` : ''}${code}${where}`;
}

/** VM, OUTCOME, DESTINATION, MIGRATION, REASON rows of an evacuation. */
export function evacuationRows(
  e: Pick<Evacuation, 'vms'>,
  vms: Map<string, string>,
  hosts: Map<string, string>,
): Cell[][] {
  return e.vms.map((v) => [
    vms.get(v.vmId) ?? v.vmId,
    word(v.outcome, 'EVACUATION_VM_OUTCOME_'),
    hosts.get(v.destinationHostId) ?? v.destinationHostId,
    v.migrationId,
    [...v.blockers.map((b) => `${word(b.kind, 'BLOCKER_KIND_')}: ${b.message}`), v.error?.message ?? '']
      .filter(Boolean)
      .join('; '),
  ]);
}

/** "4/10 VMs dealt with · 2 migrating · 1 skipped" while an evacuation runs. */
export function evacuationProgress(e: Pick<Evacuation, 'vms' | 'state'>): string {
  const counts = new Map<string, number>();
  for (const v of e.vms) {
    const outcome = word(v.outcome, 'EVACUATION_VM_OUTCOME_') || 'pending';
    counts.set(outcome, (counts.get(outcome) ?? 0) + 1);
  }
  const dealt = e.vms.length - (counts.get('pending') ?? 0) - (counts.get('migrating') ?? 0);
  const parts = [`${dealt}/${e.vms.length} VMs dealt with`];
  for (const outcome of ['migrating', 'migrated', 'skipped', 'shut-down', 'failed'])
    if (counts.get(outcome)) parts.push(`${counts.get(outcome)} ${outcome}`);
  return [evacuationState(e), ...parts].filter(Boolean).join(' · ');
}
