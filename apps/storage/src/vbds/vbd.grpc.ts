import { Metadata } from '@grpc/grpc-js';
import { Controller, Inject } from '@nestjs/common';
import { GrpcMethod } from '@nestjs/microservices';
import { storageV1 } from '@flotilla/contracts';
import { operationToProto, requireRole, ServiceIdentity } from '@flotilla/platform';
import { VmDiskMigrations } from './disk-migration';
import { vbdToProto } from './vbd.mapper';
import { VbdService } from './vbd.service';
import { VmDiskSnapshots } from './vm-disk-snapshots';
import { VmDiskService } from './vm-disk.service';

/** The gRPC edge of VBDs: caller identity in, VBD calls, contract messages out. */
@Controller()
export class VbdGrpc implements storageV1.VbdServiceController {
  constructor(
    @Inject(ServiceIdentity) private readonly identity: ServiceIdentity,
    @Inject(VbdService) private readonly vbds: VbdService,
  ) {}

  @GrpcMethod('VbdService', 'CreateVbd')
  async createVbd(req: storageV1.CreateVbdRequest, md: Metadata): Promise<storageV1.CreateVbdResponse> {
    return { vbd: vbdToProto(await this.vbds.create(this.identity.caller(md), req)) };
  }

  @GrpcMethod('VbdService', 'GetVbd')
  async getVbd(req: storageV1.GetVbdRequest, md: Metadata): Promise<storageV1.GetVbdResponse> {
    return { vbd: vbdToProto(await this.vbds.get(this.identity.caller(md), req.id)) };
  }

  @GrpcMethod('VbdService', 'ListVbds')
  async listVbds(req: storageV1.ListVbdsRequest, md: Metadata): Promise<storageV1.ListVbdsResponse> {
    const { vbds, nextPageToken } = await this.vbds.list(this.identity.caller(md), req.page);
    return { vbds: vbds.map(vbdToProto), nextPageToken };
  }

  @GrpcMethod('VbdService', 'PlugVbd')
  async plugVbd(req: storageV1.PlugVbdRequest, md: Metadata): Promise<storageV1.PlugVbdResponse> {
    return { operation: operationToProto(await this.vbds.plug(this.identity.caller(md), req)) };
  }

  @GrpcMethod('VbdService', 'UnplugVbd')
  async unplugVbd(req: storageV1.UnplugVbdRequest, md: Metadata): Promise<storageV1.UnplugVbdResponse> {
    return { operation: operationToProto(await this.vbds.unplug(this.identity.caller(md), req)) };
  }

  @GrpcMethod('VbdService', 'DestroyVbd')
  async destroyVbd(req: storageV1.DestroyVbdRequest, md: Metadata): Promise<storageV1.DestroyVbdResponse> {
    await this.vbds.destroy(this.identity.caller(md), req.id, req.etag);
    return {};
  }
}

/**
 * The internal VmDiskService: compute calls it with the service identity alone (pool-admin, no tenant
 * role below it); the gateway never routes it.
 */
@Controller()
export class VmDiskGrpc implements storageV1.VmDiskServiceController {
  constructor(
    @Inject(ServiceIdentity) private readonly identity: ServiceIdentity,
    @Inject(VmDiskService) private readonly disks: VmDiskService,
    @Inject(VmDiskSnapshots) private readonly snapshots: VmDiskSnapshots,
    @Inject(VmDiskMigrations) private readonly migrations: VmDiskMigrations,
  ) {}

  @GrpcMethod('VmDiskService', 'ProvisionRootDisk')
  async provisionRootDisk(
    req: storageV1.ProvisionRootDiskRequest,
    md: Metadata,
  ): Promise<storageV1.ProvisionRootDiskResponse> {
    this.service(md);
    return { disk: await this.disks.provisionRootDisk(req) };
  }

