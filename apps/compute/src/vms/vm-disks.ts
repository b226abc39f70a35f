import { status } from '@grpc/grpc-js';
import { storageV1 } from '@flotilla/contracts';
import { DomainError, ErrorCode, expectPresent } from '@flotilla/domain';
import { domainErrorFromGrpc, GrpcClient, isGrpcStatus, md } from '@flotilla/platform';

export interface RootDiskRequest {
  vmId: string;
  vmName: string;
  tenantId: string;
  image: string;
  /** 0: the image's size. */
  virtualSizeBytes: number;
  /** SR id or name; empty: the pool's default SR. */
  srId: string;
}

/**
 * The disks of the VMs compute runs, as storage keeps them (VmDiskService): an interface so that compute's
 * logic never depends on storage's wire. Every call is idempotent: a resumed operation repeats it.
 */
export interface VmDisks {
  provisionRootDisk(req: RootDiskRequest): Promise<storageV1.VmDisk>;
  /** Marks the VM's disks attached on the host and returns them in device order. */
  attach(vmId: string, hostId: string): Promise<storageV1.VmDisk[]>;
  /** `hostId` empty: wherever they are attached. */
  detach(vmId: string, hostId: string): Promise<void>;
  /** Removes the VM's VBDs and the VDIs provisioned with it. */
  release(vmId: string): Promise<void>;
  /** Snapshots the VM's disks for snapshot VM `snapshotVmId` (see SnapshotVmDisks). */
  snapshotDisks(req: {
    vmId: string;
    snapshotVmId: string;
    snapshotName: string;
  }): Promise<storageV1.VmDisk[]>;
  /** Linked clones of the snapshot's disks for new VM `vmId` (see CloneVmDisks). */
  cloneDisks(req: { snapshotVmId: string; vmId: string; vmName: string }): Promise<storageV1.VmDisk[]>;
  /** Reverts the VM's disks to the snapshot's; `requestId` keys it (see RevertVmDisks). */
  revertDisks(req: { vmId: string; snapshotVmId: string; requestId: string }): Promise<void>;
  /**
   * The host the VM's disks bind it to (a VDI on a FILE SR lives on one host), if any. A VM with disks on
   * FILE SRs of two hosts cannot run anywhere: FAILED_PRECONDITION.
   */
  requiredHost(vmId: string): Promise<string | undefined>;
  close(): void;
}

/** Provisioning copies the image's base into the SR the first time: minutes, not seconds. */
const provisionDeadlineMs = 30 * 60_000;
const callDeadlineMs = 30_000;
/** Snapshots, linked clones and reverts are metadata work on qcow2 files: seconds, not minutes. */
const snapshotDeadlineMs = 5 * 60_000;

/**
 * Calls the pool's storage service with the service identity (VmDiskService is internal; the VBD, VDI and
 * SR reads answer a service as pool-admin).
 */
export class StorageVmDisks implements VmDisks {
  private readonly vmDisks: GrpcClient<storageV1.VmDiskServiceClient>;
  private readonly vbds: GrpcClient<storageV1.VbdServiceClient>;
  private readonly vdis: GrpcClient<storageV1.VdiServiceClient>;
  private readonly srs: GrpcClient<storageV1.SrServiceClient>;

  constructor(storageUrl: string, serviceToken: string) {
    const client = <C>(service: string) =>
      new GrpcClient<C>({
        address: storageUrl,
        service: `flotilla.storage.v1.${service}`,
        defaultDeadlineMs: callDeadlineMs,
        staticMetadata: { [md.serviceToken]: serviceToken },
      });
    this.vmDisks = client('VmDiskService');
    this.vbds = client('VbdService');
    this.vdis = client('VdiService');
    this.srs = client('SrService');
  }

