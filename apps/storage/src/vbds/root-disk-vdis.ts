import { DomainError, ErrorCode, isTerminal } from '@flotilla/domain';
import { OperationRow, OperationService } from '@flotilla/platform';
import { VdiRow } from '../persistence/entities';
import { serviceCaller, VdiStore } from '../vdis/vdi-store';
import { RootDiskVdis } from './vm-disk.service';

/** Longest wait for a clone: the image's base may first be copied into the SR. */
const cloneTimeoutMs = 30 * 60_000;
const destroyTimeoutMs = 10 * 60_000;

/**
 * Root disks through the VDI side's own API (VdiStore): a clone keeps every rule of VDI creation (space,
 * quotas, SR state, one cached base per SR, request_id idempotency), and is awaited in this process.
 */
export class VdiStoreRootDisks implements RootDiskVdis {
  constructor(
    private readonly vdis: VdiStore,
    private readonly operations: OperationService,
  ) {}

  async cloneImage(req: Parameters<RootDiskVdis['cloneImage']>[0]): Promise<VdiRow> {
    const { vdi, operation } = await this.vdis.createFromImage(req);
    return this.vdis.waitReady(operation.id, vdi.id, cloneTimeoutMs);
  }

  async destroy(vdiId: string): Promise<void> {
    let op: OperationRow;
    try {
      op = await this.vdis.destroy(vdiId, `release:${vdiId}`);
    } catch (e) {
      if (e instanceof DomainError && e.code === ErrorCode.NotFound) return;
      throw e;
    }
    const deadline = Date.now() + destroyTimeoutMs;
    while (!isTerminal(op.state)) {
      if (Date.now() >= deadline)
        throw new DomainError(ErrorCode.DeadlineExceeded, `destroying vdi ${vdiId} did not finish in time`);
      op = await this.operations.wait(serviceCaller(''), op.id, 60_000);
    }
    if (op.state !== 'SUCCEEDED')
      throw new DomainError(
        (op.errorCode as ErrorCode | null) ?? ErrorCode.Internal,
        `destroying vdi ${vdiId}: ${op.errorMessage ?? op.state}`,
      );
  }
}
