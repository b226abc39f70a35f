import { commonV1, computeV1, migrationV1, storageV1 } from '@flotilla/contracts';
import {
  DomainError,
  ErrorCode,
  estimateMigration,
  invalidArgument,
  remedyChoice,
  remediesOn,
  resolveMigrationOptions,
  runsUnderTcg,
  validateId,
  type JudgeOptions,
  type MigrationOptions,
} from '@flotilla/domain';
import type { DiskPlanEntry } from '../persistence/entities';
import { MigrationPeers } from './peers';

const { BlockerKind, WarningKind } = migrationV1;
const MIB = 1024 * 1024;
/** A disk copy longer than this is worth a warning. */
const largeCopyAfterMs = 60_000;

/** Everything a preflight learnt: the answer, and what CreateMigration and the run go on with. */
export interface PreflightResult {
  check: migrationV1.PreflightCheck;
  options: MigrationOptions;
  vm?: computeV1.MigrationVm;
  source?: computeV1.MigrationHost;
  destination?: computeV1.MigrationHost;
  disks: DiskPlanEntry[];
}

export interface PreflightInput {
  spec: migrationV1.MigrationSpec | undefined;
  /** Empty: any tenant (pool scope). */
  tenantId: string;
  /** Set inside a run: the migration's own lock and reservation are not blockers. */
  migrationId?: string;
  /** The VM's recently measured dirty rate (its last migration), 0 when unknown. */
  recentDirtyRate?: (vmId: string) => Promise<number>;
  /** Another unfinished migration of the VM, if any (a VM moves by one migration at a time). */
  otherMigration?: (vmId: string) => Promise<string | undefined>;
  /** Hosts the scheduler should not pick (when the spec names no destination). */
  excludeHostIds?: string[];
}

/** The mode of a spec (UNSPECIFIED means LIVE); OFFLINE is not built yet and says so. */
export function modeOf(spec: migrationV1.MigrationSpec): 'LIVE' {
  const mode = spec.mode ?? migrationV1.MigrationMode.MIGRATION_MODE_UNSPECIFIED;
  if (
    mode === migrationV1.MigrationMode.MIGRATION_MODE_UNSPECIFIED ||
    mode === migrationV1.MigrationMode.MIGRATION_MODE_LIVE
  )
    return 'LIVE';
  if (mode === migrationV1.MigrationMode.MIGRATION_MODE_OFFLINE)
    throw new DomainError(
      ErrorCode.Unimplemented,
      'spec.mode: OFFLINE migrations are not built yet; use LIVE (the VM must be RUNNING or PAUSED)',
      { field: 'spec.mode' },
    );
  throw invalidArgument('spec.mode', `unknown mode ${String(mode)}; use LIVE`);
}

/** A blocker from another service's ErrorDetail (reason = the BlockerKind name without prefix). */
export function blockerOf(d: commonV1.ErrorDetail): migrationV1.Blocker {
  const kind = `BLOCKER_KIND_${d.reason}`;
  const known = (Object.values(BlockerKind) as string[]).includes(kind);
  const resourceKind = d.metadata?.resource_kind ?? '';
  const resourceId = d.metadata?.resource_id ?? '';
  return {
    kind: (known ? kind : BlockerKind.BLOCKER_KIND_UNSPECIFIED) as migrationV1.BlockerKind,
    message: d.description || d.reason,
    resource: resourceKind || resourceId ? { kind: resourceKind, id: resourceId, name: '' } : undefined,
  };
}

const blocker = (
  kind: migrationV1.BlockerKind,
  message: string,
  resource?: { kind: string; id: string },
): migrationV1.Blocker => ({ kind, message, resource: resource ? { ...resource, name: '' } : undefined });

const warning = (kind: migrationV1.WarningKind, message: string): migrationV1.Warning => ({
  kind,
  message,
  resource: undefined,
});

const stripPrefix = (v: string, prefix: string) => String(v).replace(prefix, '');

/**
 * The preflight: compute's checks (VM and hosts, capacity, placement), storage's (disks), the mode's
 * power-state rules, and the warnings and estimates. Every blocker at once; nothing is reserved.
 */
export class Preflight {
  constructor(
    private readonly peers: MigrationPeers,
    private readonly poolBandwidthBytesPerSec: number,
  ) {}

