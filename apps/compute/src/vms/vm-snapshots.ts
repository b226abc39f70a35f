import { randomUUID } from 'node:crypto';
import { EntityManager } from 'typeorm';
import { computeV1 } from '@flotilla/contracts';
import {
  DomainError,
  ErrorCode,
  failedPrecondition,
  invalidArgument,
  validateLabels,
  validateName,
  validateNics,
  validateRequestId,
} from '@flotilla/domain';
import { Caller, OperationRow, OperationService, pooledRandomBytes, requireRole } from '@flotilla/platform';
import { Emit, events, ComputeStore, writeVm } from '../persistence/compute-store';
import { notMigrating, VmRow } from '../persistence/entities';
import { OperationRunner } from '../operations/operation-runner';
import { VmService } from './vm.service';
import { assertVmOperationAllowed } from './vm-guard';

/** What a VM snapshot keeps of its VM, and what a revert restores: the hardware, not the identity. */
export const snapshotMetadata = (
  vm: VmRow,
): Pick<
  VmRow,
  | 'flavorId'
  | 'vcpus'
  | 'memoryMib'
  | 'rootDiskGib'
  | 'boot'
  | 'nics'
  | 'antiAffinityGroup'
  | 'requiredHostLabels'
> => ({
  flavorId: vm.flavorId,
  vcpus: vm.vcpus,
  memoryMib: vm.memoryMib,
  rootDiskGib: vm.rootDiskGib,
  boot: vm.boot,
  // Host addresses of forwarded ports belong to a run of the VM, not to its definition.
  nics: vm.nics.map((n) => ({ mac: n.mac, forwards: n.forwards.map((f) => ({ guestPort: f.guestPort })) })),
  antiAffinityGroup: vm.antiAffinityGroup,
  requiredHostLabels: vm.requiredHostLabels,
});

/**
 * VM snapshots (XAPI vm-snapshot, vm-clone of a snapshot, snapshot-revert): the requests. Each records its
 * operation with the VM records it touches in one transaction (the snapshot or the new VM is created
 * there, carrying the operation as its current one); VmSnapshotOperations carries them out.
 */
export class VmSnapshots {
  constructor(
    private readonly store: ComputeStore,
    private readonly operations: OperationService,
    private readonly runner: OperationRunner,
    private readonly vms: VmService,
  ) {}

  async snapshot(
    caller: Caller,
    req: computeV1.SnapshotVmRequest,
  ): Promise<{ snapshot: VmRow; operation: OperationRow }> {
    requireRole(caller, 'vm-power-admin', 'snapshotting a VM');
    const requestId = validateRequestId(req.requestId);
    const labels = validateLabels('labels', req.labels);
    if (req.name) validateName('name', req.name);
    const out = await this.store.tx(async (m, emit) => {
      const vm = await this.vms.get(caller, req.id, m, true);
      const spec = {
        kind: 'vm.snapshot',
        target: { kind: 'vm', id: vm.id, name: vm.name },
        tenantId: vm.tenantId,
        requestId,
      };
      const earlier = await this.operations.findByRequest(m, spec);
      if (earlier) {
        const made = await m.findOneBy(VmRow, { id: String(earlier.params.snapshotId) });
        if (!made)
          throw failedPrecondition(
            `request_id ${requestId ?? ''} made snapshot ${String(earlier.params.snapshotId)}, which is gone (${earlier.state.toLowerCase()}): use a new request_id`,
            { field: 'request_id' },
          );
        return { snapshot: made, operation: earlier, isNew: false };
      }
      assertVmOperationAllowed(vm, 'SNAPSHOT');
      const now = new Date();
      const name = req.name || defaultSnapshotName(vm.name, now);
      await this.assertNameFree(m, vm.tenantId, name);
      const operationId = randomUUID();
      const snapshot: VmRow = {
        id: randomUUID(),
        name,
        tenantId: vm.tenantId,
        labels,
        ...snapshotMetadata(vm),
        powerState: 'HALTED',
        powerStateReason: '',
        hostId: null,
        currentOperationId: operationId,
        isSnapshot: true,
        snapshotOf: vm.id,
        snapshotTime: now,
        requestId: null,
        ...notMigrating,
        version: 1,
        createdAt: now,
        updatedAt: now,
      };
      await m.insert(VmRow, snapshot);
      emit(events.vm('CREATED', snapshot));
      const operation = await this.operations.create(m, emit, {
        ...spec,
        id: operationId,
        // A running VM is paused while its disks are taken, so that they form one consistent set.
        params: { snapshotId: snapshot.id, pauses: vm.powerState === 'RUNNING' },
      });
      await setCurrentOperation(m, emit, vm, operation.id);
      return { snapshot, operation, isNew: true };
    });
    if (out.isNew) this.runner.enqueue(out.operation);
    return { snapshot: out.snapshot, operation: out.operation };
  }

