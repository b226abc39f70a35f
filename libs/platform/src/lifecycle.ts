import { Logger } from './logging';

/**
 * Stops the process cleanly on SIGINT/SIGTERM: runs the closers in order, then exits. A second signal, or
 * closers that take longer than `graceMs`, exit at once.
 */
export function onShutdown(
  logger: Logger,
  closers: Array<() => Promise<unknown> | unknown>,
  graceMs = 10_000,
): void {
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) process.exit(130);
    stopping = true;
    logger.info({ signal }, 'stopping');
    const timer = setTimeout(() => {
      logger.warn('shutdown took too long: exiting');
      process.exit(1);
    }, graceMs);
    timer.unref();
    void (async () => {
      for (const close of closers) {
        try {
          await close();
        } catch (e) {
          logger.warn({ err: e }, 'error while stopping');
        }
      }
      logger.flush?.();
      process.exit(0);
    })();
  };
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGTERM', () => stop('SIGTERM'));
}