  async run(input: PreflightInput): Promise<PreflightResult> {
    const spec = input.spec;
    if (!spec) throw invalidArgument('spec', 'is required: name the VM to migrate (spec.vm_id)');
    const vmId = validateId('spec.vm_id', spec.vmId, 'VM');
    const mode = modeOf(spec);
    const options = resolveMigrationOptions(spec.options, {
      mode,
      poolBandwidthBytesPerSec: this.poolBandwidthBytesPerSec,
    });
    const blockers: migrationV1.Blocker[] = [];
    const compute = await this.peers.compute((c) =>
      c.checkVmMigration({
        vmId,
        tenantId: input.tenantId,
        destinationHostId: spec.destinationHostId ?? '',
        excludeHostIds: input.excludeHostIds ?? [],
        migrationId: input.migrationId ?? '',
      }),
    );
    blockers.push(...compute.blockers.map(blockerOf));
    const remedies = remediesOn(compute.source?.accelerator ?? '');
    if (options.autoConverge && compute.source && !remedies.autoConvergeAllowed)
      blockers.push(
        blocker(
          BlockerKind.BLOCKER_KIND_AUTO_CONVERGE_UNSAFE,
          `auto_converge: host ${compute.source.name} runs its guests under TCG (no KVM), where QEMU's vCPU throttling loses guest memory writes and the guest crashes after the switch-over; raise bandwidth_bytes_per_sec or downtime_limit_ms instead`,
          { kind: 'host', id: compute.source.id },
        ),
      );
    if (options.postCopy && compute.source && !remedies.postCopyAllowed)
      blockers.push(
        blocker(
          BlockerKind.BLOCKER_KIND_POST_COPY_UNSUPPORTED,
          `post_copy: host ${compute.source.name} runs its guests under TCG (no KVM), where QEMU's post-copy corrupts the memory of some guests (they crash on the destination after the switch-over); raise bandwidth_bytes_per_sec or downtime_limit_ms instead`,
          { kind: 'host', id: compute.source.id },
        ),
      );
    const vm = compute.vm;
    const power = vm ? stripPrefix(vm.powerState, 'POWER_STATE_') : '';
    if (vm && power !== 'RUNNING' && power !== 'PAUSED')
      blockers.push(
        blocker(
          BlockerKind.BLOCKER_KIND_VM_POWER_STATE,
          `VM ${vm.name} is ${power}: a LIVE migration needs it RUNNING or PAUSED; start it first`,
          { kind: 'vm', id: vm.id },
        ),
      );
    const other = await input.otherMigration?.(vmId);
    if (other && other !== input.migrationId)
      blockers.push(
        blocker(
          BlockerKind.BLOCKER_KIND_VM_OPERATION_IN_PROGRESS,
          `migration ${other} of this VM is not finished: wait for it or cancel it`,
          { kind: 'migration', id: other },
        ),
      );

    let disks: DiskPlanEntry[] = [];
    let storageBytes = 0;
    const source = compute.source;
    const destination = compute.destination;
    // To the host it is on, compute's SAME_HOST says all there is (storage refuses such a plan outright).
    if (source && destination && source.id !== destination.id) {
      const storage: storageV1.CheckVmDiskMigrationResponse = await this.peers.storage((s) =>
        s.checkVmDiskMigration({
          vmId,
          sourceHostId: source.id,
          destinationHostId: destination.id,
          withStorage: spec.withStorage ?? false,
          vdiMap: spec.vdiMap ?? {},
        }),
      );
      blockers.push(...storage.blockers.map(blockerOf));
      disks = storage.disks.map((d) => ({
        vbdId: d.vbdId,
        vdiId: d.vdiId,
        srId: d.srId,
        targetSrId: d.targetSrId,
        sizeBytes: d.sizeBytes,
      }));
      storageBytes = storage.storageBytesToCopy;
    }

    const memoryBytes = (vm?.memoryMib ?? 0) * MIB;
    const dirtyRate = vm ? ((await input.recentDirtyRate?.(vm.id)) ?? 0) : 0;
    const estimate =
      memoryBytes > 0 && dirtyRate > 0
        ? estimateMigration({
            memoryBytes,
            dirtyRateBytesPerSec: dirtyRate,
            bandwidthBytesPerSec: options.bandwidthBytesPerSec,
            downtimeLimitMs: options.downtimeLimitMs,
            autoConverge: options.autoConverge,
            postCopy: options.postCopy,
            postCopyAfterRounds: options.postCopyAfterRounds,
          })
        : undefined;
    const storageMs = (storageBytes / options.bandwidthBytesPerSec) * 1000;
    const warnings = this.warnings(options, dirtyRate, storageMs, storageBytes, estimate?.outcome, remedies);
    if (compute.source && runsUnderTcg(compute.source.accelerator))
      warnings.push(
        warning(
          WarningKind.WARNING_KIND_TCG_MEMORY_RISK,
          `host ${compute.source.name} runs its guests under TCG (no KVM): QEMU there corrupts the memory of some guests that write memory fast while they move (by hand, 1 pre-copy migration in 25 of a guest rewriting 32 MiB); move busy guests that matter between KVM hosts`,
        ),
      );
    const dedup = uniqueBlockers(blockers);
    return {
      options,
      vm,
      source: compute.source,
      destination: compute.destination,
      disks,
      check: {
        migratable: dedup.length === 0,
        blockers: dedup,
        warnings,
        destinationHostId: compute.destination?.id ?? '',
        vdiMap: Object.fromEntries(disks.filter((d) => d.targetSrId).map((d) => [d.vdiId, d.targetSrId])),
        memoryBytes,
        storageBytesToCopy: storageBytes,
        estimatedTotalTimeMs:
          estimate && estimate.totalTimeMs > 0 ? Math.round(estimate.totalTimeMs + storageMs) : 0,
        estimatedDowntimeMs: estimate?.downtimeMs ?? 0,
        checkedAt: new Date(),
      },
    };
  }

