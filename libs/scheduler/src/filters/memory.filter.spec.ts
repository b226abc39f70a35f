import { candidateView } from '../testing/random-cluster';
import { memoryFilter } from './memory.filter';

describe('memory filter', () => {
  it('accepts a host whose free memory equals the request', () => {
    expect(memoryFilter.passes(candidateView({ freeMemoryMib: 4096 }), { vcpus: 1, memoryMib: 4096 })).toBe(
      true,
    );
  });

  it('rejects a host with one MiB too little free', () => {
    expect(memoryFilter.passes(candidateView({ freeMemoryMib: 4095 }), { vcpus: 1, memoryMib: 4096 })).toBe(
      false,
    );
  });

  it('rejects an overcommitted host whose free memory is negative', () => {
    expect(memoryFilter.passes(candidateView({ freeMemoryMib: -512 }), { vcpus: 1, memoryMib: 1 })).toBe(
      false,
    );
  });

  it('describes the need and the most free memory among the rejected hosts', () => {
    const rejected = [candidateView({ freeMemoryMib: 1024 }), candidateView({ freeMemoryMib: 2048.7 })];
    expect(memoryFilter.describe({ vcpus: 2, memoryMib: 4096 }, rejected)).toBe(
      'need 4096 MiB free, best has 2048 MiB',
    );
  });

  it('describes an overcommitted best host as having 0 MiB free', () => {
    expect(
      memoryFilter.describe({ vcpus: 2, memoryMib: 4096 }, [candidateView({ freeMemoryMib: -10 })]),
    ).toBe('need 4096 MiB free, best has 0 MiB');
  });
});