  async clone(
    caller: Caller,
    req: computeV1.CloneVmRequest,
  ): Promise<{ vm: VmRow; operation: OperationRow }> {
    requireRole(caller, 'vm-admin', 'cloning a VM snapshot');
    const name = validateName('name', req.name);
    const requestId = validateRequestId(req.requestId);
    const labels = validateLabels('labels', req.labels);
    if (!req.snapshotId) throw invalidArgument('snapshot_id', 'is required: a VM snapshot id');
    const out = await this.store.tx(async (m, emit) => {
      const snapshot = await this.vms.get(caller, req.snapshotId, m, true);
      if (requestId) {
        const made = await m.findOneBy(VmRow, { tenantId: snapshot.tenantId, requestId });
        const earlier = made && (await m.findOneBy(OperationRow, { targetId: made.id, kind: 'vm.clone' }));
        if (made && earlier) return { vm: made, operation: earlier, isNew: false };
        if (made)
          throw new DomainError(
            ErrorCode.AlreadyExists,
            `request_id ${requestId} was used for another request: use a new one`,
            {
              field: 'request_id',
            },
          );
      }
      if (!snapshot.isSnapshot)
        throw failedPrecondition(
          `vm ${snapshot.name} (${snapshot.id}) is not a snapshot: snapshot it first (SnapshotVm), then clone the snapshot`,
          { field: 'snapshot_id', resource: `vm ${snapshot.id}` },
        );
      assertVmOperationAllowed(snapshot, 'CLONE');
      await this.assertNameFree(m, snapshot.tenantId, name);
      const now = new Date();
      const operationId = randomUUID();
      const meta = snapshotMetadata(snapshot);
      const vm: VmRow = {
        id: randomUUID(),
        name,
        tenantId: snapshot.tenantId,
        labels,
        ...meta,
        // A clone is a new machine on the network: new MACs, the same forwarded ports.
        nics: validateNics(
          meta.nics.map((n) => ({ mac: '', forwards: n.forwards })),
          pooledRandomBytes,
        ),
        powerState: 'HALTED',
        powerStateReason: '',
        hostId: null,
        currentOperationId: operationId,
        isSnapshot: false,
        snapshotOf: null,
        snapshotTime: null,
        requestId: requestId ?? null,
        ...notMigrating,
        version: 1,
        createdAt: now,
        updatedAt: now,
      };
      await m.insert(VmRow, vm);
      emit(events.vm('CREATED', vm));
      const operation = await this.operations.create(m, emit, {
        id: operationId,
        kind: 'vm.clone',
        target: { kind: 'vm', id: vm.id, name },
        tenantId: vm.tenantId,
        requestId,
        params: { snapshotId: snapshot.id },
      });
      return { vm, operation, isNew: true };
    });
    if (out.isNew) this.runner.enqueue(out.operation);
    return { vm: out.vm, operation: out.operation };
  }

  async revert(caller: Caller, req: computeV1.RevertVmRequest): Promise<OperationRow> {
    requireRole(caller, 'vm-power-admin', 'reverting a VM');
    const requestId = validateRequestId(req.requestId);
    if (!req.snapshotId) throw invalidArgument('snapshot_id', 'is required: a snapshot of this VM');
    const out = await this.store.tx(async (m, emit) => {
      const vm = await this.vms.get(caller, req.id, m, true);
      const spec = {
        kind: 'vm.revert',
        target: { kind: 'vm', id: vm.id, name: vm.name },
        tenantId: vm.tenantId,
        requestId,
      };
      const earlier = await this.operations.findByRequest(m, spec);
      if (earlier) return { operation: earlier, isNew: false };
      assertVmOperationAllowed(vm, 'REVERT');
      const snapshot = await this.vms.get(caller, req.snapshotId, m).catch((e: unknown) => {
        throw e instanceof DomainError && e.code === ErrorCode.NotFound
          ? new DomainError(e.code, e.message, { ...e.fields, field: 'snapshot_id' })
          : e;
      });
      if (!snapshot.isSnapshot || snapshot.snapshotOf !== vm.id)
        throw invalidArgument(
          'snapshot_id',
          `${snapshot.name} (${snapshot.id}) is not a snapshot of vm ${vm.name}: list them with filter snapshot_of=${vm.id}`,
        );
      if (snapshot.currentOperationId)
        throw failedPrecondition(
          `snapshot ${snapshot.name} has operation ${snapshot.currentOperationId} in progress (it is being taken): wait for it and retry`,
          { resource: `vm ${snapshot.id}`, metadata: { current_operation_id: snapshot.currentOperationId } },
        );
      const operation = await this.operations.create(m, emit, {
        ...spec,
        params: { snapshotId: snapshot.id },
      });
      await setCurrentOperation(m, emit, vm, operation.id);
      return { operation, isNew: true };
    });
    if (out.isNew) this.runner.enqueue(out.operation);
    return out.operation;
  }

  /** VM names are unique in a tenant (snapshots included): ALREADY_EXISTS naming the field. */
  private async assertNameFree(m: EntityManager, tenantId: string, name: string): Promise<void> {
    if (await m.findOneBy(VmRow, { tenantId, name }))
      throw new DomainError(
        ErrorCode.AlreadyExists,
        `a VM or snapshot named ${name} already exists: choose another name`,
        {
          field: 'name',
        },
      );
  }
}

/** "<vm>.snap-20250102T030405123Z": unique to the millisecond, within the 63 characters of a VM name. */
export function defaultSnapshotName(vmName: string, at: Date): string {
  const stamp = at.toISOString().replace(/[-:.]/g, '');
  return `${vmName.slice(0, 63 - '.snap-'.length - stamp.length)}.snap-${stamp}`;
}

async function setCurrentOperation(
  m: EntityManager,
  emit: Emit,
  vm: VmRow,
  operationId: string,
): Promise<void> {
  await writeVm(m, emit, vm, { currentOperationId: operationId });
}

/**
 * A snapshot or clone cancelled before it started leaves no half-made VM: the record it created goes with
 * it (called by the cancel hook in the cancelling transaction; nothing was made outside compute yet).
 */
export async function dropCancelledSnapshotVm(m: EntityManager, emit: Emit, op: OperationRow): Promise<void> {
  const madeId =
    op.kind === 'vm.snapshot'
      ? String(op.params.snapshotId)
      : op.kind === 'vm.clone'
        ? op.targetId
        : undefined;
  if (!madeId) return;
  const made = await m.findOneBy(VmRow, { id: madeId });
  if (made?.currentOperationId !== op.id) return;
  await m.delete(VmRow, { id: made.id });
  emit(events.vm('DELETED', made));
}
