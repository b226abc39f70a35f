import { createLogger, loadConfigOrExit, onShutdown } from '@flotilla/platform';
import { storageConfigSpec } from './config';
import { startStorage } from './storage.app';

async function main(): Promise<void> {
  const config = loadConfigOrExit('storage', storageConfigSpec);
  const logger = createLogger('storage', config.FLOTILLA_LOG_LEVEL);
  const app = await startStorage(config, logger);
  onShutdown(logger, [() => app.stop()]);
}

main().catch((e: unknown) => {
  process.stderr.write(`flotilla-storage: failed to start: ${e instanceof Error ? e.message : String(e)}\n`);
  process.exit(1);
});
