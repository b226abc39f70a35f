import * as path from 'node:path';
import { INestMicroservice } from '@nestjs/common';
import {
  catalogueDir,
  ConfigOf,
  Logger,
  serveAdminHttp,
  ServiceIdentity,
  srRoots,
  startGrpcService,
  textResponse,
} from '@flotilla/platform';
import type { Server } from 'node:http';
import { AgentModule } from './agent.module';
import { agentConfigSpec, migrationHost } from './config';
import { createDriver } from './driver.factory';
import { HostRegistration } from './host-state';
import { HostImageCatalogue } from './image-catalogue';
import { Registrar } from './registrar';
import { SrPaths } from './sr-paths';
import { VmMetricsExporter } from './vm-metrics';

export type AgentConfig = ConfigOf<typeof agentConfigSpec>;

export interface AgentApp {
  address: string;
  /** Stops reporting and serving; VMs are left running so that the next agent re-attaches to them. */
  stop(): Promise<void>;
  /**
   * What a crash looks like from outside, for tests: heartbeats stop and the gRPC server drops its
   * connections at once. Like stop(), it leaves the VMs and the state directory as they are.
   */
  abort(): void;
}

/** Wires the host agent: driver (re-attached to its VMs), gRPC edge, registrar. Used by main and by tests. */
export async function startAgent(config: AgentConfig, logger: Logger): Promise<AgentApp> {
  const stateDir =
    config.FLOTILLA_AGENT_STATE_DIR ||
    path.join(config.FLOTILLA_DATA_DIR, 'agents', config.FLOTILLA_AGENT_NAME);
  const driver = await createDriver(config, stateDir, logger);
  const recovered = await driver.recover();
  if (recovered.length) logger.info({ vms: recovered.length }, 're-attached to VMs that kept running');
  const registration = new HostRegistration();
  const app: INestMicroservice = await startGrpcService({
    module: AgentModule.with({
      identity: new ServiceIdentity(config.FLOTILLA_SERVICE_TOKEN),
      registration,
      driver,
      catalogue: new HostImageCatalogue(catalogueDir(config), config.FLOTILLA_AGENT_NAME),
      srPaths: new SrPaths(srRoots(config)),
      migrationHost: migrationHost(config),
    }),
    address: config.FLOTILLA_AGENT_ADDRESS,
    areas: ['common', 'compute', 'storage', 'migration'],
    healthServices: [
      'flotilla.compute.v1.AgentService',
      'flotilla.storage.v1.StorageAgentService',
      'flotilla.migration.v1.MigrationAgentService',
    ],
    logger,
  });
  let admin: Server | undefined;
  if (config.FLOTILLA_AGENT_ADMIN_ADDRESS) {
    const exporter = new VmMetricsExporter(driver, logger);
    admin = await serveAdminHttp(
      config.FLOTILLA_AGENT_ADMIN_ADDRESS,
      {
        '/healthz': () => textResponse(200, 'ok\n'),
        '/metrics': async () => ({
          status: 200,
          contentType: exporter.registry.contentType,
          body: await exporter.exposition(),
        }),
      },
      logger,
    ).catch(async (e: unknown) => {
      await app.close();
      throw e;
    });
  }
  const registrar = new Registrar(
    {
      name: config.FLOTILLA_AGENT_NAME,
      address: config.FLOTILLA_AGENT_ADVERTISE_ADDRESS || config.FLOTILLA_AGENT_ADDRESS,
      computeUrl: config.FLOTILLA_COMPUTE_URL,
      serviceToken: config.FLOTILLA_SERVICE_TOKEN,
      labels: config.FLOTILLA_HOST_LABELS,
      // The sim driver's capacity is what the operator configured: nothing to keep back.
      reservedMemoryMib: driver.name === 'sim' ? 0 : config.FLOTILLA_HOST_RESERVED_MEMORY_MIB,
    },
    registration,
    driver,
    logger,
  );
  registrar.start();
  // A guest that powers off or crashes is reported now, not at the next heartbeat.
  driver.onUnrequestedChange((status) => {
    logger.info(
      { vmId: status.vmId, powerState: status.powerState, reason: status.reason },
      'vm changed state',
    );
    registrar.reportNow();
  });
  logger.info({ address: config.FLOTILLA_AGENT_ADDRESS, driver: driver.name }, 'host agent ready');
  return {
    address: config.FLOTILLA_AGENT_ADDRESS,
    async stop() {
      registrar.stop();
      admin?.close();
      await app.close();
      await driver.close();
    },
    abort() {
      registrar.stop();
      admin?.close();
      void app.close();
      void driver.close();
    },
  };
}
