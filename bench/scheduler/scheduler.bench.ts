/**
 * Scheduler benchmark: 10,000 VMs placed one after another (decide + reserve) on 5,000 hosts of mixed
 * sizes, by (1) the indexed Scheduler and, as baselines in the same run, (2) a naive first-fit scan and
 * (3) the full-scan reference placeOnce with the same spread weigher. Prints decisions/s, p50/p99 latency per
 * decision, the speed-up over each baseline, and the balance of memory utilisation across ENABLED hosts
 * (max/mean, and the coefficient of variation) for the index against the full scan. Spread ranks hosts by
 * utilisation after placement, so the index keeps one sorted order per capacity class; the number of
 * classes is printed too. Target: ≥ 10,000 decisions/s, p99 < 1 ms.
 *
 * Run: the build compiles it to dist/bench/scheduler/scheduler.bench.js; `node <that file>` runs main(),
 * and a harness may call runSchedulerBench() instead.
 */
import {
  Scheduler,
  WEIGHERS,
  memoryUtilisation,
  passesAllFilters,
  placeOnce,
  placementPolicy,
  toCandidateView,
  type HostCandidate,
  type HostState,
  type PlacementPolicy,
  type PlacementRequest,
} from '@flotilla/scheduler';

export interface SchedulerBenchOptions {
  readonly hosts?: number;
  readonly requests?: number;
  readonly seed?: number;
}

export interface LatencySummary {
  readonly decisions: number;
  readonly placed: number;
  readonly refused: number;
  readonly decisionsPerSec: number;
  readonly p50Us: number;
  readonly p99Us: number;
  readonly maxUs: number;
  /** max/mean memory utilisation across ENABLED hosts once every request was handled (1 = perfectly even). */
  readonly balanceMaxOverMean: number;
  /** Standard deviation / mean of the same utilisations (0 = perfectly even): less swayed by one host. */
  readonly balanceCv: number;
}

export interface BenchResult {
  readonly hosts: number;
  readonly requests: number;
  /** Distinct (effective memory, effective vCPUs) among ENABLED hosts: the spread index's class orders. */
  readonly spreadCapacityClasses: number;
  readonly indexedSpread: LatencySummary;
  readonly indexedPack: LatencySummary;
  readonly firstFit: LatencySummary;
  readonly fullScanSpread: LatencySummary;
  /** indexedSpread decisions/s over firstFit decisions/s. */
  readonly speedupOverFirstFit: number;
  /** indexedSpread decisions/s over fullScanSpread decisions/s. */
  readonly speedupOverFullScan: number;
  /** indexedSpread balance over fullScanSpread balance: 1 means the index placed as evenly as the full scan. */
  readonly balanceRatio: number;
  /** Share of decisions where the index chose the very host placeOnce chose. */
  readonly sameHostShare: number;
  readonly meetsTarget: boolean;
}

const TARGET_DECISIONS_PER_SEC = 10_000;
const TARGET_P99_US = 1_000;
const GIB = 1024;

/** mulberry32: seeded so every run places the same workload. */
function seededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function weighted<T>(random: () => number, choices: readonly (readonly [T, number])[]): T {
  const total = choices.reduce((sum, [, weight]) => sum + weight, 0);
  let roll = random() * total;
  for (const [choice, weight] of choices) {
    roll -= weight;
    if (roll < 0) return choice;
  }
  return choices[choices.length - 1][0];
}

/** [cores, GiB] server SKUs of a typical mixed fleet, by share. */
const HOST_SKUS: readonly (readonly [readonly [number, number], number])[] = [
  [[32, 128], 15],
  [[32, 256], 15],
  [[48, 384], 15],
  [[64, 256], 10],
  [[64, 512], 20],
  [[96, 768], 10],
  [[128, 512], 5],
  [[128, 1024], 10],
];
const HOST_STATES: readonly (readonly [HostState, number])[] = [
  ['ENABLED', 95],
  ['DISABLED', 2],
  ['MAINTENANCE', 2],
  ['DOWN', 1],
];
/** [vCPUs, GiB] flavors, small ones most common, by share. */
const FLAVORS: readonly (readonly [readonly [number, number], number])[] = [
  [[1, 2], 20],
  [[2, 4], 25],
  [[2, 8], 10],
  [[4, 8], 15],
  [[4, 16], 10],
  [[8, 16], 6],
  [[8, 32], 6],
  [[16, 64], 5],
  [[32, 128], 3],
];

