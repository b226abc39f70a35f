import { randomFillSync } from 'node:crypto';

const poolBytes = 4096;
let pool = Buffer.alloc(0);
let offset = 0;

/**
 * Cryptographically random bytes from a pooled buffer that the CSPRNG refills 4 KiB at a time, as Node's
 * randomUUID does: one randomFillSync per few hundred small draws instead of one per draw. Each call gets
 * its own copy; no byte is handed out twice.
 */
export function pooledRandomBytes(n: number): Uint8Array {
  if (n > poolBytes) return randomFillSync(new Uint8Array(n));
  if (offset + n > pool.length) {
    pool = randomFillSync(Buffer.allocUnsafe(poolBytes));
    offset = 0;
  }
  const out = new Uint8Array(pool.subarray(offset, offset + n));
  offset += n;
  return out;
}