  @GrpcMethod('VmDiskService', 'AttachVmDisks')
  async attachVmDisks(
    req: storageV1.AttachVmDisksRequest,
    md: Metadata,
  ): Promise<storageV1.AttachVmDisksResponse> {
    this.service(md);
    return { disks: await this.disks.attach(req) };
  }

  @GrpcMethod('VmDiskService', 'DetachVmDisks')
  async detachVmDisks(
    req: storageV1.DetachVmDisksRequest,
    md: Metadata,
  ): Promise<storageV1.DetachVmDisksResponse> {
    this.service(md);
    await this.disks.detach(req);
    return {};
  }

  @GrpcMethod('VmDiskService', 'ReleaseVmDisks')
  async releaseVmDisks(
    req: storageV1.ReleaseVmDisksRequest,
    md: Metadata,
  ): Promise<storageV1.ReleaseVmDisksResponse> {
    this.service(md);
    await this.disks.release(req);
    return {};
  }

  @GrpcMethod('VmDiskService', 'SnapshotVmDisks')
  async snapshotVmDisks(
    req: storageV1.SnapshotVmDisksRequest,
    md: Metadata,
  ): Promise<storageV1.SnapshotVmDisksResponse> {
    this.service(md);
    return { disks: await this.snapshots.snapshotVmDisks(req) };
  }

  @GrpcMethod('VmDiskService', 'CloneVmDisks')
  async cloneVmDisks(
    req: storageV1.CloneVmDisksRequest,
    md: Metadata,
  ): Promise<storageV1.CloneVmDisksResponse> {
    this.service(md);
    return { disks: await this.snapshots.cloneVmDisks(req) };
  }

  @GrpcMethod('VmDiskService', 'RevertVmDisks')
  async revertVmDisks(
    req: storageV1.RevertVmDisksRequest,
    md: Metadata,
  ): Promise<storageV1.RevertVmDisksResponse> {
    this.service(md);
    await this.snapshots.revertVmDisks(req);
    return {};
  }

  private service(md: Metadata): void {
    const caller = this.identity.caller(md);
    requireRole(caller, 'pool-admin', 'VmDiskService (internal to the pool: compute calls it)');
  }

  @GrpcMethod('VmDiskService', 'CheckVmDiskMigration')
  async checkVmDiskMigration(
    req: storageV1.CheckVmDiskMigrationRequest,
    md: Metadata,
  ): Promise<storageV1.CheckVmDiskMigrationResponse> {
    this.service(md);
    return this.migrations.check(req);
  }

  @GrpcMethod('VmDiskService', 'PrepareVmDiskMigration')
  async prepareVmDiskMigration(
    req: storageV1.PrepareVmDiskMigrationRequest,
    md: Metadata,
  ): Promise<storageV1.PrepareVmDiskMigrationResponse> {
    this.service(md);
    return this.migrations.prepare(req);
  }

  @GrpcMethod('VmDiskService', 'CommitVmDiskMigration')
  async commitVmDiskMigration(
    req: storageV1.CommitVmDiskMigrationRequest,
    md: Metadata,
  ): Promise<storageV1.CommitVmDiskMigrationResponse> {
    this.service(md);
    return { disks: await this.migrations.commit(req) };
  }

  @GrpcMethod('VmDiskService', 'AbortVmDiskMigration')
  async abortVmDiskMigration(
    req: storageV1.AbortVmDiskMigrationRequest,
    md: Metadata,
  ): Promise<storageV1.AbortVmDiskMigrationResponse> {
    this.service(md);
    await this.migrations.abort(req);
    return {};
  }

  @GrpcMethod('VmDiskService', 'CleanUpVmDiskMigration')
  async cleanUpVmDiskMigration(
    req: storageV1.CleanUpVmDiskMigrationRequest,
    md: Metadata,
  ): Promise<storageV1.CleanUpVmDiskMigrationResponse> {
    this.service(md);
    await this.migrations.cleanUp(req);
    return {};
  }
}
