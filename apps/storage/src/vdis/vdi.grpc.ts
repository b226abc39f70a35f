import { Metadata } from '@grpc/grpc-js';
import { Controller, Inject } from '@nestjs/common';
import { GrpcMethod, GrpcStreamMethod } from '@nestjs/microservices';
import { defer, Observable } from 'rxjs';
import { storageV1 } from '@flotilla/contracts';
import { Caller, operationToProto, ServiceIdentity } from '@flotilla/platform';
import { VdiRow } from '../persistence/entities';
import { vdiToProto } from './vdi.mapper';
import { VdiService } from './vdi.service';
import { messages, VdiTransfer } from './vdi-transfer';

/** The gRPC edge of VDIs: caller identity in, VDI requests, contract messages out. */
@Controller()
export class VdiGrpc implements storageV1.VdiServiceController {
  constructor(
    @Inject(ServiceIdentity) private readonly identity: ServiceIdentity,
    @Inject(VdiService) private readonly vdis: VdiService,
    @Inject(VdiTransfer) private readonly transfer: VdiTransfer,
  ) {}

  @GrpcMethod('VdiService', 'CreateVdi')
  async createVdi(req: storageV1.CreateVdiRequest, md: Metadata): Promise<storageV1.CreateVdiResponse> {
    const caller = this.identity.caller(md);
    const { vdi, operation } = await this.vdis.create(caller, req);
    return { vdi: await this.one(vdi), operation: operationToProto(operation) };
  }

  @GrpcMethod('VdiService', 'GetVdi')
  async getVdi(req: storageV1.GetVdiRequest, md: Metadata): Promise<storageV1.GetVdiResponse> {
    return { vdi: await this.one(await this.vdis.get(this.identity.caller(md), req.id)) };
  }

  @GrpcMethod('VdiService', 'ListVdis')
  async listVdis(req: storageV1.ListVdisRequest, md: Metadata): Promise<storageV1.ListVdisResponse> {
    const { vdis, nextPageToken } = await this.vdis.list(this.identity.caller(md), req.page);
    const extras = await this.vdis.extras(vdis);
    return { vdis: vdis.map((v) => vdiToProto(v, extras.get(v.id))), nextPageToken };
  }

  @GrpcMethod('VdiService', 'ResizeVdi')
  async resizeVdi(req: storageV1.ResizeVdiRequest, md: Metadata): Promise<storageV1.ResizeVdiResponse> {
    return { operation: operationToProto(await this.vdis.resize(this.identity.caller(md), req)) };
  }

  @GrpcMethod('VdiService', 'DestroyVdi')
  async destroyVdi(req: storageV1.DestroyVdiRequest, md: Metadata): Promise<storageV1.DestroyVdiResponse> {
    return { operation: operationToProto(await this.vdis.destroy(this.identity.caller(md), req)) };
  }

  @GrpcMethod('VdiService', 'CopyVdi')
  async copyVdi(req: storageV1.CopyVdiRequest, md: Metadata): Promise<storageV1.CopyVdiResponse> {
    const { vdi, operation } = await this.vdis.copy(this.identity.caller(md), req);
    return { vdi: await this.one(vdi), operation: operationToProto(operation) };
  }

  @GrpcStreamMethod('VdiService', 'ImportVdi')
  importVdi(
    requests: Observable<storageV1.ImportVdiRequest>,
    md: Metadata,
  ): Observable<storageV1.ImportVdiResponse> {
    const incoming = messages(requests);
    return defer(() => this.transfer.import(this.identity.caller(md), incoming));
  }

  @GrpcMethod('VdiService', 'ExportVdi')
  exportVdi(req: storageV1.ExportVdiRequest, md: Metadata): Observable<storageV1.ExportVdiResponse> {
    let caller: Caller;
    try {
      caller = this.identity.caller(md);
    } catch (e) {
      return new Observable((s) => s.error(e));
    }
    return this.transfer.export(caller, req);
  }

  @GrpcMethod('VdiService', 'SnapshotVdi')
  async snapshotVdi(req: storageV1.SnapshotVdiRequest, md: Metadata): Promise<storageV1.SnapshotVdiResponse> {
    const { vdi, operation } = await this.vdis.snapshot(this.identity.caller(md), req);
    return { snapshot: await this.one(vdi), operation: operationToProto(operation) };
  }

  @GrpcMethod('VdiService', 'CloneVdi')
  async cloneVdi(req: storageV1.CloneVdiRequest, md: Metadata): Promise<storageV1.CloneVdiResponse> {
    const { vdi, operation } = await this.vdis.clone(this.identity.caller(md), req);
    return { vdi: await this.one(vdi), operation: operationToProto(operation) };
  }

  @GrpcMethod('VdiService', 'RevertVdi')
  async revertVdi(req: storageV1.RevertVdiRequest, md: Metadata): Promise<storageV1.RevertVdiResponse> {
    return { operation: operationToProto(await this.vdis.revert(this.identity.caller(md), req)) };
  }

  private async one(v: VdiRow): Promise<storageV1.Vdi> {
    return vdiToProto(v, (await this.vdis.extras([v])).get(v.id));
  }
}
