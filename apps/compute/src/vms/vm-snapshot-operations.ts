import { EntityManager } from 'typeorm';
import { DomainError, ErrorCode, isDomainError, isTerminal } from '@flotilla/domain';
import { domainErrorFromGrpc, Logger, OperationService } from '@flotilla/platform';
import { AgentClients } from '../hosts/agent-clients';
import { Emit, events, ComputeStore, writeVm } from '../persistence/compute-store';
import { HostRow, OperationRow, VmRow } from '../persistence/entities';
import { OperationRunner } from '../operations/operation-runner';
import { OperationSuperseded, recordStep } from '../operations/operation-steps';
import { VmDisks } from './vm-disks';
import { snapshotMetadata } from './vm-snapshots';

type VmChanges = Partial<Omit<VmRow, 'id' | 'tenantId' | 'version' | 'createdAt' | 'updatedAt'>>;

/**
 * Carries out vm.snapshot, vm.clone and vm.revert. Each runs past its point of no return from its first
 * step (storage work follows) and repeats idempotent calls when resumed after a restart: storage keys its
 * disk work by the VM ids and the operation id, the agent's pause and unpause are idempotent. A snapshot
 * or clone that fails leaves no VM record and no disk (storage undoes its part; compute releases
 * whatever is left and deletes the record); a revert that fails leaves the VM HALTED, and repeating it
 * finishes the disks that were not reverted.
 */
export class VmSnapshotOperations {
  constructor(
    private readonly store: ComputeStore,
    private readonly operations: OperationService,
    private readonly agents: AgentClients,
    private readonly disks: VmDisks,
    private readonly logger: Logger,
  ) {}

  register(runner: OperationRunner): void {
    for (const kind of ['vm.snapshot', 'vm.clone', 'vm.revert']) runner.register(kind, (op) => this.run(op));
  }

  private async run(queued: OperationRow): Promise<void> {
    const log = this.logger.child({ operationId: queued.id, kind: queued.kind, vmId: queued.targetId });
    let op = await this.store.manager.findOneByOrFail(OperationRow, { id: queued.id });
    if (isTerminal(op.state)) return;
    try {
      op = await this.step(op, { state: 'RUNNING', step: 'running', progress: 0.1, pointOfNoReturn: true });
      if (op.kind === 'vm.snapshot') return await this.snapshot(op, log);
      if (op.kind === 'vm.clone') return await this.clone(op);
      return await this.revert(op);
    } catch (e) {
      if (e instanceof OperationSuperseded) return log.info('operation was cancelled');
      const error = isDomainError(e) ? e : domainErrorFromGrpc(e);
      if (error.code === ErrorCode.Internal) log.error({ err: e }, 'operation failed unexpectedly');
      else log.info({ code: error.code, reason: error.message }, 'operation failed');
      await this.fail(op, error, log);
    }
  }

  /**
   * The VM's disks are taken as one set: a running VM is paused on its host around the storage call
   * (unpaused whatever its outcome), so no write lands on one disk between the snapshots of two others.
   */
  private async snapshot(op: OperationRow, log: Logger): Promise<void> {
    const vm = await this.vm(op.targetId);
    const snapshot = await this.vm(String(op.params.snapshotId));
    const host = op.params.pauses === true && vm.hostId ? await this.host(vm.hostId) : undefined;
    if (host) {
      op = await this.step(op, {
        step: `pausing on host ${host.name} for a consistent set of disks`,
        progress: 0.2,
      });
      await this.agents.call(host, (a) => a.pauseVm({ epoch: host.epoch, vmId: vm.id }));
    }
    try {
      op = await this.step(op, { step: 'snapshotting the disks', progress: 0.4 });
      await this.disks.snapshotDisks({ vmId: vm.id, snapshotVmId: snapshot.id, snapshotName: snapshot.name });
    } finally {
      if (host)
        await this.agents
          .call(host, (a) => a.unpauseVm({ epoch: host.epoch, vmId: vm.id }))
          // The host's next report records the VM PAUSED: the snapshot itself is good.
          .catch((e: unknown) => log.warn({ err: e }, 'could not unpause the VM after its snapshot'));
    }
    await this.succeed(op, { vm_id: vm.id, snapshot_id: snapshot.id }, async (m, emit) => {
      await this.update(m, emit, vm.id, { currentOperationId: null });
      await this.update(m, emit, snapshot.id, { currentOperationId: null });
    });
  }

