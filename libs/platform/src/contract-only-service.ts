import { z } from 'zod';
import type { ProtoArea } from '@flotilla/contracts';
import { commonConfig, ConfigSpec, listenAddress, loadConfigOrExit } from './config';
import { onShutdown } from './lifecycle';
import { createLogger } from './logging';
import { serviceDefinition, packageDefinition } from './grpc/proto';
import { startGrpcService } from './grpc/server';
import { Module } from '@nestjs/common';

@Module({})
class NoControllers {}

/**
 * Runs a pool service whose contract is drafted but not built: it serves health and reflection, and every
 * RPC answers UNIMPLEMENTED (grpc-js's answer for a method without a handler) — never a pretend success.
 */
/** The configuration of a contract-only service: its log level and listen address. */
export function contractOnlyConfigSpec(area: ProtoArea, defaultAddress: string) {
  return {
    FLOTILLA_LOG_LEVEL: commonConfig.FLOTILLA_LOG_LEVEL,
    [`FLOTILLA_${area.toUpperCase()}_ADDRESS`]: {
      description: `host:port the ${area} gRPC service listens on`,
      schema: listenAddress() as z.ZodType<string>,
      default: defaultAddress,
    },
  } satisfies ConfigSpec;
}

export async function runContractOnlyService(options: {
  area: ProtoArea;
  spec: ReturnType<typeof contractOnlyConfigSpec>;
}): Promise<void> {
  const addressVar = `FLOTILLA_${options.area.toUpperCase()}_ADDRESS`;
  const config = loadConfigOrExit(options.area, options.spec);
  const logger = createLogger(options.area, config.FLOTILLA_LOG_LEVEL);
  const prefix = `flotilla.${options.area}.v1.`;
  const services = Object.keys(packageDefinition()).filter((name) => {
    if (!name.startsWith(prefix)) return false;
    try {
      serviceDefinition(name);
      return true;
    } catch {
      return false;
    }
  });
  const address = config[addressVar] as string;
  const app = await startGrpcService({
    module: NoControllers,
    address,
    areas: ['common', options.area],
    healthServices: services,
    logger,
  });
  logger.info(
    { address, services },
    `${options.area} service ready (contract drafted; RPCs answer UNIMPLEMENTED)`,
  );
  onShutdown(logger, [() => app.close()]);
}
