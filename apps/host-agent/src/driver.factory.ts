import * as path from 'node:path';
import {
  demoProbeGuest,
  findOnPath,
  HypervisorDriver,
  QemuDriver,
  readMatchingManifest,
  SimDriver,
} from '@flotilla/hypervisor';
import { catalogueDir, ConfigOf, Logger } from '@flotilla/platform';
import { agentConfigSpec } from './config';

const qemuBinary = 'qemu-system-x86_64';

/**
 * The one place that picks the hypervisor driver from validated config, and says which and why:
 * `auto` runs real VMs with qemu whenever qemu-system-x86_64 is installed, else the sim driver.
 */
export async function createDriver(
  config: ConfigOf<typeof agentConfigSpec>,
  stateDir: string,
  logger: Logger,
): Promise<HypervisorDriver> {
  const qemu = findOnPath(qemuBinary);
  if (config.FLOTILLA_DRIVER === 'qemu' && !qemu)
    throw new Error(
      `FLOTILLA_DRIVER=qemu: ${qemuBinary} is not on PATH; install it (apt-get install qemu-system-x86 qemu-utils) or use FLOTILLA_DRIVER=sim`,
    );
  if (config.FLOTILLA_DRIVER === 'qemu' || (config.FLOTILLA_DRIVER === 'auto' && qemu)) {
    // The accelerator probe boots the demo kernel when this host has it; without it the probe cannot
    // tell and the driver says TCG and why until the kernel arrives (FLOTILLA_ACCEL=kvm forces KVM).
    const images = catalogueDir(config);
    const driver = await QemuDriver.create({
      stateDir: path.join(stateDir, 'qemu'),
      accelerator: config.FLOTILLA_ACCEL,
      // Looked up again at VM starts while missing: `image build-demo` after `up` still gets a real probe.
      probeGuest: async () => {
        const manifest = await readMatchingManifest(images);
        return manifest ? demoProbeGuest(images, manifest) : undefined;
      },
      binary: qemu,
      log: (line) => logger.info(line),
    });
    const caps = driver.capabilities();
    logger.info(
      { driver: 'qemu', requested: config.FLOTILLA_DRIVER, accelerator: caps.accelerator, binary: qemu },
      `driver qemu (${qemu}), accelerator ${caps.accelerator}: ${caps.acceleratorReason}`,
    );
    return driver;
  }
  const driver = new SimDriver({
    stateDir: path.join(stateDir, 'sim'),
    capacity: { cpus: config.FLOTILLA_SIM_CPUS, memoryMib: config.FLOTILLA_SIM_MEMORY_MIB },
    operationLatencyMs: config.FLOTILLA_SIM_LATENCY_MS,
    migrationTimeScale: config.FLOTILLA_SIM_MIGRATION_TIME_SCALE,
  });
  logger.info(
    { driver: driver.name, requested: config.FLOTILLA_DRIVER },
    config.FLOTILLA_DRIVER === 'auto'
      ? `driver auto: ${qemuBinary} is not installed, using sim`
      : 'driver sim',
  );
  return driver;
}
