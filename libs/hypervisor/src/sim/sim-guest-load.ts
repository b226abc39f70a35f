import { GuestMemoryLoad } from '@flotilla/domain';
import { DriverVmSpec } from '../driver';

const MiB = 1024 * 1024;

/**
 * How fast the demo guest's workload rewrites its buffer while it writes: 0.95 GB/s (16 MiB) to
 * 1.15 GB/s (64 MiB) measured under TCG (HOST-NOTES §3).
 */
export const DEMO_DIRTY_WRITE_BYTES_PER_SEC = 1e9;
/** An idle guest still touches a few pages a second (page-sampling measured ~4 MB/s). */
export const IDLE_DIRTY_RATE_BYTES_PER_SEC = 4e6;

/**
 * The memory load the sim assumes for a VM, read from its kernel command line the way the demo guest's
 * /init reads it: `demo.dirty=<MiB>` rewrites a buffer of that many MiB over and over at about 1 GB/s,
 * sleeping `demo.dsleep=<seconds>` between passes; a bad value means no dirtying (or no sleep), as in the
 * guest. Any other VM is idle.
 */
export function simGuestMemoryLoad(spec: Pick<DriverVmSpec, 'memoryMib' | 'boot'>): GuestMemoryLoad {
  const memoryBytes = spec.memoryMib * MiB;
  const idle = { memoryBytes, dirtyRateBytesPerSec: IDLE_DIRTY_RATE_BYTES_PER_SEC };
  if (spec.boot.kind !== 'kernel') return idle;
  let dirtyMib = 0;
  let sleepSec = 0;
  for (const word of spec.boot.cmdline.split(/\s+/)) {
    if (word.startsWith('demo.dirty=')) dirtyMib = uintOr0(word.slice('demo.dirty='.length));
    if (word.startsWith('demo.dsleep=')) sleepSec = secondsOr0(word.slice('demo.dsleep='.length));
  }
  if (dirtyMib === 0) return idle;
  const workingSetBytes = Math.min(memoryBytes, dirtyMib * MiB);
  const passSec = workingSetBytes / DEMO_DIRTY_WRITE_BYTES_PER_SEC;
  return {
    memoryBytes,
    dirtyRateBytesPerSec: Math.round(workingSetBytes / (passSec + sleepSec)),
    dirtyWorkingSetBytes: workingSetBytes,
  };
}

function uintOr0(value: string): number {
  return /^[0-9]+$/.test(value) ? Number(value) : 0;
}

function secondsOr0(value: string): number {
  const n = /^[0-9.]+$/.test(value) ? Number(value) : NaN;
  return Number.isFinite(n) ? n : 0;
}
