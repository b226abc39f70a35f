import { EntityManager } from 'typeorm';
import { computeV1 } from '@flotilla/contracts';
import { DomainError, ErrorCode, expectPresent, isDomainError, isTerminal } from '@flotilla/domain';
import { domainErrorFromGrpc, Logger, OperationService } from '@flotilla/platform';
import { AgentClients } from '../hosts/agent-clients';
import { hostState } from '../mappers';
import { Emit, events, ComputeStore, writeVm } from '../persistence/compute-store';
import { HostRow, NicRow, OperationRow, VmRow } from '../persistence/entities';
import { OperationRunner } from '../operations/operation-runner';
import { OperationSuperseded, recordStep } from '../operations/operation-steps';
import { ImageCatalogue } from './image-catalogue';
import { Placement } from './placement';
import { VmDisks } from './vm-disks';
import { VmSnapshotOperations } from './vm-snapshot-operations';
import { kernelBootOf, vmSpecOf } from './vm-spec';

/** A create's root disk could not be made; `releaseError` says whether what storage made was undone. */
class RootDiskFailed extends Error {
  constructor(
    readonly error: DomainError,
    readonly releaseError: DomainError | undefined,
  ) {
    super(error.message);
  }
}

const reservationAttempts = 3;
/** A create's progress once its root disk is made. */
const rootDiskReady = 0.3;

const startsVm = (op: OperationRow): boolean =>
  op.kind === 'vm.start' || (op.kind === 'vm.create' && op.params.start === true);

/**
 * Carries out VM lifecycle operations against host agents. Every step is idempotent and reads what was
 * already done from the records, so a restarted compute service resumes an operation where it stopped.
 * A start's point of no return is the host reservation followed by the agent call; before it a cancel
 * leaves the VM untouched.
 */
export class VmOperations {
  constructor(
    private readonly store: ComputeStore,
    private readonly operations: OperationService,
    private readonly agents: AgentClients,
    private readonly placement: Placement,
    private readonly images: ImageCatalogue,
    private readonly disks: VmDisks,
    private readonly logger: Logger,
  ) {}

  register(runner: OperationRunner): void {
    for (const kind of [
      'vm.create',
      'vm.start',
      'vm.shutdown',
      'vm.reboot',
      'vm.pause',
      'vm.unpause',
      'vm.suspend',
      'vm.resume',
      'vm.destroy',
    ])
      runner.register(kind, (op) => this.run(op));
    new VmSnapshotOperations(this.store, this.operations, this.agents, this.disks, this.logger).register(
      runner,
    );
  }

  private async run(queued: OperationRow): Promise<void> {
    const log = this.logger.child({ operationId: queued.id, kind: queued.kind, vmId: queued.targetId });
    let op = await this.store.manager.findOneByOrFail(OperationRow, { id: queued.id });
    if (isTerminal(op.state)) return;
    try {
      // A start records RUNNING together with its host reservation (one transaction fewer).
      if (op.state === 'PENDING' && !startsVm(op))
        op = await this.step(op, { state: 'RUNNING', step: 'running' });
      let vm = await this.store.manager.findOneBy(VmRow, { id: op.targetId });
      if (!vm) {
        if (op.kind === 'vm.destroy') return await this.succeed(op, null);
        throw new DomainError(ErrorCode.NotFound, `vm ${op.targetId} no longer exists`);
      }
      switch (op.kind) {
        case 'vm.create':
          // A resumed create past its root disk (progress 0.3) goes on with the start.
          if (op.params.rootDisk === true && op.progress < rootDiskReady)
            ({ op, vm } = await this.provisionRootDisk(op, vm));
          return op.params.start ? await this.start(op, vm) : await this.succeed(op, vm);
        case 'vm.start':
          return await this.start(op, vm);
        case 'vm.shutdown':
          return await this.shutdown(op, vm);
        case 'vm.reboot':
          return await this.reboot(op, vm);
        case 'vm.pause':
        case 'vm.unpause':
          return await this.pauseOrUnpause(op, vm);
        case 'vm.suspend':
        case 'vm.resume':
          return await this.suspendOrResume(op, vm);
        case 'vm.destroy':
          return await this.destroy(op, vm);
        default:
          throw new DomainError(ErrorCode.Internal, `unknown operation kind ${op.kind}`);
      }
    } catch (e) {
      if (e instanceof OperationSuperseded) return log.info('operation was cancelled');
      if (e instanceof RootDiskFailed) {
        log.info({ code: e.error.code, reason: e.error.message }, 'root disk provisioning failed');
        return await this.failCreate(op.id, e);
      }
      const error = isDomainError(e) ? e : domainErrorFromGrpc(e);
      if (error.code === ErrorCode.Internal) log.error({ err: e }, 'operation failed unexpectedly');
      else log.info({ code: error.code, reason: error.message }, 'operation failed');
      if (startsVm(op)) await this.detachAfterFailedStart(op, log);
      await this.fail(op.id, error);
    }
  }

