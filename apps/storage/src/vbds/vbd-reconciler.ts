import { In, IsNull } from 'typeorm';
import { ErrorCode, isDomainError } from '@flotilla/domain';
import { Logger, TransactionalStore, updateVersionedRow } from '@flotilla/platform';
import { ComputeLink, ComputeVm } from './compute-link';
import { VbdRow } from './vbd.entity';
import { vbdEvent } from './vbd.mapper';

type Attachment = Pick<VbdRow, 'state' | 'hostId' | 'device' | 'hotPlugged'>;

/**
 * What an attached VBD should read, given its VM as compute sees it now (pure). A VM with an operation in
 * flight is left alone: its operation attaches or detaches the disks itself.
 */
export function reconciledAttachment(vbd: Attachment, vm: ComputeVm | undefined): Partial<Attachment> {
  if (vm?.currentOperationId) return {};
  if (!vm || vm.powerState === 'HALTED')
    return { state: 'DETACHED', hostId: null, device: '', hotPlugged: false };
  // The VM's host stopped reporting: the disk may or may not still be in use there.
  if (vm.powerState === 'UNKNOWN') return vbd.state === 'UNKNOWN' ? {} : { state: 'UNKNOWN' };
  if (vbd.state === 'UNKNOWN' && vm.hostId === vbd.hostId) return { state: 'ATTACHED' };
  return {};
}

/**
 * Keeps VBD states true to their VMs when no operation of compute says so: a host that goes DOWN makes its
 * VMs' VBDs UNKNOWN (and ATTACHED again when it is back with the VM), and a VM that halted or vanished
 * without a detach (a host that came back without it) releases its disks, so the VDIs are usable again.
 */
export class VbdReconciler {
  private timer?: NodeJS.Timeout;
  private running?: Promise<void>;

  constructor(
    private readonly store: TransactionalStore,
    private readonly compute: ComputeLink,
    private readonly logger: Logger,
    private readonly intervalMs = 5000,
  ) {}

  start(): void {
    this.timer = setInterval(() => {
      this.running ??= this.reconcileOnce()
        .catch((e: unknown) => this.logger.warn({ err: e }, 'VBD reconciliation failed; retrying'))
        .finally(() => (this.running = undefined));
    }, this.intervalMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    await this.running;
  }

  async reconcileOnce(): Promise<void> {
    const rows = await this.store.manager.find(VbdRow, {
      where: { state: In(['ATTACHED', 'UNKNOWN']), currentOperationId: IsNull() },
    });
    const byVm = new Map<string, VbdRow[]>();
    for (const row of rows) byVm.set(row.vmId, [...(byVm.get(row.vmId) ?? []), row]);
    for (const [vmId, vbds] of byVm) {
      let vm: ComputeVm | undefined;
      try {
        vm = await this.compute.vm({ tenantId: '', crossTenant: true }, vmId);
      } catch (e) {
        // Compute unreachable: decide nothing.
        if (!isDomainError(e) || e.code !== ErrorCode.NotFound) return;
      }
      for (const vbd of vbds) {
        const changes = reconciledAttachment(vbd, vm);
        if (!Object.keys(changes).length) continue;
        await this.store
          .tx(async (m, emit) => {
            const saved = await updateVersionedRow(
              m,
              VbdRow,
              { kind: 'vbd', id: vbd.id, version: vbd.version },
              changes,
            );
            emit(vbdEvent('UPDATED', saved));
          })
          .then(
            () => this.logger.info({ vbdId: vbd.id, vmId, ...changes }, 'VBD state reconciled with its VM'),
            // Changed meanwhile (an attach or detach ran): the next round looks again.
            (e: unknown) => {
              if (!isDomainError(e) || e.code !== ErrorCode.Conflict) throw e;
            },
          );
      }
    }
  }
}
