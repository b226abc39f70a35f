import { Metadata } from '@grpc/grpc-js';
import { Controller, Inject } from '@nestjs/common';
import { GrpcMethod } from '@nestjs/microservices';
import { computeV1 } from '@flotilla/contracts';
import { requireRole, ServiceIdentity } from '@flotilla/platform';
import { VmMigrationService } from './vm-migration.service';

/**
 * The internal VmMigrationService: the migration service calls it with the service identity alone
 * (pool-admin, no tenant role below it); the gateway never routes it.
 */
@Controller()
export class VmMigrationGrpc implements computeV1.VmMigrationServiceController {
  constructor(
    @Inject(ServiceIdentity) private readonly identity: ServiceIdentity,
    @Inject(VmMigrationService) private readonly migrations: VmMigrationService,
  ) {}

  @GrpcMethod('VmMigrationService', 'CheckVmMigration')
  checkVmMigration(
    req: computeV1.CheckVmMigrationRequest,
    md: Metadata,
  ): Promise<computeV1.CheckVmMigrationResponse> {
    this.service(md);
    return this.migrations.check(req);
  }

  @GrpcMethod('VmMigrationService', 'BeginVmMigration')
  beginVmMigration(
    req: computeV1.BeginVmMigrationRequest,
    md: Metadata,
  ): Promise<computeV1.BeginVmMigrationResponse> {
    this.service(md);
    return this.migrations.begin(req);
  }

  @GrpcMethod('VmMigrationService', 'CommitVmMigration')
  commitVmMigration(
    req: computeV1.CommitVmMigrationRequest,
    md: Metadata,
  ): Promise<computeV1.CommitVmMigrationResponse> {
    this.service(md);
    return this.migrations.commit(req);
  }

  @GrpcMethod('VmMigrationService', 'EndVmMigration')
  endVmMigration(
    req: computeV1.EndVmMigrationRequest,
    md: Metadata,
  ): Promise<computeV1.EndVmMigrationResponse> {
    this.service(md);
    return this.migrations.end(req);
  }

  private service(md: Metadata): void {
    const caller = this.identity.caller(md);
    requireRole(
      caller,
      'pool-admin',
      'VmMigrationService (internal to the pool: the migration service calls it)',
    );
  }
}
