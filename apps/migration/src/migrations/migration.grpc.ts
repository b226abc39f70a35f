import { Metadata } from '@grpc/grpc-js';
import { Controller, Inject } from '@nestjs/common';
import { GrpcMethod } from '@nestjs/microservices';
import { migrationV1 } from '@flotilla/contracts';
import { operationToProto, ServiceIdentity } from '@flotilla/platform';
import { migrationToProto } from './migration.mapper';
import { MigrationService } from './migration.service';

/** The gRPC edge of migrations: caller identity in, migration requests, contract messages out. */
@Controller()
export class MigrationGrpc implements migrationV1.MigrationServiceController {
  constructor(
    @Inject(ServiceIdentity) private readonly identity: ServiceIdentity,
    @Inject(MigrationService) private readonly migrations: MigrationService,
  ) {}

  @GrpcMethod('MigrationService', 'PreflightMigration')
  async preflightMigration(
    req: migrationV1.PreflightMigrationRequest,
    md: Metadata,
  ): Promise<migrationV1.PreflightMigrationResponse> {
    return { check: await this.migrations.preflightFor(this.identity.caller(md), req.spec) };
  }

  @GrpcMethod('MigrationService', 'CreateMigration')
  async createMigration(
    req: migrationV1.CreateMigrationRequest,
    md: Metadata,
  ): Promise<migrationV1.CreateMigrationResponse> {
    const { migration, operation } = await this.migrations.create(this.identity.caller(md), req);
    return { migration: migrationToProto(migration), operation: operationToProto(operation) };
  }

  @GrpcMethod('MigrationService', 'GetMigration')
  async getMigration(
    req: migrationV1.GetMigrationRequest,
    md: Metadata,
  ): Promise<migrationV1.GetMigrationResponse> {
    return { migration: migrationToProto(await this.migrations.getFor(this.identity.caller(md), req.id)) };
  }

  @GrpcMethod('MigrationService', 'ListMigrations')
  async listMigrations(
    req: migrationV1.ListMigrationsRequest,
    md: Metadata,
  ): Promise<migrationV1.ListMigrationsResponse> {
    const { migrations, nextPageToken } = await this.migrations.list(this.identity.caller(md), req.page);
    return { migrations: migrations.map(migrationToProto), nextPageToken };
  }

  @GrpcMethod('MigrationService', 'CancelMigration')
  async cancelMigration(
    req: migrationV1.CancelMigrationRequest,
    md: Metadata,
  ): Promise<migrationV1.CancelMigrationResponse> {
    return { migration: migrationToProto(await this.migrations.cancelFor(this.identity.caller(md), req.id)) };
  }
}
