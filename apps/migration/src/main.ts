import { createLogger, loadConfigOrExit, onShutdown } from '@flotilla/platform';
import { migrationConfigSpec } from './config';
import { extensions } from './extensions';
import { startMigration } from './migration.app';

async function main(): Promise<void> {
  const config = loadConfigOrExit('migration', migrationConfigSpec);
  const logger = createLogger('migration', config.FLOTILLA_LOG_LEVEL);
  const app = await startMigration(config, logger, { extensions });
  onShutdown(logger, [() => app.stop()]);
}

main().catch((e: unknown) => {
  process.stderr.write(
    `flotilla-migration: failed to start: ${e instanceof Error ? e.message : String(e)}\n`,
  );
  process.exit(1);
});
