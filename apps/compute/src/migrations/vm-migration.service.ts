import { EntityManager } from 'typeorm';
import { commonV1, computeV1 } from '@flotilla/contracts';
import {
  DomainError,
  ErrorCode,
  failedPrecondition,
  invalidArgument,
  isUuid,
  notFound,
  occupiesHost,
  truncate,
} from '@flotilla/domain';
import { Logger, statusWithDetails } from '@flotilla/platform';
import { toCandidateView } from '@flotilla/scheduler';
import { hostState, migrationHostToProto, migrationVmToProto } from '../mappers';
import { ComputeStore, Emit, writeVm } from '../persistence/compute-store';
import { HostRow, notMigrating, VmRow } from '../persistence/entities';
import { ImageCatalogue } from '../vms/image-catalogue';
import { Placement } from '../vms/placement';
import { withHostAddresses } from '../vms/vm-operations';
import { kernelBootOf, vmSpecOf } from '../vms/vm-spec';
import {
  blocker,
  BlockerHost,
  capacityBlockers,
  migrationBlockers,
  placementRequestOf,
  sameHypervisor,
} from './migration-blockers';
import { cpuIncompatibility } from './cpu-compatibility';

/** Most hosts a check may exclude: the list is echoed nowhere, but it is held in memory. */
const excludeMax = 1000;
const lostReasonMax = 1024;

/** Source and destination of a migration holding a VM, by which side of its commit it is. */
interface Sides {
  sourceId: string | null;
  destinationId: string | null;
}

/**
 * Compute's side of a live migration (VmMigrationService): where a VM may go, and its placement while
 * the migration service moves it. A migration holds the VM from BeginVmMigration to EndVmMigration: its
 * current_operation_id is the migration's operation (no other operation starts), migration_host_id is the
 * other host of the move (capacity counts on both), and host reports from either host leave it alone.
 */
export class VmMigrationService {
  constructor(
    private readonly store: ComputeStore,
    private readonly placement: Placement,
    private readonly images: ImageCatalogue,
    private readonly logger: Logger,
  ) {}

  async check(req: computeV1.CheckVmMigrationRequest): Promise<computeV1.CheckVmMigrationResponse> {
    const migrationId = req.migrationId ? uuidField('migration_id', req.migrationId) : '';
    if (req.excludeHostIds.length > excludeMax)
      throw invalidArgument(
        'exclude_host_ids',
        `has ${req.excludeHostIds.length} ids; at most ${excludeMax}`,
      );
    const m = this.store.manager;
    const vm = await this.findVm(m, req.vmId, req.tenantId);
    const held = migrationId !== '' && vm.migrationId === migrationId ? sidesOf(vm) : undefined;
    const sourceId = held ? held.sourceId : vm.hostId;
    const source = sourceId ? await m.findOneByOrFail(HostRow, { id: sourceId }) : undefined;
    let destination = req.destinationHostId
      ? await this.findHost(m, req.destinationHostId, 'destination_host_id')
      : held?.destinationId
        ? await m.findOneByOrFail(HostRow, { id: held.destinationId })
        : undefined;
    const scheduled: commonV1.ErrorDetail[] = [];
    if (!destination) {
      const picked = await this.schedule(m, vm, source, req.excludeHostIds);
      if ('host' in picked) destination = picked.host;
      else scheduled.push(picked.blocker);
    }
    const blockers = [...(await this.blockersFor(m, vm, migrationId, source, destination)), ...scheduled];
    return {
      vm: migrationVmToProto(vm),
      source: source && migrationHostToProto(source),
      destination: destination && migrationHostToProto(destination),
      blockers,
    };
  }

  async begin(req: computeV1.BeginVmMigrationRequest): Promise<computeV1.BeginVmMigrationResponse> {
    const migrationId = uuidField('migration_id', req.migrationId);
    const operationId = uuidField('operation_id', req.operationId);
    if (!req.destinationHostId)
      throw invalidArgument(
        'destination_host_id',
        'is required: give the host CheckVmMigration named as the destination',
      );
    // Before any lock: a VM whose image cannot boot is refused without holding anything (a start does so).
    const boot = await kernelBootOf(
      this.images,
      await this.findVm(this.store.manager, req.vmId, req.tenantId),
    );
    const { vm, source, destination } = await this.store.tx(async (m, emit) => {
      // The destination's row first, as a start's reservation locks it: reservations on a host serialise.
      const asked = await this.findHost(m, req.destinationHostId, 'destination_host_id', true);
      const vm = await this.findVm(m, req.vmId, req.tenantId, true);
      if (vm.migrationId === migrationId) return this.heldBy(m, vm, asked);
      const source = vm.hostId ? await m.findOneByOrFail(HostRow, { id: vm.hostId }) : undefined;
      const blockers = await this.blockersFor(m, vm, migrationId, source, asked);
      if (blockers.length) throw refusal(vm, asked, blockers);
      const saved = await this.updateVm(m, emit, vm, {
        currentOperationId: operationId,
        migrationId,
        // A HALTED VM holds no host: its move (offline, by its disks) reserves nothing.
        migrationHostId: vm.hostId ? asked.id : null,
        migrationCommitted: false,
      });
      return { vm: saved, source, destination: asked };
    });
    this.logger.info(
      { vmId: vm.id, migrationId, operationId, source: source?.name, destination: destination.name },
      'migration holds the VM',
    );
    return {
      vm: migrationVmToProto(vm),
      source: source && migrationHostToProto(source),
      destination: migrationHostToProto(destination),
      // Disks come from storage (the destination's copies or the shared SR's), not from here.
      spec: vmSpecOf(vm, boot, []),
    };
  }

