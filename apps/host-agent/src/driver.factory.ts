import * as path from 'node:path';
import { HypervisorDriver, SimDriver } from '@flotilla/hypervisor';
import { Logger } from '@flotilla/platform';
import { agentConfigSpec } from './config';
import { ConfigOf } from '@flotilla/platform';

/** The one place that picks the hypervisor driver from validated config, and says which and why. */
export function createDriver(
  config: ConfigOf<typeof agentConfigSpec>,
  stateDir: string,
  logger: Logger,
): HypervisorDriver {
  if (config.FLOTILLA_DRIVER === 'qemu')
    throw new Error('FLOTILLA_DRIVER=qemu: the qemu driver is not part of this build yet; use sim or auto');
  const driver = new SimDriver({
    stateDir: path.join(stateDir, 'sim'),
    capacity: { cpus: config.FLOTILLA_SIM_CPUS, memoryMib: config.FLOTILLA_SIM_MEMORY_MIB },
    operationLatencyMs: config.FLOTILLA_SIM_LATENCY_MS,
  });
  logger.info(
    { driver: driver.name, requested: config.FLOTILLA_DRIVER },
    config.FLOTILLA_DRIVER === 'auto'
      ? 'driver auto: qemu driver not in this build, using sim'
      : 'driver sim',
  );
  return driver;
}