  private async clone(op: OperationRow): Promise<void> {
    const vm = await this.vm(op.targetId);
    const snapshot = await this.vm(String(op.params.snapshotId));
    op = await this.step(op, { step: `cloning the disks of snapshot ${snapshot.name}`, progress: 0.3 });
    await this.disks.cloneDisks({ snapshotVmId: snapshot.id, vmId: vm.id, vmName: vm.name });
    await this.succeed(op, { vm_id: vm.id, snapshot_id: snapshot.id }, (m, emit) =>
      this.update(m, emit, vm.id, { currentOperationId: null }),
    );
  }

  /** Disks first, then (in the finishing transaction) the metadata the snapshot recorded. */
  private async revert(op: OperationRow): Promise<void> {
    const vm = await this.vm(op.targetId);
    const snapshot = await this.vm(String(op.params.snapshotId));
    op = await this.step(op, { step: `reverting the disks to snapshot ${snapshot.name}`, progress: 0.3 });
    await this.disks.revertDisks({ vmId: vm.id, snapshotVmId: snapshot.id, requestId: op.id });
    await this.succeed(op, { vm_id: vm.id, snapshot_id: snapshot.id }, (m, emit) =>
      this.update(m, emit, vm.id, {
        ...snapshotMetadata(snapshot),
        powerStateReason: '',
        currentOperationId: null,
      }),
    );
  }

  /**
   * A failed snapshot or clone takes away the VM record it made, once storage holds nothing of it; if
   * that cannot be confirmed the record stays (HALTED, saying why) and destroying it releases the rest.
   */
  private async fail(op: OperationRow, error: DomainError, log: Logger): Promise<void> {
    const madeId =
      op.kind === 'vm.snapshot'
        ? String(op.params.snapshotId)
        : op.kind === 'vm.clone'
          ? op.targetId
          : undefined;
    const released = madeId
      ? await this.disks.release(madeId).then(
          () => undefined,
          (e: unknown) => (isDomainError(e) ? e : domainErrorFromGrpc(e)),
        )
      : undefined;
    if (released)
      log.warn({ reason: released.message }, 'could not release the disks of a failed snapshot or clone');
    const done = await this.store.tx(async (m, emit) => {
      const current = await m.findOneByOrFail(OperationRow, { id: op.id });
      if (isTerminal(current.state)) return undefined;
      for (const row of await m.findBy(VmRow, { currentOperationId: op.id })) {
        if (row.id !== madeId) await this.update(m, emit, row.id, { currentOperationId: null });
        else if (!released) {
          await m.delete(VmRow, { id: row.id });
          emit(events.vm('DELETED', row));
        } else
          await this.update(m, emit, row.id, {
            currentOperationId: null,
            powerStateReason: `${op.kind === 'vm.snapshot' ? 'snapshot' : 'clone'} failed (${error.message}) and its disks could not be released (${released.message}): destroy it`,
          });
      }
      return this.operations.finish(m, emit, current, { state: 'FAILED', error });
    });
    if (done) this.operations.announce(done);
  }

  private async succeed(
    op: OperationRow,
    result: Record<string, string>,
    apply: (m: EntityManager, emit: Emit) => Promise<void>,
  ): Promise<void> {
    const done = await this.store.tx(async (m, emit) => {
      const current = await m.findOneByOrFail(OperationRow, { id: op.id });
      if (isTerminal(current.state)) throw new OperationSuperseded();
      await apply(m, emit);
      return this.operations.finish(m, emit, current, { state: 'SUCCEEDED', result });
    });
    this.operations.announce(done);
  }

  private async update(m: EntityManager, emit: Emit, id: string, changes: VmChanges): Promise<void> {
    const vm = await m.findOneBy(VmRow, { id });
    if (!vm) return;
    await writeVm(m, emit, vm, changes);
  }

  private async step(
    op: OperationRow,
    changes: Partial<Pick<OperationRow, 'state' | 'step' | 'progress' | 'pointOfNoReturn'>>,
  ): Promise<OperationRow> {
    return recordStep({ store: this.store, operations: this.operations, op, changes });
  }

  private async vm(id: string): Promise<VmRow> {
    const row = await this.store.manager.findOneBy(VmRow, { id });
    if (!row) throw new DomainError(ErrorCode.NotFound, `vm ${id} no longer exists`);
    return row;
  }

  private async host(id: string): Promise<HostRow> {
    return this.store.manager.findOneByOrFail(HostRow, { id });
  }
}