  private async start(op: OperationRow, vm: VmRow): Promise<void> {
    // Before the reservation: a VM whose image cannot boot fails without touching any host.
    const boot = await kernelBootOf(this.images, vm);
    if (!vm.hostId) ({ vm, op } = await this.reserve(op, vm));
    const host = await this.placedHost(vm);
    // Resumed after a restart with the host already reserved: record the point of no return if needed.
    if (!op.pointOfNoReturn)
      op = await this.step(op, {
        state: 'RUNNING',
        step: `starting on host ${host.name}`,
        progress: 0.5,
        pointOfNoReturn: true,
      });
    // Storage marks the VBDs attached on this host (refusing a VDI that is not READY, not visible from the
    // host, or written by another VM) and names the files: a failure here frees the host (see run).
    const disks = await this.disks.attach(vm.id, host.id);
    if (vm.boot.fromDisk && !disks.some((d) => d.bootable))
      throw new DomainError(
        ErrorCode.FailedPrecondition,
        `vm ${vm.name} boots from disk image ${vm.boot.image ?? ''} but has no bootable disk (its root disk was not provisioned or was removed): destroy the VM and create it again`,
        { resource: `vm ${vm.id}` },
      );
    const { status } = await this.agents.call(host, (a) =>
      a.startVm({ epoch: host.epoch, spec: vmSpecOf(vm, boot, disks) }),
    );
    await this.succeed(
      op,
      vm,
      { powerState: 'RUNNING', powerStateReason: '', nics: withHostAddresses(vm.nics, status?.nics ?? []) },
      { host_id: host.id },
    );
  }

  /**
   * The host the start must use: the one the caller pinned, or the one the VM's disks live on (a VDI on a
   * FILE SR serves VMs of its host only). Both at once must agree.
   */
  private async pinnedHost(op: OperationRow, vm: VmRow): Promise<string | undefined> {
    const asked = typeof op.params.hostId === 'string' ? op.params.hostId : undefined;
    const disksOn = await this.disks.requiredHost(vm.id);
    if (asked && disksOn && asked !== disksOn)
      throw new DomainError(
        ErrorCode.FailedPrecondition,
        `vm ${vm.name} has disks on a FILE SR of host ${disksOn}: it cannot start on host ${asked}; omit host_id or move its disks to a SHARED SR`,
        { field: 'host_id' },
      );
    return asked ?? disksOn;
  }

  /**
   * The create's first step for a VM of a DISK image: storage clones the image into the VM's root disk
   * (idempotent by VM id, so a resumed create asks again). If it fails, the VM must not stay half-made:
   * its disks are released and the VM record removed with the failed operation; if even the release
   * fails, the VM stays HALTED with the reason, and destroying it releases what is left.
   */
  private async provisionRootDisk(op: OperationRow, vm: VmRow): Promise<{ op: OperationRow; vm: VmRow }> {
    // Not cancellable from here: storage may be copying the image's base, and the VM keeps what it makes.
    op = await this.step(op, {
      state: 'RUNNING',
      step: 'provisioning the root disk',
      progress: 0.1,
      pointOfNoReturn: true,
    });
    try {
      await this.disks.provisionRootDisk({
        vmId: vm.id,
        vmName: vm.name,
        tenantId: vm.tenantId,
        image: String(op.params.image ?? vm.boot.image ?? ''),
        virtualSizeBytes: Number(op.params.rootDiskSizeBytes ?? 0),
        srId: String(op.params.rootDiskSr ?? ''),
      });
    } catch (e) {
      const error = isDomainError(e) ? e : domainErrorFromGrpc(e);
      const released = await this.disks.release(vm.id).then(
        () => undefined,
        (r: unknown) => (isDomainError(r) ? r : domainErrorFromGrpc(r)),
      );
      throw new RootDiskFailed(error, released);
    }
    op = await this.step(op, { step: 'root disk ready', progress: rootDiskReady });
    return { op, vm: await this.store.manager.findOneByOrFail(VmRow, { id: vm.id }) };
  }

