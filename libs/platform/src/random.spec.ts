import { pooledRandomBytes } from './random';

// Real: Node's CSPRNG. Nothing is faked.

describe('pooledRandomBytes', () => {
  it('returns the number of bytes asked for, also across a pool refill and beyond the pool size', () => {
    for (const n of [0, 1, 3, 16, 4095, 4096, 4097, 10_000]) expect(pooledRandomBytes(n)).toHaveLength(n);
  });

  it('never hands out the same bytes twice, across pool refills', () => {
    const seen = new Set<string>();
    // 16-byte draws over several 4 KiB pools: a repeat would mean the pool handed out bytes twice.
    for (let i = 0; i < 2000; i++) seen.add(Buffer.from(pooledRandomBytes(16)).toString('hex'));
    expect(seen.size).toBe(2000);
  });

  it('gives each caller its own copy: changing one result changes no later one', () => {
    const a = pooledRandomBytes(8);
    const b = pooledRandomBytes(8);
    const before = Buffer.from(b).toString('hex');
    a.fill(0);
    expect(Buffer.from(b).toString('hex')).toBe(before);
  });
});