export function makeHosts(count: number, random: () => number): HostCandidate[] {
  return Array.from({ length: count }, (_, index) => {
    const [cpus, memoryGib] = weighted(random, HOST_SKUS);
    const labels: Record<string, string> = {
      zone: `az${1 + (index % 3)}`,
      rack: `r${Math.floor(random() * 100)}`,
      cpu: random() < 0.6 ? 'intel' : 'amd',
    };
    if (random() < 0.04) labels.gpu = 'a100';
    return {
      id: `host-${String(index).padStart(5, '0')}`,
      state: weighted(random, HOST_STATES),
      cpus,
      memoryMib: memoryGib * GIB,
      vcpusAllocated: 0,
      memoryMibAllocated: 0,
      // Some hosts are dedicated (no cpu overcommit beyond 2:1); the rest use the policy's 4:1.
      ...(random() < 0.1 ? { cpuOvercommitRatio: 2 } : {}),
      labels,
      antiAffinityGroups: {},
    };
  });
}

export function makeRequests(
  count: number,
  hostIds: readonly string[],
  random: () => number,
): PlacementRequest[] {
  return Array.from({ length: count }, (_, index) => {
    const [vcpus, memoryGib] = weighted(random, FLAVORS);
    const roll = random();
    const requiredLabels: Record<string, string> | undefined =
      roll < 0.1
        ? { zone: `az${1 + Math.floor(random() * 3)}` }
        : roll < 0.13
          ? { gpu: 'a100' }
          : roll < 0.15
            ? { zone: 'az1', rack: `r${Math.floor(random() * 100)}` }
            : undefined;
    return {
      vcpus,
      memoryMib: memoryGib * GIB,
      ...(requiredLabels === undefined ? {} : { requiredLabels }),
      // A quarter of the VMs are replicas of 3-VM services that must not share a host.
      ...(index % 4 === 0 ? { antiAffinityGroup: `svc-${Math.floor(index / 12)}` } : {}),
      ...(random() < 0.01 ? { excludeHostIds: [hostIds[Math.floor(random() * hostIds.length)]] } : {}),
    };
  });
}

/** One way of placing: decide and commit one request; returns the chosen host id or undefined. */
interface Placer {
  placeAndReserve(request: PlacementRequest): string | undefined;
  finalHosts(): readonly HostCandidate[];
}

function indexedPlacer(hosts: readonly HostCandidate[], policy: PlacementPolicy): Placer {
  const scheduler = new Scheduler({ policy, hosts });
  return {
    placeAndReserve(request) {
      const result = scheduler.place(request);
      if (!result.ok) return undefined;
      scheduler.reserve(result.hostId, request);
      return result.hostId;
    },
    finalHosts: () => scheduler.hosts(),
  };
}

/** The reference: every host through every filter and the weigher, on an immutable snapshot. */
function fullScanPlacer(initial: readonly HostCandidate[], policy: PlacementPolicy): Placer {
  const hosts = [...initial];
  const positionById = new Map(hosts.map((host, position) => [host.id, position]));
  return {
    placeAndReserve(request) {
      const result = placeOnce(hosts, request, policy);
      if (!result.ok) return undefined;
      const position = positionById.get(result.hostId) as number;
      hosts[position] = withReservation(hosts[position], request);
      return result.hostId;
    },
    finalHosts: () => hosts,
  };
}

/** The naive baseline: the first host in list order that every filter accepts. */
function firstFitPlacer(initial: readonly HostCandidate[], policy: PlacementPolicy): Placer {
  const hosts = [...initial];
  return {
    placeAndReserve(request) {
      const position = hosts.findIndex((host) => passesAllFilters(toCandidateView(host, policy), request));
      if (position < 0) return undefined;
      hosts[position] = withReservation(hosts[position], request);
      return hosts[position].id;
    },
    finalHosts: () => hosts,
  };
}