  /** A start that failed leaves the VM HALTED: its disks must not stay marked attached to the host. */
  private async detachAfterFailedStart(op: OperationRow, log: Logger): Promise<void> {
    const vm = await this.store.manager.findOneBy(VmRow, { id: op.targetId });
    if (!vm || vm.powerState !== 'HALTED') return;
    await this.disks.detach(vm.id, '').catch((e: unknown) =>
      // The VBDs then read ATTACHED on a HALTED VM until its next start or destroy, which fix them.
      log.warn({ err: e }, 'could not detach the disks of a VM whose start failed'),
    );
  }

  /**
   * Places the VM and records, in one transaction, the host as holding its capacity (re-checked with the
   * host row locked) and the operation past its point of no return. A cancel that wins the race leaves
   * the VM untouched: the operation's version check rolls the reservation back.
   */
  private async reserve(op: OperationRow, vm: VmRow): Promise<{ vm: VmRow; op: OperationRow }> {
    const pinned = await this.pinnedHost(op, vm);
    const request = {
      vcpus: vm.vcpus,
      memoryMib: vm.memoryMib,
      requiredLabels: vm.requiredHostLabels,
      antiAffinityGroup: vm.antiAffinityGroup || undefined,
    };
    const excluded: string[] = [];
    for (let attempt = 1; ; attempt++) {
      const hostId =
        pinned ?? (await this.placement.choose(this.store.manager, { ...request, excludeHostIds: excluded }));
      const reserved = await this.store
        .tx(async (m, emit) => {
          const current = await this.freshIn(m, op);
          if (!(await this.placement.stillFits(m, hostId, request))) return undefined;
          const row = await m.findOneByOrFail(VmRow, { id: vm.id });
          const saved = await writeVm(m, emit, { id: vm.id, version: row.version }, { hostId });
          const host = await m.findOneByOrFail(HostRow, { id: hostId });
          const advanced = await this.operations.advance(m, emit, current, {
            state: 'RUNNING',
            step: `starting on host ${host.name}`,
            progress: 0.5,
            pointOfNoReturn: true,
          });
          return { vm: saved, op: advanced };
        })
        .catch(async (e: unknown) => {
          const now = await this.store.manager.findOneBy(OperationRow, { id: op.id });
          throw now && isTerminal(now.state) ? new OperationSuperseded() : e;
        });
      if (reserved) return reserved;
      if (pinned)
        throw new DomainError(
          ErrorCode.ResourceExhausted,
          `host ${pinned} cannot take vm ${vm.name} now: it is not ENABLED or lacks capacity${
            op.params.hostId ? '' : " (the VM's disks are on a FILE SR of that host)"
          }`,
        );
      if (attempt >= reservationAttempts)
        throw new DomainError(
          ErrorCode.Conflict,
          `placement of vm ${vm.name} lost ${attempt} races for capacity: retry`,
        );
      excluded.push(hostId);
    }
  }

  private async shutdown(op: OperationRow, vm: VmRow): Promise<void> {
    const hard = op.params.operation === 'HARD_SHUTDOWN';
    const host = vm.hostId ? await this.host(vm.hostId) : undefined;
    // A VM whose host is DOWN is recorded HALTED now; when the host returns it is told to destroy it.
    if (host && !(hard && hostState(host) === 'DOWN')) {
      op = await this.step(op, {
        step: `${hard ? 'hard' : 'clean'} shutdown on host ${host.name}`,
        progress: 0.3,
        pointOfNoReturn: true,
      });
      const timeoutMs = typeof op.params.timeoutMs === 'number' ? op.params.timeoutMs : 60_000;
      await this.agents.call(host, (a) =>
        a.shutdownVm(
          { epoch: host.epoch, vmId: vm.id, hard, timeoutMs },
          { deadlineMs: timeoutMs + this.agents.deadline() },
        ),
      );
    }
    // The VM is stopped: its disks are free for other VMs (an error fails the operation, which a retry
    // of the shutdown repeats: both calls are idempotent).
    await this.disks.detach(vm.id, '');
    await this.succeed(op, vm, {
      powerState: 'HALTED',
      powerStateReason:
        host && hostState(host) === 'DOWN' ? `hard shutdown recorded while host ${host.name} was DOWN` : '',
      hostId: null,
    });
  }