  private warnings(
    options: MigrationOptions,
    dirtyRate: number,
    storageMs: number,
    storageBytes: number,
    outcome: string | undefined,
    remedies: JudgeOptions,
  ): migrationV1.Warning[] {
    const out: migrationV1.Warning[] = [];
    const rate = (b: number) => `${Math.round(b / MIB)} MiB/s`;
    if (dirtyRate > 0 && (outcome === 'does-not-converge' || dirtyRate >= options.bandwidthBytesPerSec * 0.8))
      out.push(
        warning(
          WarningKind.WARNING_KIND_MAY_NOT_CONVERGE,
          `the VM recently dirtied ${rate(dirtyRate)} against a bandwidth of ${rate(options.bandwidthBytesPerSec)}: pre-copy may not converge${
            options.autoConverge || options.postCopy ? '' : ` (${remedyHint(remedies)})`
          }`,
        ),
      );
    if (options.postCopy)
      out.push(
        warning(
          WarningKind.WARNING_KIND_POST_COPY_RISK,
          'post_copy is set: if the source host fails while the VM fetches its memory after the switchover, the VM is lost',
        ),
      );
    if (storageMs > largeCopyAfterMs)
      out.push(
        warning(
          WarningKind.WARNING_KIND_LARGE_STORAGE_COPY,
          `copying ${Math.round(storageBytes / MIB)} MiB of disks takes about ${Math.round(storageMs / 1000)} s at ${rate(options.bandwidthBytesPerSec)}`,
        ),
      );
    out.push(
      warning(
        WarningKind.WARNING_KIND_UNENCRYPTED_TRANSFER,
        'migration traffic (memory and disks) between the hosts is not encrypted: TLS for migrations is not supported yet',
      ),
    );
    return out;
  }
}

/** Compute and storage may both report the same fact (e.g. the VM's state): keep one of each. */
function uniqueBlockers(blockers: migrationV1.Blocker[]): migrationV1.Blocker[] {
  const seen = new Set<string>();
  return blockers.filter((b) => {
    const key = `${b.kind}/${b.resource?.kind ?? ''}/${b.resource?.id ?? ''}`;
    if (seen.has(key)) return false;
    seen.add(key);
    return true;
  });
}

/** What a caller can do about a guest that may out-dirty the link, given what the source host allows. */
function remedyHint(remedies: JudgeOptions): string {
  const { allowed, refused } = remedyChoice(remedies);
  const set = allowed.length ? `set ${allowed.join(' or ')}` : 'raise bandwidth_bytes_per_sec';
  return `${set}, or it rolls back${refused ? `; ${refused}` : ''}`;
}
