import { spreadWeigher } from './spread.weigher';

const best = (hosts: { id: string; freeMemoryMib: number; freeVcpus: number }[]) =>
  [...hosts].sort(spreadWeigher.compare)[0].id;

describe('spread weigher', () => {
  it('prefers the host with the most free memory', () => {
    expect(
      best([
        { id: 'a', freeMemoryMib: 4096, freeVcpus: 64 },
        { id: 'b', freeMemoryMib: 8192, freeVcpus: 2 },
      ]),
    ).toBe('b');
  });

  it('breaks a free-memory tie by the most free vCPUs', () => {
    expect(
      best([
        { id: 'a', freeMemoryMib: 8192, freeVcpus: 4 },
        { id: 'b', freeMemoryMib: 8192, freeVcpus: 16 },
      ]),
    ).toBe('b');
  });

  it('breaks a full tie by the smallest host id, so reruns choose the same host', () => {
    expect(
      best([
        { id: 'h2', freeMemoryMib: 8192, freeVcpus: 4 },
        { id: 'h1', freeMemoryMib: 8192, freeVcpus: 4 },
      ]),
    ).toBe('h1');
  });

  it('orders two distinct hosts strictly', () => {
    const a = { id: 'a', freeMemoryMib: 1, freeVcpus: 1 };
    const b = { id: 'b', freeMemoryMib: 1, freeVcpus: 1 };
    expect(Math.sign(spreadWeigher.compare(a, b))).toBe(-Math.sign(spreadWeigher.compare(b, a)));
    expect(spreadWeigher.compare(a, b)).not.toBe(0);
  });
});
