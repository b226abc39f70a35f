import { packWeigher } from './pack.weigher';

const best = (hosts: { id: string; freeMemoryMib: number; freeVcpus: number }[]) =>
  [...hosts].sort(packWeigher.compare)[0].id;

describe('pack weigher', () => {
  it('prefers the host with the least free memory', () => {
    expect(
      best([
        { id: 'a', freeMemoryMib: 8192, freeVcpus: 2 },
        { id: 'b', freeMemoryMib: 4096, freeVcpus: 64 },
      ]),
    ).toBe('b');
  });

  it('breaks a free-memory tie by the fewest free vCPUs', () => {
    expect(
      best([
        { id: 'a', freeMemoryMib: 4096, freeVcpus: 16 },
        { id: 'b', freeMemoryMib: 4096, freeVcpus: 4 },
      ]),
    ).toBe('b');
  });

  it('breaks a full tie by the smallest host id', () => {
    expect(
      best([
        { id: 'h2', freeMemoryMib: 4096, freeVcpus: 4 },
        { id: 'h1', freeMemoryMib: 4096, freeVcpus: 4 },
      ]),
    ).toBe('h1');
  });
});
