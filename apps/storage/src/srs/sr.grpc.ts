import { Metadata } from '@grpc/grpc-js';
import { Controller, Inject } from '@nestjs/common';
import { GrpcMethod } from '@nestjs/microservices';
import { storageV1 } from '@flotilla/contracts';
import { operationToProto, ServiceIdentity } from '@flotilla/platform';
import { srToProto } from './sr.mapper';
import { SrService } from './sr.service';

/** The gRPC edge of storage repositories: caller identity in, SR requests, contract messages out. */
@Controller()
export class SrGrpc implements storageV1.SrServiceController {
  constructor(
    @Inject(ServiceIdentity) private readonly identity: ServiceIdentity,
    @Inject(SrService) private readonly srs: SrService,
  ) {}

  @GrpcMethod('SrService', 'CreateSr')
  async createSr(req: storageV1.CreateSrRequest, md: Metadata): Promise<storageV1.CreateSrResponse> {
    const caller = this.identity.caller(md);
    const { sr, operation } = await this.srs.create(caller, req);
    return { sr: srToProto(sr, caller, 0), operation: operationToProto(operation) };
  }

  @GrpcMethod('SrService', 'GetSr')
  async getSr(req: storageV1.GetSrRequest, md: Metadata): Promise<storageV1.GetSrResponse> {
    const caller = this.identity.caller(md);
    const sr = await this.srs.get(caller, req.id);
    const alloc = await this.srs.allocations([sr.id]);
    return { sr: srToProto(sr, caller, alloc.get(sr.id) ?? 0) };
  }

  @GrpcMethod('SrService', 'ListSrs')
  async listSrs(req: storageV1.ListSrsRequest, md: Metadata): Promise<storageV1.ListSrsResponse> {
    const caller = this.identity.caller(md);
    const { srs, nextPageToken } = await this.srs.list(caller, req.page);
    const alloc = await this.srs.allocations(srs.map((s) => s.id));
    return { srs: srs.map((s) => srToProto(s, caller, alloc.get(s.id) ?? 0)), nextPageToken };
  }

  @GrpcMethod('SrService', 'ScanSr')
  async scanSr(req: storageV1.ScanSrRequest, md: Metadata): Promise<storageV1.ScanSrResponse> {
    return {
      operation: operationToProto(await this.srs.scan(this.identity.caller(md), req.id, req.requestId)),
    };
  }

  @GrpcMethod('SrService', 'ForgetSr')
  async forgetSr(req: storageV1.ForgetSrRequest, md: Metadata): Promise<storageV1.ForgetSrResponse> {
    await this.srs.forget(this.identity.caller(md), req.id, req.etag);
    return {};
  }

  @GrpcMethod('SrService', 'DestroySr')
  async destroySr(req: storageV1.DestroySrRequest, md: Metadata): Promise<storageV1.DestroySrResponse> {
    return { operation: operationToProto(await this.srs.destroy(this.identity.caller(md), req)) };
  }
}