  private async reboot(op: OperationRow, vm: VmRow): Promise<void> {
    const host = await this.placedHost(vm);
    const hard = op.params.operation === 'HARD_REBOOT';
    op = await this.step(op, {
      step: `${hard ? 'hard' : 'clean'} reboot on host ${host.name}`,
      progress: 0.3,
      pointOfNoReturn: true,
    });
    await this.agents.call(host, (a) => a.rebootVm({ epoch: host.epoch, vmId: vm.id, hard }));
    await this.succeed(op, vm, { powerState: 'RUNNING', powerStateReason: '' });
  }

  private async pauseOrUnpause(op: OperationRow, vm: VmRow): Promise<void> {
    const host = await this.placedHost(vm);
    const pause = op.kind === 'vm.pause';
    op = await this.step(op, {
      step: `${pause ? 'pausing' : 'unpausing'} on host ${host.name}`,
      progress: 0.3,
      pointOfNoReturn: true,
    });
    await this.agents.call(host, (a) =>
      pause ? a.pauseVm({ epoch: host.epoch, vmId: vm.id }) : a.unpauseVm({ epoch: host.epoch, vmId: vm.id }),
    );
    await this.succeed(op, vm, { powerState: pause ? 'PAUSED' : 'RUNNING', powerStateReason: '' });
  }

  private async suspendOrResume(op: OperationRow, vm: VmRow): Promise<void> {
    const host = await this.placedHost(vm);
    const suspend = op.kind === 'vm.suspend';
    op = await this.step(op, {
      step: `${suspend ? 'suspending' : 'resuming'} on host ${host.name}`,
      progress: 0.3,
      pointOfNoReturn: true,
    });
    const { status } = await this.agents.call(host, (a) =>
      suspend
        ? a.suspendVm({ epoch: host.epoch, vmId: vm.id })
        : a.resumeVm({ epoch: host.epoch, vmId: vm.id }),
    );
    await this.succeed(op, vm, {
      powerState: suspend ? 'SUSPENDED' : 'RUNNING',
      powerStateReason: '',
      nics: withHostAddresses(vm.nics, status?.nics ?? []),
    });
  }

  private async destroy(op: OperationRow, vm: VmRow): Promise<void> {
    // A halted VM's definition (console history, saved files) stays on the host it last ran on.
    const hostId = vm.hostId ?? (await this.store.lastHostOf(vm.id));
    const host = hostId ? await this.store.manager.findOneBy(HostRow, { id: hostId }) : undefined;
    op = await this.step(op, {
      step: host ? `destroying on host ${host.name}` : 'deleting',
      progress: 0.3,
      pointOfNoReturn: true,
    });
    if (host && hostState(host) !== 'DOWN')
      await this.agents.call(host, (a) => a.destroyVm({ epoch: host.epoch, vmId: vm.id }));
    // A DOWN host is told when it reports again: the VM is then unknown to the pool.
    try {
      // Its VBDs and its root disk go with it; other VDIs stay.
      await this.disks.release(vm.id);
    } catch (e) {
      // The VM no longer runs anywhere: record it HALTED, so that a repeated destroy releases the rest.
      await this.updateVmAfter(op, vm, { powerState: 'HALTED', hostId: null, powerStateReason: '' });
      throw e;
    }
    await this.succeed(op, null, undefined, { vm_id: vm.id }, vm);
  }

  /** Finishes the operation and applies the VM's new state in one transaction. */
  private async succeed(
    op: OperationRow,
    vm: VmRow | null,
    changes?: Partial<Pick<VmRow, 'powerState' | 'powerStateReason' | 'hostId' | 'nics'>>,
    result: Record<string, string> = {},
    deleted?: VmRow,
  ): Promise<void> {
    const done = await this.store.tx(async (m, emit) => {
      const current = await this.freshIn(m, op);
      if (deleted) {
        const row = await m.findOneBy(VmRow, { id: deleted.id });
        if (row) {
          await m.delete(VmRow, { id: deleted.id });
          emit(events.vm('DELETED', row));
        }
      } else if (vm) {
        await this.updateVm(m, emit, vm.id, { ...changes, currentOperationId: null });
      }
      return this.operations.finish(m, emit, current, {
        state: 'SUCCEEDED',
        result: { vm_id: op.targetId, ...result },
      });
    });
    this.operations.announce(done);
  }

