import * as path from 'node:path';
import { createLogger, loadConfigOrExit, onShutdown, ServiceIdentity, startGrpcService } from '@flotilla/platform';
import { AgentModule } from './agent.module';
import { agentConfigSpec } from './config';
import { createDriver } from './driver.factory';
import { HostRegistration } from './host-state';
import { Registrar } from './registrar';

async function main(): Promise<void> {
  const config = loadConfigOrExit('host-agent', agentConfigSpec);
  const logger = createLogger(`host-agent/${config.FLOTILLA_AGENT_NAME}`, config.FLOTILLA_LOG_LEVEL);
  const stateDir = config.FLOTILLA_AGENT_STATE_DIR || path.join(config.FLOTILLA_DATA_DIR, 'agents', config.FLOTILLA_AGENT_NAME);
  const driver = createDriver(config, stateDir, logger);
  const recovered = await driver.recover();
  if (recovered.length) logger.info({ vms: recovered.length }, 're-attached to VMs that kept running');
  const registration = new HostRegistration();
  const app = await startGrpcService({
    module: AgentModule.with({ identity: new ServiceIdentity(config.FLOTILLA_SERVICE_TOKEN), registration, driver }),
    address: config.FLOTILLA_AGENT_ADDRESS,
    areas: ['common', 'compute'],
    healthServices: ['flotilla.compute.v1.AgentService'],
    logger,
  });
  const registrar = new Registrar(
    {
      name: config.FLOTILLA_AGENT_NAME,
      address: config.FLOTILLA_AGENT_ADDRESS,
      computeUrl: config.FLOTILLA_COMPUTE_URL,
      serviceToken: config.FLOTILLA_SERVICE_TOKEN,
      labels: config.FLOTILLA_HOST_LABELS,
    },
    registration,
    driver,
    logger,
  );
  registrar.start();
  logger.info({ address: config.FLOTILLA_AGENT_ADDRESS, driver: driver.name }, 'host agent ready');
  // VMs are left running: the next agent re-attaches to them.
  onShutdown(logger, [() => registrar.stop(), () => app.close()]);
}

main().catch((e: unknown) => {
  process.stderr.write(`flotilla-host-agent: failed to start: ${e instanceof Error ? e.message : String(e)}\n`);
  process.exit(1);
});
