import { createLogger, loadConfigOrExit, onShutdown } from '@flotilla/platform';
import { startAgent } from './agent.app';
import { agentConfigSpec } from './config';

async function main(): Promise<void> {
  const config = loadConfigOrExit('host-agent', agentConfigSpec);
  const logger = createLogger(`host-agent/${config.FLOTILLA_AGENT_NAME}`, config.FLOTILLA_LOG_LEVEL);
  const app = await startAgent(config, logger);
  // VMs are left running: the next agent re-attaches to them.
  onShutdown(logger, [() => app.stop()]);
}

main().catch((e: unknown) => {
  process.stderr.write(
    `flotilla-host-agent: failed to start: ${e instanceof Error ? e.message : String(e)}\n`,
  );
  process.exit(1);
});
