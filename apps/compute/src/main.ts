import { createLogger, loadConfigOrExit, onShutdown } from '@flotilla/platform';
import { startCompute } from './compute.app';
import { computeConfigSpec } from './config';

async function main(): Promise<void> {
  const config = loadConfigOrExit('compute', computeConfigSpec);
  const logger = createLogger('compute', config.FLOTILLA_LOG_LEVEL);
  const app = await startCompute(config, logger);
  onShutdown(logger, [() => app.stop()]);
}

main().catch((e: unknown) => {
  process.stderr.write(`flotilla-compute: failed to start: ${e instanceof Error ? e.message : String(e)}\n`);
  process.exit(1);
});
