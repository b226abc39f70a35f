import type { CandidateView, PlacementRequest } from '../model';
import { integerBetween, pick, seededRandom, sizedView } from '../testing/random-cluster';
import { compareForSpread, spreadWeigher } from './spread.weigher';

const GIB = 1024;
const small: PlacementRequest = { vcpus: 2, memoryMib: 4 * GIB };
const best = (hosts: CandidateView[], request: PlacementRequest = small) =>
  [...hosts].sort((a, b) => compareForSpread(a, b, request))[0].id;

describe('spread weigher', () => {
  it('prefers the lowest memory utilisation over the most free MiB', () => {
    const hosts = [
      // 512 GiB free, but half full.
      sizedView('big', { memoryCapacityMib: 1024 * GIB, vcpuCapacity: 512, memoryMibAllocated: 512 * GIB }),
      // 120 GiB free, 6 % full.
      sizedView('small', { memoryCapacityMib: 128 * GIB, vcpuCapacity: 128, memoryMibAllocated: 8 * GIB }),
    ];
    expect(best(hosts)).toBe('small');
  });

  it('counts the request in: a large VM goes where it raises utilisation least', () => {
    const hosts = [
      sizedView('empty-128', { memoryCapacityMib: 128 * GIB, vcpuCapacity: 128 }),
      sizedView('used-1024', {
        memoryCapacityMib: 1024 * GIB,
        vcpuCapacity: 512,
        memoryMibAllocated: 64 * GIB,
      }),
    ];
    // 4 GiB: 3 % on the empty small host against 7 % on the big one.
    expect(best(hosts, small)).toBe('empty-128');
    // 64 GiB: 50 % on the small host against 12.5 % on the big one.
    expect(best(hosts, { vcpus: 8, memoryMib: 64 * GIB })).toBe('used-1024');
  });

  it('breaks an exact memory tie between different sizes by vCPU utilisation', () => {
    // After 1 GiB more: 2048 / 4096 = 4096 / 8192 = 0.5 exactly.
    const hosts = [
      sizedView('a', {
        memoryCapacityMib: 4096,
        vcpuCapacity: 8,
        memoryMibAllocated: 1024,
        vcpusAllocated: 4,
      }),
      sizedView('b', {
        memoryCapacityMib: 8192,
        vcpuCapacity: 16,
        memoryMibAllocated: 3072,
        vcpusAllocated: 4,
      }),
    ];
    expect(best(hosts, { vcpus: 1, memoryMib: 1024 })).toBe('b');
  });

  it('breaks a full tie by the smallest host id, so reruns choose the same host', () => {
    const size = { memoryCapacityMib: 8192, vcpuCapacity: 8 };
    expect(best([sizedView('h2', size), sizedView('h1', size)])).toBe('h1');
  });

  it('ranks a host without memory capacity last, without dividing 0 by 0', () => {
    const hosts = [
      sizedView('none', { memoryCapacityMib: 0, vcpuCapacity: 8 }),
      sizedView('full', { memoryCapacityMib: 4096, vcpuCapacity: 8, memoryMibAllocated: 4096 }),
    ];
    expect(best(hosts, { vcpus: 1, memoryMib: 0 })).toBe('full');
  });

  it('orders two distinct hosts strictly', () => {
    const a = sizedView('a', { memoryCapacityMib: 1, vcpuCapacity: 1 });
    const b = sizedView('b', { memoryCapacityMib: 1, vcpuCapacity: 1 });
    expect(Math.sign(compareForSpread(a, b, small))).toBe(-Math.sign(compareForSpread(b, a, small)));
    expect(compareForSpread(a, b, small)).not.toBe(0);
  });

  it('puts hosts with different effective capacity in different classes', () => {
    const classOf = spreadWeigher.capacityClass;
    expect(classOf({ memoryCapacityMib: 4096, vcpuCapacity: 8 })).toBe(
      classOf({ memoryCapacityMib: 4096, vcpuCapacity: 8 }),
    );
    expect(classOf({ memoryCapacityMib: 4096, vcpuCapacity: 8 })).not.toBe(
      classOf({ memoryCapacityMib: 4096, vcpuCapacity: 16 }),
    );
  });

  // The index's premise: within a class, the request-independent order is the order for every request.
  it('agrees with its within-class order on hosts of one class, for any request', () => {
    const random = seededRandom(5);
    for (let trial = 0; trial < 20_000; trial += 1) {
      const size = {
        // The guards' extremes: 1 MiB at ratio 1/1024, 2^50 MiB at ratio 1024 (and just below).
        memoryCapacityMib: pick(random, [
          0,
          1 / 1024,
          1,
          4096 * 0.9,
          4096,
          1_572_864,
          2 ** 60,
          2 ** 50 * 1023.9,
        ]),
        vcpuCapacity: pick(random, [0, 3, 8, 128, 6.000000000000001]),
      };
      const allocation = () => ({
        memoryMibAllocated: pick(random, [0, 1, 2, integerBetween(random, 0, 1 << 30), 2 ** 50 - 1, 2 ** 50]),
        vcpusAllocated: pick(random, [0, 1, integerBetween(random, 0, 64), 2 ** 50]),
      });
      const a = sizedView(pick(random, ['a', 'b']), { ...size, ...allocation() });
      const b = sizedView(pick(random, ['a', 'c']), { ...size, ...allocation() });
      const request = {
        vcpus: pick(random, [0, 1, 8, 2 ** 50]),
        memoryMib: pick(random, [0, 1, 4096, integerBetween(random, 0, 1 << 30), 2 ** 50]),
      };
      const within = Math.sign(spreadWeigher.compareWithinClass(a, b));
      expect({ a, b, request, sign: Math.sign(compareForSpread(a, b, request)) }).toEqual({
        a,
        b,
        request,
        sign: within,
      });
    }
  });
});