function withReservation(host: HostCandidate, request: PlacementRequest): HostCandidate {
  const group = request.antiAffinityGroup;
  return {
    ...host,
    vcpusAllocated: host.vcpusAllocated + request.vcpus,
    memoryMibAllocated: host.memoryMibAllocated + request.memoryMib,
    antiAffinityGroups:
      group === undefined
        ? host.antiAffinityGroups
        : { ...host.antiAffinityGroups, [group]: (host.antiAffinityGroups[group] ?? 0) + 1 },
  };
}

function measure(
  placer: Placer,
  requests: readonly PlacementRequest[],
  policy: PlacementPolicy,
): { summary: LatencySummary; chosen: (string | undefined)[] } {
  const latenciesNs = new Float64Array(requests.length);
  const chosen: (string | undefined)[] = new Array(requests.length);
  let placed = 0;
  const started = process.hrtime.bigint();
  for (let index = 0; index < requests.length; index += 1) {
    const before = process.hrtime.bigint();
    const hostId = placer.placeAndReserve(requests[index]);
    latenciesNs[index] = Number(process.hrtime.bigint() - before);
    chosen[index] = hostId;
    if (hostId !== undefined) placed += 1;
  }
  const elapsedNs = Number(process.hrtime.bigint() - started);
  latenciesNs.sort();
  const percentileUs = (fraction: number) =>
    latenciesNs[Math.min(latenciesNs.length - 1, Math.floor(fraction * latenciesNs.length))] / 1000;
  return {
    chosen,
    summary: {
      decisions: requests.length,
      placed,
      refused: requests.length - placed,
      decisionsPerSec: requests.length / (elapsedNs / 1e9),
      p50Us: percentileUs(0.5),
      p99Us: percentileUs(0.99),
      maxUs: latenciesNs[latenciesNs.length - 1] / 1000,
      ...balance(placer.finalHosts(), policy),
    },
  };
}

function balance(
  hosts: readonly HostCandidate[],
  policy: PlacementPolicy,
): Pick<LatencySummary, 'balanceMaxOverMean' | 'balanceCv'> {
  const utilisations = hosts
    .filter((host) => host.state === 'ENABLED')
    .map((host) => memoryUtilisation(host, policy));
  const mean = utilisations.reduce((sum, value) => sum + value, 0) / utilisations.length;
  if (!(mean > 0)) return { balanceMaxOverMean: 1, balanceCv: 0 };
  const variance = utilisations.reduce((sum, value) => sum + (value - mean) ** 2, 0) / utilisations.length;
  return { balanceMaxOverMean: Math.max(...utilisations) / mean, balanceCv: Math.sqrt(variance) / mean };
}

function countCapacityClasses(hosts: readonly HostCandidate[], policy: PlacementPolicy): number {
  return new Set(
    hosts
      .filter((host) => host.state === 'ENABLED')
      .map((host) => WEIGHERS.spread.capacityClass(toCandidateView(host, policy))),
  ).size;
}

