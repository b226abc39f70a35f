import { Metadata } from '@grpc/grpc-js';
import { Controller, Inject, Optional } from '@nestjs/common';
import { GrpcMethod } from '@nestjs/microservices';
import { commonV1 } from '@flotilla/contracts';
import { ServiceIdentity } from '../grpc/metadata';
import { operationToProto } from './operation-row';
import { OnCancelled, OperationService } from './operation.service';

/** Provider token of the service's OnCancelled hook (optional: nothing to undo by default). */
export const OPERATION_CANCEL_HOOK = Symbol('OPERATION_CANCEL_HOOK');

/**
 * flotilla.common.v1.OperationService over a service's own operation records, scoped to the caller's
 * tenant (pool-admin and pool-operator see all). A service provides ServiceIdentity and OperationService.
 */
@Controller()
export class OperationGrpc implements commonV1.OperationServiceController {
  constructor(
    @Inject(ServiceIdentity) private readonly identity: ServiceIdentity,
    @Inject(OperationService) private readonly operations: OperationService,
    @Optional() @Inject(OPERATION_CANCEL_HOOK) private readonly onCancelled?: OnCancelled,
  ) {}

  @GrpcMethod('OperationService', 'GetOperation')
  async getOperation(
    req: commonV1.GetOperationRequest,
    md: Metadata,
  ): Promise<commonV1.GetOperationResponse> {
    return { operation: operationToProto(await this.operations.get(this.identity.caller(md), req.id)) };
  }

  @GrpcMethod('OperationService', 'ListOperations')
  async listOperations(
    req: commonV1.ListOperationsRequest,
    md: Metadata,
  ): Promise<commonV1.ListOperationsResponse> {
    const { operations, nextPageToken } = await this.operations.list(this.identity.caller(md), req.page);
    return { operations: operations.map(operationToProto), nextPageToken };
  }

  @GrpcMethod('OperationService', 'WaitOperation')
  async waitOperation(
    req: commonV1.WaitOperationRequest,
    md: Metadata,
  ): Promise<commonV1.WaitOperationResponse> {
    const op = await this.operations.wait(this.identity.caller(md), req.id, req.timeoutMs);
    return { operation: operationToProto(op) };
  }

  @GrpcMethod('OperationService', 'CancelOperation')
  async cancelOperation(
    req: commonV1.CancelOperationRequest,
    md: Metadata,
  ): Promise<commonV1.CancelOperationResponse> {
    const op = await this.operations.cancel(this.identity.caller(md), req.id, this.onCancelled);
    return { operation: operationToProto(op) };
  }
}
