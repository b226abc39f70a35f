import { DynamicModule, INestMicroservice, Module } from '@nestjs/common';
import * as http from 'node:http';
import * as path from 'node:path';
import { ConfigOf, Logger, openDatabase, startGrpcService } from '@flotilla/platform';
import { callerMetadata, TokenAuth } from './auth/token-auth';
import { gatewayConfigSpec } from './config';
import { GatewayMetrics, startAdminHttp } from './admin-http/admin-http';
import { gatewayEntities, gatewayMigrations } from './persistence';
import { OperationRouter } from './proxy/operation-router';
import { PoolRelay } from './proxy/pool-relay';
import { AdminService } from './tenants/admin.service';
import { TenantGrpc, TokenGrpc } from './tenants/admin.grpc';
import { CredentialAdmin } from './credentials/credential-admin.service';
import { CredentialGrpc } from './credentials/credential.grpc';
import { DbCredentialStore } from './credentials/db-credential-store';
import { loadOrCreateSecretKey, SecretBox } from './credentials/secret-key';
import { startCompatFronts, type CompatFronts } from './compat/compat-fronts';
import { PoolApi } from './compat/pool-api';

export type GatewayConfig = ConfigOf<typeof gatewayConfigSpec>;

/**
 * Pool services the gateway relays today; the others answer UNIMPLEMENTED until they are built. Services
 * internal to a pool are never here: they take a service identity, not a consumer's token (compute's
 * HostRegistryService, AgentService and VmMigrationService, storage's VmDiskService and
 * StorageAgentService, the agents' MigrationAgentService).
 */
export const relayedServices = [
  'flotilla.compute.v1.VmService',
  'flotilla.compute.v1.HostService',
  'flotilla.compute.v1.FlavorService',
  'flotilla.compute.v1.EventService',
  'flotilla.storage.v1.ImageService',
  'flotilla.storage.v1.SrService',
  'flotilla.storage.v1.VdiService',
  'flotilla.storage.v1.VbdService',
  'flotilla.storage.v1.StorageEventService',
  'flotilla.migration.v1.MigrationService',
  'flotilla.migration.v1.EvacuationService',
  'flotilla.migration.v1.MigrationEventService',
];
/**
 * Pool services that run operations: OperationRouter asks them in this order (see operation-router.ts).
 * The migration service's are "vm.migrate" and "host.evacuate".
 */
export const operationAreas = ['compute', 'storage', 'migration'];

@Module({})
class GatewayModule {
  static with(deps: { auth: TokenAuth; admin: AdminService; credentials: CredentialAdmin }): DynamicModule {
    return {
      module: GatewayModule,
      controllers: [TenantGrpc, TokenGrpc, CredentialGrpc],
      providers: [
        { provide: TokenAuth, useValue: deps.auth },
        { provide: AdminService, useValue: deps.admin },
        { provide: CredentialAdmin, useValue: deps.credentials },
      ],
    };
  }
}

export interface GatewayApp {
  stop(): Promise<void>;
}