export async function runSchedulerBench(options: SchedulerBenchOptions = {}): Promise<BenchResult> {
  const hostCount = options.hosts ?? 5_000;
  const requestCount = options.requests ?? 10_000;
  const random = seededRandom(options.seed ?? 2009);
  const hosts = makeHosts(hostCount, random);
  const requests = makeRequests(
    requestCount,
    hosts.map((host) => host.id),
    random,
  );
  const spread = placementPolicy({ weigher: 'spread' });
  const pack = placementPolicy({ weigher: 'pack' });

  // Warm the JIT on a slice of the workload so the measured runs see optimised code.
  const warmup = requests.slice(0, Math.min(2_000, requestCount));
  for (const makePlacer of [indexedPlacer, firstFitPlacer, fullScanPlacer]) {
    measure(makePlacer(hosts, spread), warmup, spread);
  }
  measure(indexedPlacer(hosts, pack), warmup, pack);
  await new Promise((resolve) => setImmediate(resolve));

  const indexedSpread = measure(indexedPlacer(hosts, spread), requests, spread);
  const indexedPack = measure(indexedPlacer(hosts, pack), requests, pack);
  const firstFit = measure(firstFitPlacer(hosts, spread), requests, spread);
  const fullScanSpread = measure(fullScanPlacer(hosts, spread), requests, spread);

  const sameHost = indexedSpread.chosen.filter(
    (hostId, index) => hostId === fullScanSpread.chosen[index],
  ).length;
  return {
    hosts: hostCount,
    requests: requestCount,
    spreadCapacityClasses: countCapacityClasses(hosts, spread),
    indexedSpread: indexedSpread.summary,
    indexedPack: indexedPack.summary,
    firstFit: firstFit.summary,
    fullScanSpread: fullScanSpread.summary,
    speedupOverFirstFit: indexedSpread.summary.decisionsPerSec / firstFit.summary.decisionsPerSec,
    speedupOverFullScan: indexedSpread.summary.decisionsPerSec / fullScanSpread.summary.decisionsPerSec,
    balanceRatio: indexedSpread.summary.balanceMaxOverMean / fullScanSpread.summary.balanceMaxOverMean,
    sameHostShare: sameHost / requestCount,
    meetsTarget: [indexedSpread.summary, indexedPack.summary].every(
      (summary) => summary.decisionsPerSec >= TARGET_DECISIONS_PER_SEC && summary.p99Us < TARGET_P99_US,
    ),
  };
}

export function formatSchedulerBench(result: BenchResult): string {
  const rows: [string, LatencySummary][] = [
    ['indexed Scheduler (spread)', result.indexedSpread],
    ['indexed Scheduler (pack)', result.indexedPack],
    ['baseline: naive first-fit scan', result.firstFit],
    ['baseline: placeOnce full scan (spread)', result.fullScanSpread],
  ];
  const header = [
    'placement',
    'decisions/s',
    'p50 µs',
    'p99 µs',
    'max µs',
    'placed',
    'mem util max/mean',
    'cv',
  ];
  const cells = rows.map(([name, summary]) => [
    name,
    summary.decisionsPerSec.toFixed(0),
    summary.p50Us.toFixed(1),
    summary.p99Us.toFixed(1),
    summary.maxUs.toFixed(0),
    `${summary.placed}/${summary.decisions}`,
    summary.balanceMaxOverMean.toFixed(3),
    summary.balanceCv.toFixed(3),
  ]);
  const widths = header.map((title, column) =>
    Math.max(title.length, ...cells.map((row) => row[column].length)),
  );
  const line = (row: string[]) =>
    row
      .map((cell, column) => (column === 0 ? cell.padEnd(widths[column]) : cell.padStart(widths[column])))
      .join('  ');
  return [
    `scheduler: ${result.requests} VMs placed one by one (place + reserve) on ${result.hosts} hosts ` +
      `(${result.spreadCapacityClasses} spread capacity classes)`,
    line(header),
    ...cells.map(line),
    `indexed spread vs first-fit: ${result.speedupOverFirstFit.toFixed(1)}x decisions/s`,
    `indexed spread vs full scan: ${result.speedupOverFullScan.toFixed(1)}x decisions/s`,
    `spread balance (mem util max/mean): indexed ${result.indexedSpread.balanceMaxOverMean.toFixed(3)}, ` +
      `full scan ${result.fullScanSpread.balanceMaxOverMean.toFixed(3)} ` +
      `(ratio ${result.balanceRatio.toFixed(3)}); ` +
      `same host as full scan in ${(result.sameHostShare * 100).toFixed(1)}% of decisions`,
    `target ≥ ${TARGET_DECISIONS_PER_SEC} decisions/s and p99 < ${TARGET_P99_US} µs: ${result.meetsTarget ? 'met' : 'NOT met'}`,
  ].join('\n');
}

export async function main(): Promise<void> {
  console.log(formatSchedulerBench(await runSchedulerBench()));
}

if (require.main === module) {
  main().catch((error: unknown) => {
    console.error(error);
    process.exitCode = 1;
  });
}