  async commit(req: computeV1.CommitVmMigrationRequest): Promise<computeV1.CommitVmMigrationResponse> {
    const migrationId = uuidField('migration_id', req.migrationId);
    const vm = await this.store.tx(async (m, emit) => {
      const vm = await this.findVm(m, req.vmId, '', true);
      if (vm.migrationId !== migrationId)
        throw failedPrecondition(
          `vm ${vm.name} is not held by migration ${migrationId}${vm.migrationId ? ` (migration ${vm.migrationId} holds it)` : ''}: begin the migration first (BeginVmMigration)`,
          { resource: `vm ${vm.id}` },
        );
      if (vm.migrationCommitted) return vm;
      // The destination becomes the VM's host; the source keeps its reservation until the migration ends.
      return this.updateVm(m, emit, vm, {
        migrationCommitted: true,
        ...(vm.hostId && vm.migrationHostId
          ? {
              hostId: vm.migrationHostId,
              migrationHostId: vm.hostId,
              nics: withHostAddresses(vm.nics, req.nics),
            }
          : {}),
      });
    });
    return { vm: migrationVmToProto(vm) };
  }

  async end(req: computeV1.EndVmMigrationRequest): Promise<computeV1.EndVmMigrationResponse> {
    const migrationId = uuidField('migration_id', req.migrationId);
    if (req.lostReason.length > lostReasonMax)
      throw invalidArgument(
        'lost_reason',
        `is ${req.lostReason.length} characters; at most ${lostReasonMax}`,
      );
    if (!isUuid(req.vmId)) throw invalidArgument('vm_id', 'is required: a VM id (a UUID)');
    const { vm, ended } = await this.store.tx(async (m, emit) => {
      const vm = await m.findOne(VmRow, {
        where: { id: req.vmId.toLowerCase() },
        lock: { mode: 'pessimistic_write' },
      });
      // Not held (never, or no longer: a repeated end), or gone since: nothing to release.
      if (!vm || vm.migrationId !== migrationId) return { vm, ended: false };
      const host = vm.hostId ? await m.findOneByOrFail(HostRow, { id: vm.hostId }) : undefined;
      const saved = await this.updateVm(m, emit, vm, {
        ...notMigrating,
        currentOperationId: null,
        ...(req.lostReason
          ? { powerState: 'HALTED', hostId: null, powerStateReason: req.lostReason }
          : host && hostState(host) === 'DOWN' && (vm.powerState === 'RUNNING' || vm.powerState === 'PAUSED')
            ? // The reaper leaves held VMs alone: what it would have said is said now.
              { powerState: 'UNKNOWN', powerStateReason: `host ${host.name} is DOWN (${host.stateReason})` }
            : {}),
      });
      return { vm: saved, ended: true };
    });
    if (ended)
      this.logger.info({ vmId: req.vmId, migrationId, lost: req.lostReason || undefined }, 'migration ended');
    return { vm: vm ? migrationVmToProto(vm) : undefined };
  }

  /** Compute's blockers for moving `vm` from `source` to `destination` now. */
  private async blockersFor(
    m: EntityManager,
    vm: VmRow,
    migrationId: string,
    source: HostRow | undefined,
    destination: HostRow | undefined,
  ): Promise<commonV1.ErrorDetail[]> {
    const candidate = destination
      ? await this.placement.candidate(m, destination.id, { exceptVmId: vm.id })
      : undefined;
    return migrationBlockers({
      vm,
      migrationId,
      holdsCapacity: occupiesHost(vm.powerState),
      source: source && blockerHost(source),
      destination:
        destination && candidate
          ? { host: blockerHost(destination), view: toCandidateView(candidate, this.placement.policy) }
          : undefined,
    });
  }

  /**
   * The scheduler's pick for the VM: never its source nor an excluded host, and only hosts of the source's
   * driver and accelerator that give a running VM its CPU. NO_DESTINATION with each filter's rejection
   * count when nothing fits, and how many hosts were left out for their hypervisor or CPU.
   */
  private async schedule(
    m: EntityManager,
    vm: VmRow,
    source: HostRow | undefined,
    exclude: string[],
  ): Promise<{ host: HostRow } | { blocker: commonV1.ErrorDetail }> {
    const { unlike, cpuUnlike } = source
      ? await this.unlikeHosts(m, vm, source)
      : { unlike: [], cpuUnlike: [] };
    const excluded = new Set([
      ...exclude,
      ...(source ? [source.id] : []),
      ...[...unlike, ...cpuUnlike].map((h) => h.id),
    ]);
    const result = await this.placement.place(
      m,
      { ...placementRequestOf(vm), excludeHostIds: [...excluded] },
      vm.id,
    );
    if (result.ok) return { host: await m.findOneByOrFail(HostRow, { id: result.hostId }) };
    const notes = [
      unlike.length
        ? `${unlike.length} run another driver or accelerator than host ${source?.name ?? ''}`
        : '',
      cpuUnlike.length
        ? `${cpuUnlike.length} lack the CPU model or flags vm ${vm.name} sees on host ${source?.name ?? ''}`
        : '',
    ].filter(Boolean);
    const note = notes.length ? ` (of the excluded hosts, ${notes.join('; ')})` : '';
    return {
      blocker: blocker(
        'NO_DESTINATION',
        `${result.message}${note}: free capacity, enable hosts, or relax the VM's placement constraints`,
        { kind: 'vm', id: vm.id },
      ),
    };
  }

