import { SingleBar } from 'cli-progress';
import type { Output } from './output';
import { formatBytes } from './size';

/** A progress bar over bytes (uploads, downloads, hashing); silent unless a person watches a terminal. */
export interface BytesProgress {
  update(doneBytes: number): void;
  stop(): void;
}

const silent: BytesProgress = { update: () => undefined, stop: () => undefined };

/** "import disk.qcow2 [=====-----] 48% 1.2 GiB/2.5 GiB 310 MiB/s" on stderr. */
export function bytesBar(out: Output, label: string, totalBytes: number): BytesProgress {
  if (!out.interactive) return silent;
  const bar = new SingleBar({
    format: `${label} [{bar}] {percentage}% {done}/{total} {rate}`,
    barsize: 30,
    hideCursor: true,
    stream: process.stderr,
    clearOnComplete: false,
  });
  const started = Date.now();
  const total = Math.max(1, totalBytes);
  bar.start(total, 0, { done: formatBytes(0), total: formatBytes(totalBytes), rate: '' });
  return {
    update(doneBytes: number) {
      const seconds = (Date.now() - started) / 1000;
      const rate = seconds > 0.5 ? `${formatBytes(Math.round(doneBytes / seconds))}/s` : '';
      bar.update(Math.min(doneBytes, total), { done: formatBytes(doneBytes), rate });
    },
    stop: () => bar.stop(),
  };
}

/** A bar over a fraction 0..1 (the server staging an export). */
export function fractionBar(out: Output, label: string): { update(fraction: number): void; stop(): void } {
  if (!out.interactive) return silent;
  const bar = new SingleBar({
    format: `${label} [{bar}] {percentage}%`,
    barsize: 30,
    hideCursor: true,
    stream: process.stderr,
    clearOnComplete: false,
  });
  bar.start(100, 0);
  return {
    update: (fraction: number) => bar.update(Math.round(Math.min(1, Math.max(0, fraction)) * 100)),
    stop: () => bar.stop(),
  };
}

/** One status line on stderr, rewritten in place (a migration's phase and rates); silent unless interactive. */
export function statusLine(out: Output): { update(text: string): void; stop(): void } {
  if (!out.interactive) return { update: () => undefined, stop: () => undefined };
  let shown = 0;
  return {
    update(text: string) {
      const width = process.stderr.columns ? process.stderr.columns - 1 : 120;
      const line = text.length > width ? `${text.slice(0, width - 1)}…` : text;
      process.stderr.write(`\r${line.padEnd(shown)}`);
      shown = line.length;
    },
    stop() {
      if (shown) process.stderr.write('\n');
      shown = 0;
    },
  };
}
