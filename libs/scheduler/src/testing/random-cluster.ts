import type { CandidateView, HostCandidate, HostState, PlacementRequest } from '../model';

/**
 * Deterministic test data for the scheduler's specs (not exported from the lib): a seeded PRNG, so a
 * failing property test names its seed and replays exactly.
 */

/** mulberry32: a tiny, fast, seedable PRNG; quality is ample for test data. */
export function seededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export function pick<T>(random: () => number, choices: readonly T[]): T {
  return choices[Math.floor(random() * choices.length)];
}

export function integerBetween(random: () => number, low: number, high: number): number {
  return low + Math.floor(random() * (high - low + 1));
}

export function uniformHost(id: string, overrides: Partial<HostCandidate> = {}): HostCandidate {
  return {
    id,
    state: 'ENABLED',
    cpus: 32,
    memoryMib: 131072,
    vcpusAllocated: 0,
    memoryMibAllocated: 0,
    labels: {},
    antiAffinityGroups: {},
    ...overrides,
  };
}

const STATES: readonly HostState[] = [
  'ENABLED',
  'ENABLED',
  'ENABLED',
  'ENABLED',
  'DISABLED',
  'MAINTENANCE',
  'DOWN',
];
const ZONES = ['az1', 'az2', 'az3'];
const GROUPS = ['web', 'db', 'cache', 'queue'];

/**
 * Small hosts with coarse sizes so filters bite often and weigher ties happen (ties exercise the id tie-break):
 * a mix of states, zones, a rare gpu label, per-host overcommit ratios, and some existing allocation.
 */
export function randomHost(random: () => number, id: string): HostCandidate {
  const cpus = pick(random, [2, 4, 8]);
  const memoryMib = pick(random, [4096, 8192, 16384]);
  const labels: Record<string, string> = { zone: pick(random, ZONES) };
  if (random() < 0.1) labels.gpu = 'true';
  const antiAffinityGroups: Record<string, number> = {};
  if (random() < 0.3) antiAffinityGroups[pick(random, GROUPS)] = 1;
  return {
    id,
    state: pick(random, STATES),
    cpus,
    memoryMib,
    vcpusAllocated: integerBetween(random, 0, cpus * 2),
    memoryMibAllocated: pick(random, [0, 0, 1024, 2048, 4096]),
    ...(random() < 0.2 ? { cpuOvercommitRatio: pick(random, [1, 2, 1.5]) } : {}),
    ...(random() < 0.2 ? { memoryOvercommitRatio: pick(random, [1.5, 0.9]) } : {}),
    labels,
    antiAffinityGroups,
  };
}

export function randomRequest(random: () => number, hostIds: readonly string[]): PlacementRequest {
  return {
    vcpus: pick(random, [1, 1, 2, 4, 8]),
    memoryMib: pick(random, [512, 1024, 2048, 4096, 8192]),
    ...(random() < 0.2
      ? { requiredLabels: random() < 0.5 ? { zone: pick(random, ZONES) } : { gpu: 'true' } }
      : {}),
    ...(random() < 0.3 ? { antiAffinityGroup: pick(random, GROUPS) } : {}),
    ...(random() < 0.1 && hostIds.length > 0 ? { excludeHostIds: [pick(random, hostIds)] } : {}),
  };
}

/**
 * Hosts of a few sizes, in few capacity classes (the same class reached from different sizes and ratios),
 * with allocations in whole GiB, plus the odd host without memory or cores: many hosts per class (several
 * index blocks each) and frequent exact ties across classes, e.g. (1024 + 1024) / 4096 equals
 * (3072 + 1024) / 8192.
 */
export function tieProneHost(random: () => number, id: string): HostCandidate {
  const cpus = pick(random, [0, 4, 8, 8, 8, 8, 8, 8]);
  const memoryMib = pick(random, [0, 4096, 4096, 8192, 8192, 8192, 8192, 8192]);
  const memoryOvercommitRatio = random() < 0.2 ? 2 : undefined;
  const capacityGib = (memoryMib * (memoryOvercommitRatio ?? 1)) / 1024;
  const antiAffinityGroups: Record<string, number> = {};
  if (random() < 0.2) antiAffinityGroups[pick(random, GROUPS)] = 1;
  return {
    id,
    state: pick(random, STATES),
    cpus,
    memoryMib,
    vcpusAllocated: integerBetween(random, 0, cpus * 2),
    memoryMibAllocated: 1024 * integerBetween(random, 0, capacityGib),
    ...(random() < 0.1 ? { cpuOvercommitRatio: 2 } : {}),
    ...(memoryOvercommitRatio === undefined ? {} : { memoryOvercommitRatio }),
    labels: { zone: pick(random, ZONES) },
    antiAffinityGroups,
  };
}

/** Requests in whole GiB, zero sizes included, for tieProneHost clusters. */
export function tieProneRequest(random: () => number, hostIds: readonly string[]): PlacementRequest {
  return {
    ...randomRequest(random, hostIds),
    vcpus: pick(random, [0, 1, 1, 2, 4]),
    memoryMib: pick(random, [0, 1024, 1024, 2048, 3072]),
  };
}

export function candidateView(overrides: Partial<CandidateView> = {}): CandidateView {
  return {
    id: 'h1',
    state: 'ENABLED',
    memoryCapacityMib: 8192,
    vcpuCapacity: 8,
    memoryMibAllocated: 0,
    vcpusAllocated: 0,
    freeMemoryMib: 8192,
    freeVcpus: 8,
    labels: {},
    antiAffinityGroups: {},
    ...overrides,
  };
}

/** A consistent view from effective capacity and allocation: free capacity is worked out from them. */
export function sizedView(
  id: string,
  size: {
    memoryCapacityMib: number;
    vcpuCapacity: number;
    memoryMibAllocated?: number;
    vcpusAllocated?: number;
  },
): CandidateView {
  const memoryMibAllocated = size.memoryMibAllocated ?? 0;
  const vcpusAllocated = size.vcpusAllocated ?? 0;
  return candidateView({
    id,
    memoryCapacityMib: size.memoryCapacityMib,
    vcpuCapacity: size.vcpuCapacity,
    memoryMibAllocated,
    vcpusAllocated,
    freeMemoryMib: size.memoryCapacityMib - memoryMibAllocated,
    freeVcpus: size.vcpuCapacity - vcpusAllocated,
  });
}