  /**
   * A create whose root disk failed: the VM goes with the failed operation when its disks were released;
   * otherwise it stays HALTED saying why, and a destroy releases what is left.
   */
  private async failCreate(opId: string, failure: RootDiskFailed): Promise<void> {
    const done = await this.store.tx(async (m, emit) => {
      const op = await m.findOneByOrFail(OperationRow, { id: opId });
      if (isTerminal(op.state)) return undefined;
      const vm = await m.findOneBy(VmRow, { id: op.targetId });
      if (vm && failure.releaseError) {
        await this.updateVm(m, emit, vm.id, {
          currentOperationId: null,
          powerStateReason: `root disk provisioning failed (${failure.error.message}) and its disks could not be released (${failure.releaseError.message}): destroy the VM`,
        });
      } else if (vm) {
        await m.delete(VmRow, { id: vm.id });
        emit(events.vm('DELETED', vm));
      }
      return this.operations.finish(m, emit, op, { state: 'FAILED', error: failure.error });
    });
    if (done) this.operations.announce(done);
  }

  private async updateVmAfter(
    op: OperationRow,
    vm: VmRow,
    changes: Partial<Pick<VmRow, 'powerState' | 'powerStateReason' | 'hostId'>>,
  ): Promise<void> {
    await this.store.tx(async (m, emit) => {
      await this.freshIn(m, op);
      await this.updateVm(m, emit, vm.id, changes);
    });
  }

  /** Records the failure and gives the VM back its stable state (a start that failed frees its host). */
  private async fail(opId: string, error: DomainError): Promise<void> {
    const done = await this.store.tx(async (m, emit) => {
      const op = await m.findOneByOrFail(OperationRow, { id: opId });
      if (isTerminal(op.state)) return undefined;
      const vm = await m.findOneBy(VmRow, { id: op.targetId });
      if (vm && vm.currentOperationId === op.id) {
        const releases = (op.kind === 'vm.start' || op.kind === 'vm.create') && vm.powerState === 'HALTED';
        await this.updateVm(m, emit, vm.id, {
          currentOperationId: null,
          ...(releases ? { hostId: null } : {}),
        });
      }
      return this.operations.finish(m, emit, op, { state: 'FAILED', error });
    });
    if (done) this.operations.announce(done);
  }

  private async updateVm(
    m: EntityManager,
    emit: Emit,
    id: string,
    changes: Partial<
      Pick<VmRow, 'powerState' | 'powerStateReason' | 'hostId' | 'currentOperationId' | 'nics'>
    >,
  ): Promise<void> {
    const vm = await m.findOneByOrFail(VmRow, { id });
    await writeVm(m, emit, vm, changes);
  }

  private async step(
    op: OperationRow,
    changes: Partial<Pick<OperationRow, 'state' | 'step' | 'progress' | 'pointOfNoReturn'>>,
  ): Promise<OperationRow> {
    return recordStep({ store: this.store, operations: this.operations, op, changes });
  }

  private async freshIn(m: EntityManager, op: OperationRow): Promise<OperationRow> {
    const now = await m.findOneByOrFail(OperationRow, { id: op.id });
    if (isTerminal(now.state)) throw new OperationSuperseded();
    return now;
  }

  private async host(id: string): Promise<HostRow> {
    return this.store.manager.findOneByOrFail(HostRow, { id });
  }

  /** The host of a VM that is placed: started (reserve places it), running, paused or suspended on a host. */
  private async placedHost(vm: VmRow): Promise<HostRow> {
    return this.host(
      expectPresent(vm.hostId, `vm ${vm.name} (${vm.id}) has no host, yet its operation needs one`),
    );
  }
}

/**
 * The recorded NICs with the host addresses the agent reports for their forwarded ports. A reported NIC
 * without a MAC stands for all of them (the user-mode NICs of one VM share the host's loopback).
 */
export function withHostAddresses(nics: NicRow[], reported: computeV1.Nic[]): NicRow[] {
  const addressOf = (mac: string, port: number) =>
    reported
      .filter((n) => n.mac === mac || n.mac === '')
      .flatMap((n) => n.forwards)
      .find((f) => f.guestPort === port && f.hostAddress)?.hostAddress;
  return nics.map((nic) => ({
    mac: nic.mac,
    forwards: nic.forwards.map((f) => {
      const hostAddress = addressOf(nic.mac, f.guestPort);
      return hostAddress ? { guestPort: f.guestPort, hostAddress } : { guestPort: f.guestPort };
    }),
  }));
}
