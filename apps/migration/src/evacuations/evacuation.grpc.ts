import { Metadata } from '@grpc/grpc-js';
import { Controller, Inject } from '@nestjs/common';
import { GrpcMethod } from '@nestjs/microservices';
import { migrationV1 } from '@flotilla/contracts';
import { operationToProto, ServiceIdentity } from '@flotilla/platform';
import { withRefusalDetails } from './evacuation.errors';
import { evacuationToProto } from './evacuation.mapper';
import { EvacuationService } from './evacuation.service';

/** The gRPC edge of evacuations: caller identity in, EvacuationService calls, contract messages out. */
@Controller()
export class EvacuationGrpc implements migrationV1.EvacuationServiceController {
  constructor(
    @Inject(ServiceIdentity) private readonly identity: ServiceIdentity,
    @Inject(EvacuationService) private readonly evacuations: EvacuationService,
  ) {}

  @GrpcMethod('EvacuationService', 'EvacuateHost')
  async evacuateHost(
    req: migrationV1.EvacuateHostRequest,
    md: Metadata,
  ): Promise<migrationV1.EvacuateHostResponse> {
    try {
      const { evacuation, operation } = await this.evacuations.evacuate(this.identity.caller(md), req);
      return { evacuation: evacuationToProto(evacuation), operation: operationToProto(operation) };
    } catch (e) {
      throw withRefusalDetails(e);
    }
  }

  @GrpcMethod('EvacuationService', 'GetEvacuation')
  async getEvacuation(
    req: migrationV1.GetEvacuationRequest,
    md: Metadata,
  ): Promise<migrationV1.GetEvacuationResponse> {
    return { evacuation: evacuationToProto(await this.evacuations.get(this.identity.caller(md), req.id)) };
  }

  @GrpcMethod('EvacuationService', 'ListEvacuations')
  async listEvacuations(
    req: migrationV1.ListEvacuationsRequest,
    md: Metadata,
  ): Promise<migrationV1.ListEvacuationsResponse> {
    const { evacuations, nextPageToken } = await this.evacuations.list(this.identity.caller(md), req.page);
    return { evacuations: evacuations.map(evacuationToProto), nextPageToken };
  }

  @GrpcMethod('EvacuationService', 'CancelEvacuation')
  async cancelEvacuation(
    req: migrationV1.CancelEvacuationRequest,
    md: Metadata,
  ): Promise<migrationV1.CancelEvacuationResponse> {
    return { evacuation: evacuationToProto(await this.evacuations.cancel(this.identity.caller(md), req.id)) };
  }
}
