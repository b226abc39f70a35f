import { createLogger, loadConfigOrExit, onShutdown } from '@flotilla/platform';
import { gatewayConfigSpec } from './config';
import { startGateway } from './gateway.app';

async function main(): Promise<void> {
  const config = loadConfigOrExit('gateway', gatewayConfigSpec);
  const logger = createLogger('gateway', config.FLOTILLA_LOG_LEVEL);
  const app = await startGateway(config, logger);
  onShutdown(logger, [() => app.stop()]);
}

main().catch((e: unknown) => {
  process.stderr.write(`flotilla-gateway: failed to start: ${e instanceof Error ? e.message : String(e)}\n`);
  process.exit(1);
});