  async provisionRootDisk(req: RootDiskRequest): Promise<storageV1.VmDisk> {
    const { disk } = await this.storage('provisioning the root disk', () =>
      this.vmDisks.call.provisionRootDisk(
        {
          vmId: req.vmId,
          vmName: req.vmName,
          tenantId: req.tenantId,
          image: req.image,
          virtualSizeBytes: req.virtualSizeBytes,
          srId: req.srId,
        },
        { deadlineMs: provisionDeadlineMs },
      ),
    );
    if (!disk) throw new DomainError(ErrorCode.Internal, 'storage answered ProvisionRootDisk without a disk');
    return disk;
  }

  async attach(vmId: string, hostId: string): Promise<storageV1.VmDisk[]> {
    const { disks } = await this.storage('attaching the disks', () =>
      this.vmDisks.call.attachVmDisks({ vmId, hostId }),
    );
    return disks;
  }

  async detach(vmId: string, hostId: string): Promise<void> {
    await this.storage('detaching the disks', () => this.vmDisks.call.detachVmDisks({ vmId, hostId }));
  }

  async release(vmId: string): Promise<void> {
    await this.storage('releasing the disks', () => this.vmDisks.call.releaseVmDisks({ vmId }));
  }

  async snapshotDisks(req: {
    vmId: string;
    snapshotVmId: string;
    snapshotName: string;
  }): Promise<storageV1.VmDisk[]> {
    const { disks } = await this.storage('snapshotting the disks', () =>
      this.vmDisks.call.snapshotVmDisks(req, { deadlineMs: snapshotDeadlineMs }),
    );
    return disks;
  }

  async cloneDisks(req: { snapshotVmId: string; vmId: string; vmName: string }): Promise<storageV1.VmDisk[]> {
    const { disks } = await this.storage('cloning the disks', () =>
      this.vmDisks.call.cloneVmDisks(req, { deadlineMs: snapshotDeadlineMs }),
    );
    return disks;
  }

  async revertDisks(req: { vmId: string; snapshotVmId: string; requestId: string }): Promise<void> {
    await this.storage('reverting the disks', () =>
      this.vmDisks.call.revertVmDisks(req, { deadlineMs: snapshotDeadlineMs }),
    );
  }

  async requiredHost(vmId: string): Promise<string | undefined> {
    const { vbds } = await this.storage('listing the disks', () =>
      this.vbds.call.listVbds({ page: { pageSize: 16, pageToken: '', filter: `vm_id=${vmId}` } }),
    );
    const hosts = new Map<string, string>();
    for (const vbd of vbds) {
      if (!vbd.vdiId) continue;
      const vdi = expectPresent(
        (await this.storage('reading a disk', () => this.vdis.call.getVdi({ id: vbd.vdiId }))).vdi,
        `storage answered GetVdi ${vbd.vdiId} without a vdi`,
      );
      const sr = expectPresent(
        (await this.storage('reading an SR', () => this.srs.call.getSr({ id: vdi.srId }))).sr,
        `storage answered GetSr ${vdi.srId} without an sr`,
      );
      if (String(sr.type) === 'SR_TYPE_FILE' && sr.hostId) hosts.set(sr.hostId, sr.name);
    }
    if (hosts.size > 1)
      throw new DomainError(
        ErrorCode.FailedPrecondition,
        `vm ${vmId} has disks on FILE SRs of ${hosts.size} hosts (${[...hosts.values()].join(', ')}): no host can run it; copy the disks to one SR`,
        { resource: `vm ${vmId}` },
      );
    return hosts.keys().next().value;
  }

  close(): void {
    for (const c of [this.vmDisks, this.vbds, this.vdis, this.srs]) c.close();
  }

  /** Storage's errors keep their code; the message says which step of the VM's operation it was. */
  private async storage<T>(step: string, call: () => Promise<T>): Promise<T> {
    try {
      return await call();
    } catch (e) {
      if (isGrpcStatus(e, status.UNAVAILABLE))
        throw new DomainError(
          ErrorCode.Unavailable,
          `${step}: the storage service did not answer (${(e as Error).message.replace(/^\d+ [A-Z_]+: /, '')})`,
        );
      const err = domainErrorFromGrpc(e);
      throw new DomainError(err.code, `${step}: ${err.message}`, err.fields);
    }
  }
}
