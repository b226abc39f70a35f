import { Metadata } from '@grpc/grpc-js';
import { GrpcClient } from '@flotilla/platform';
import { commonV1, computeV1, gatewayV1, migrationV1, storageV1 } from '@flotilla/contracts';
import { CliError, ExitCode } from './errors';
import type { Connection } from './profile';

/** The gateway's services the CLI drives, each a typed gRPC client opened on first use. */
export class Cloud {
  private readonly clients = new Map<string, GrpcClient<unknown>>();

  constructor(readonly connection: Connection) {}

  get vms(): GrpcClient<computeV1.VmServiceClient> {
    return this.client('flotilla.compute.v1.VmService');
  }
  get hosts(): GrpcClient<computeV1.HostServiceClient> {
    return this.client('flotilla.compute.v1.HostService');
  }
  get flavors(): GrpcClient<computeV1.FlavorServiceClient> {
    return this.client('flotilla.compute.v1.FlavorService');
  }
  get events(): GrpcClient<computeV1.EventServiceClient> {
    return this.client('flotilla.compute.v1.EventService');
  }
  get images(): GrpcClient<storageV1.ImageServiceClient> {
    return this.client('flotilla.storage.v1.ImageService');
  }
  get srs(): GrpcClient<storageV1.SrServiceClient> {
    return this.client('flotilla.storage.v1.SrService');
  }
  get vdis(): GrpcClient<storageV1.VdiServiceClient> {
    return this.client('flotilla.storage.v1.VdiService');
  }
  get vbds(): GrpcClient<storageV1.VbdServiceClient> {
    return this.client('flotilla.storage.v1.VbdService');
  }
  get migrations(): GrpcClient<migrationV1.MigrationServiceClient> {
    return this.client('flotilla.migration.v1.MigrationService');
  }
  get evacuations(): GrpcClient<migrationV1.EvacuationServiceClient> {
    return this.client('flotilla.migration.v1.EvacuationService');
  }
  get operations(): GrpcClient<commonV1.OperationServiceClient> {
    return this.client('flotilla.common.v1.OperationService');
  }
  get tenants(): GrpcClient<gatewayV1.TenantServiceClient> {
    return this.client('flotilla.gateway.v1.TenantService');
  }
  get tokens(): GrpcClient<gatewayV1.TokenServiceClient> {
    return this.client('flotilla.gateway.v1.TokenService');
  }
  get credentials(): GrpcClient<gatewayV1.CredentialServiceClient> {
    return this.client('flotilla.gateway.v1.CredentialService');
  }

  /** Metadata for calls made on a client's raw grpc-js stub (client streams): the bearer token. */
  authMetadata(): Metadata {
    const m = new Metadata();
    m.set('authorization', `Bearer ${this.connection.token ?? ''}`);
    return m;
  }

  close(): void {
    for (const c of this.clients.values()) c.close();
    this.clients.clear();
  }

  private client<C>(service: string): GrpcClient<C> {
    let c = this.clients.get(service);
    if (!c) {
      const { endpoint, token } = this.connection;
      if (!token)
        throw new CliError(
          'no API token: start a local cloud with `npx flotilla up` (it writes profile "local"), ' +
            'or pass --token, set FLOTILLA_TOKEN or choose a profile with --profile',
          ExitCode.Usage,
        );
      c = new GrpcClient<unknown>({
        address: endpoint,
        service,
        staticMetadata: { authorization: `Bearer ${token}` },
      });
      this.clients.set(service, c);
    }
    return c as GrpcClient<C>;
  }
}