  /** Hosts the VM cannot move to from `source`: another hypervisor, or (VM running) another CPU. */
  private async unlikeHosts(
    m: EntityManager,
    vm: VmRow,
    source: HostRow,
  ): Promise<{ unlike: HostRow[]; cpuUnlike: HostRow[] }> {
    const others = (await m.find(HostRow)).filter((h) => h.id !== source.id);
    const unlike = others.filter((h) => !sameHypervisor(h, source));
    const cpuUnlike = occupiesHost(vm.powerState)
      ? others.filter((h) => sameHypervisor(h, source) && cpuIncompatibility(vm.name, source, h))
      : [];
    return { unlike, cpuUnlike };
  }

  /** A begin repeated for the migration that holds the VM: its state as it is, nothing re-checked. */
  private async heldBy(
    m: EntityManager,
    vm: VmRow,
    asked: HostRow,
  ): Promise<{ vm: VmRow; source: HostRow | undefined; destination: HostRow }> {
    const { sourceId, destinationId } = sidesOf(vm);
    return {
      vm,
      source: sourceId ? await m.findOneByOrFail(HostRow, { id: sourceId }) : undefined,
      destination: destinationId ? await m.findOneByOrFail(HostRow, { id: destinationId }) : asked,
    };
  }

  private async findVm(m: EntityManager, id: string, tenantId: string, lock = false): Promise<VmRow> {
    if (!isUuid(id)) throw invalidArgument('vm_id', 'is required: a VM id (a UUID)');
    const vm = await m.findOne(VmRow, {
      where: { id: id.toLowerCase() },
      ...(lock ? { lock: { mode: 'pessimistic_write' as const } } : {}),
    });
    if (!vm || (tenantId && vm.tenantId !== tenantId)) throw notFound('vm', id);
    return vm;
  }

  private async findHost(m: EntityManager, idOrName: string, field: string, lock = false): Promise<HostRow> {
    const where = isUuid(idOrName) ? { id: idOrName.toLowerCase() } : { name: idOrName };
    const host = await m.findOne(HostRow, {
      where,
      ...(lock ? { lock: { mode: 'pessimistic_write' as const } } : {}),
    });
    if (!host)
      throw new DomainError(
        ErrorCode.NotFound,
        `${field}: host ${JSON.stringify(truncate(idOrName, 80))} not found: see ListHosts`,
        { field, resource: `host ${truncate(idOrName, 80)}` },
      );
    return host;
  }

  private async updateVm(
    m: EntityManager,
    emit: Emit,
    vm: VmRow,
    changes: Partial<
      Pick<
        VmRow,
        | 'currentOperationId'
        | 'migrationId'
        | 'migrationHostId'
        | 'migrationCommitted'
        | 'hostId'
        | 'nics'
        | 'powerState'
        | 'powerStateReason'
      >
    >,
  ): Promise<VmRow> {
    return writeVm(m, emit, vm, changes);
  }
}

function sidesOf(vm: VmRow): Sides {
  return vm.migrationCommitted
    ? { sourceId: vm.migrationHostId, destinationId: vm.hostId }
    : { sourceId: vm.hostId, destinationId: vm.migrationHostId };
}

function blockerHost(h: HostRow): BlockerHost {
  return {
    id: h.id,
    name: h.name,
    state: hostState(h),
    stateReason: h.stateReason,
    driver: h.driver,
    accelerator: h.accelerator,
    cpuModel: h.cpuModel,
    cpuFlags: h.cpuFlags,
  };
}

function uuidField(field: string, value: string): string {
  if (!isUuid(value)) throw invalidArgument(field, 'is required: a UUID');
  return value.toLowerCase();
}

/** Begin refused: RESOURCE_EXHAUSTED when only capacity stands in the way, else FAILED_PRECONDITION. */
function refusal(vm: VmRow, destination: HostRow, blockers: commonV1.ErrorDetail[]) {
  const code = blockers.every((b) => capacityBlockers.has(b.reason))
    ? ErrorCode.ResourceExhausted
    : ErrorCode.FailedPrecondition;
  return statusWithDetails(
    new DomainError(
      code,
      `vm ${vm.name} cannot migrate to host ${destination.name}: ${blockers.map((b) => b.description).join('; ')}`,
      { resource: `vm ${vm.id}` },
    ),
    blockers,
  );
}