/** `schema` lets tests give each run its own schema in a shared database. */
export async function startGateway(
  config: GatewayConfig,
  logger: Logger,
  options: { schema?: string } = {},
): Promise<GatewayApp> {
  // Read before the database opens: a wrong key file stops the gateway at once, naming the fix.
  const secretKey = loadOrCreateSecretKey(
    config.FLOTILLA_SECRET_KEY_FILE || path.join(config.FLOTILLA_DATA_DIR, 'gateway-secret.key'),
  );
  const db = await openDatabase({
    url: config.DATABASE_URL,
    dataDir: config.FLOTILLA_DATA_DIR,
    schema: options.schema ?? config.FLOTILLA_DB_SCHEMA,
    entities: gatewayEntities,
    migrations: gatewayMigrations,
    logger,
  });
  const auth = new TokenAuth(db.dataSource);
  // The pool's services as the gateway itself calls them (tenant checks, the EC2 and OpenStack fronts).
  const pool = new PoolApi({
    computeAddress: config.FLOTILLA_COMPUTE_URL,
    storageAddress: config.FLOTILLA_STORAGE_URL,
    serviceToken: config.FLOTILLA_SERVICE_TOKEN,
    deadlineMs: config.FLOTILLA_UPSTREAM_DEADLINE_MS,
  });
  // A tenant's VMs, counted by the pool itself (the gateway keeps no copy of them).
  const countVms = async (tenantId: string) => {
    const { vms } = await pool.vms.call.listVms(
      { page: { pageSize: 1, pageToken: '', filter: '' } },
      { metadata: callerMetadata({ tenantId, role: 'read-only' }) },
    );
    return vms.length;
  };
  const admin = new AdminService(db.dataSource, auth, countVms);
  await admin.bootstrap(logger, config.FLOTILLA_BOOTSTRAP_TOKEN_FILE);
  const ec2Secrets = new SecretBox(secretKey, 'ec2-secret');
  const credentialStore = new DbCredentialStore(db.dataSource, ec2Secrets);
  const credentials = new CredentialAdmin(db.dataSource, ec2Secrets, credentialStore);
  const metrics = new GatewayMetrics();
  const relay = new PoolRelay(
    {
      addresses: {
        compute: config.FLOTILLA_COMPUTE_URL,
        storage: config.FLOTILLA_STORAGE_URL,
        network: config.FLOTILLA_NETWORK_URL,
        migration: config.FLOTILLA_MIGRATION_URL,
      },
      serviceToken: config.FLOTILLA_SERVICE_TOKEN,
      deadlineMs: config.FLOTILLA_UPSTREAM_DEADLINE_MS,
      pool: config.FLOTILLA_POOL_NAME,
    },
    auth,
    metrics.observe,
  );
  const operations = new OperationRouter(
    relay,
    auth,
    operationAreas,
    config.FLOTILLA_UPSTREAM_DEADLINE_MS,
    metrics.observe,
  );
  let app: INestMicroservice | undefined;
  let httpServer: http.Server | undefined;
  let fronts: CompatFronts | undefined;
  try {
    app = await startGrpcService({
      module: GatewayModule.with({ auth, admin, credentials }),
      address: config.FLOTILLA_GATEWAY_ADDRESS,
      areas: ['gateway'],
      rawServices: {
        areas: ['common', 'compute', 'storage', 'migration'],
        register: (server) => {
          relay.register(relayedServices, server);
          operations.register(server);
        },
      },
      healthServices: [
        ...relayedServices,
        'flotilla.common.v1.OperationService',
        'flotilla.gateway.v1.TenantService',
        'flotilla.gateway.v1.TokenService',
        'flotilla.gateway.v1.CredentialService',
      ],
      logger,
      observe: metrics.observe,
    });
    httpServer = await startAdminHttp(
      config.FLOTILLA_ADMIN_HTTP_ADDRESS,
      metrics,
      {
        database: db.dataSource,
        services: {
          compute: config.FLOTILLA_COMPUTE_URL,
          storage: config.FLOTILLA_STORAGE_URL,
          network: config.FLOTILLA_NETWORK_URL,
          migration: config.FLOTILLA_MIGRATION_URL,
        },
      },
      logger,
    );
    fronts = await startCompatFronts(
      config,
      { pool, dataSource: db.dataSource, credentials: credentialStore, secretKey },
      logger,
    );
  } catch (e) {
    await new Promise((r) => (httpServer ? httpServer.close(r) : r(undefined)));
    await app?.close();
    relay.close();
    pool.close();
    await db.close();
    throw e;
  }
  logger.info(
    {
      address: config.FLOTILLA_GATEWAY_ADDRESS,
      adminHttp: config.FLOTILLA_ADMIN_HTTP_ADDRESS,
      ec2: config.FLOTILLA_EC2_ADDRESS,
      openstack: config.FLOTILLA_OPENSTACK_ADDRESS,
    },
    'gateway ready',
  );
  return {
    async stop() {
      await new Promise((r) => httpServer?.close(r));
      await fronts?.close();
      await app?.close();
      relay.close();
      pool.close();
      await db.close();
    },
  };
}
