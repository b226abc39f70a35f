import { memoryUtilisation } from './capacity';
import { placementPolicy, type HostCandidate, type PlacementRequest } from './model';
import { Scheduler } from './scheduler';
import { pick, seededRandom, uniformHost } from './testing/random-cluster';

/** Placement quality of the two weighers on a uniform cluster (no timings: benchmarks measure speed). */

const FLAVORS: readonly PlacementRequest[] = [
  { vcpus: 1, memoryMib: 1024 },
  { vcpus: 2, memoryMib: 4096 },
  { vcpus: 4, memoryMib: 8192 },
  { vcpus: 2, memoryMib: 2048 },
];

function placeAll(scheduler: Scheduler, requests: readonly PlacementRequest[]): void {
  for (const request of requests) {
    const result = scheduler.place(request);
    if (!result.ok) throw new Error(result.message);
    scheduler.reserve(result.hostId, request);
  }
}

function utilisations(scheduler: Scheduler): number[] {
  return scheduler.hosts().map((host) => memoryUtilisation(host, scheduler.policy));
}

describe('spread weigher on a uniform cluster', () => {
  const random = seededRandom(42);
  // About 230 GiB per host on average, so one 8 GiB VM more or less is under 4% of the mean.
  const requests = Array.from({ length: 1200 }, () => pick(random, FLAVORS));
  const scheduler = new Scheduler({
    policy: placementPolicy({ weigher: 'spread' }),
    hosts: Array.from({ length: 20 }, (_, index) =>
      uniformHost(`h${index}`, { cpus: 128, memoryMib: 524288 }),
    ),
  });
  placeAll(scheduler, requests);
  const used = scheduler.hosts().map((host: HostCandidate) => host.memoryMibAllocated);

  it('keeps the busiest host within 5% of the mean memory utilisation', () => {
    const values = utilisations(scheduler);
    const mean = values.reduce((sum, value) => sum + value, 0) / values.length;
    expect(Math.max(...values) / mean).toBeLessThan(1.05);
  });

  // The invariant behind the ratio: each VM goes to the emptiest host, so no host gets ahead by more than one VM.
  it('keeps the gap between the busiest and the idlest host within the largest flavor', () => {
    expect(Math.max(...used) - Math.min(...used)).toBeLessThanOrEqual(8192);
  });
});

/** [cores, GiB] of a mixed fleet, from the smallest to the largest host in the benchmark. */
const MIXED_SKUS: readonly (readonly [number, number])[] = [
  [32, 128],
  [32, 256],
  [48, 384],
  [64, 512],
  [96, 768],
  [128, 1024],
];

function mixedFleet(copies: number): HostCandidate[] {
  return MIXED_SKUS.flatMap(([cpus, gib], sku) =>
    Array.from({ length: copies }, (_, copy) =>
      uniformHost(`h${sku}-${copy}`, { cpus, memoryMib: gib * 1024 }),
    ),
  );
}

describe('spread weigher on a mixed fleet (128 GiB to 1 TiB hosts)', () => {
  const random = seededRandom(7);
  const scheduler = new Scheduler({ policy: placementPolicy({ weigher: 'spread' }), hosts: mixedFleet(4) });
  // 24 hosts, 12 TiB: 1,600 VMs of 3.75 GiB on average fill about half of it.
  placeAll(
    scheduler,
    Array.from({ length: 1600 }, () => pick(random, FLAVORS)),
  );

  it('fills hosts in proportion to their size: max/mean memory utilisation within 5% of 1', () => {
    const values = utilisations(scheduler);
    const mean = values.reduce((sum, value) => sum + value, 0) / values.length;
    expect(mean).toBeGreaterThan(0.45);
    expect(Math.max(...values) / mean).toBeLessThan(1.05);
    expect(Math.min(...values) / mean).toBeGreaterThan(0.95);
  });

  // The invariant behind the ratio: each VM goes where utilisation ends lowest, so no host gets ahead of
  // another by more than the largest flavor would add to that other host.
  it("keeps every host's utilisation within one largest flavor of every other host's", () => {
    const largestMib = Math.max(...FLAVORS.map((flavor) => flavor.memoryMib));
    const hosts = scheduler.hosts();
    for (const x of hosts) {
      for (const y of hosts) {
        expect(memoryUtilisation(x, scheduler.policy)).toBeLessThanOrEqual(
          memoryUtilisation(y, scheduler.policy) + largestMib / y.memoryMib + 1e-12,
        );
      }
    }
  });

  it('sends a large VM on an empty fleet to a largest host, not to the first host by id', () => {
    const empty = new Scheduler({ policy: placementPolicy({ weigher: 'spread' }), hosts: mixedFleet(2) });
    expect(empty.place({ vcpus: 16, memoryMib: 65536 })).toEqual({ ok: true, hostId: 'h5-0' });
  });

  it('keeps the index on the very host the full scan picks throughout', () => {
    expect(scheduler.stats()).toMatchObject({ fullScans: 0, indexMisses: 0 });
  });
});

describe('pack weigher on a uniform cluster', () => {
  it('fills hosts one after another and leaves the rest empty', () => {
    const scheduler = new Scheduler({
      policy: placementPolicy({ weigher: 'pack' }),
      hosts: Array.from({ length: 10 }, (_, index) => uniformHost(`h${index}`)),
    });
    // 80 × 4 GiB = 2.5 hosts of 128 GiB.
    placeAll(
      scheduler,
      Array.from({ length: 80 }, () => ({ vcpus: 2, memoryMib: 4096 })),
    );
    const allocations = scheduler
      .hosts()
      .map((host) => host.memoryMibAllocated)
      .sort((a, b) => b - a);
    expect(allocations).toEqual([131072, 131072, 65536, 0, 0, 0, 0, 0, 0, 0]);
  });

  it('uses no more hosts than the memory needs plus one, with mixed flavors', () => {
    const random = seededRandom(9);
    const requests = Array.from({ length: 300 }, () => pick(random, FLAVORS));
    const scheduler = new Scheduler({
      policy: placementPolicy({ weigher: 'pack' }),
      hosts: Array.from({ length: 40 }, (_, index) => uniformHost(`h${index}`)),
    });
    placeAll(scheduler, requests);
    const totalMib = requests.reduce((sum, request) => sum + request.memoryMib, 0);
    const hostsUsed = scheduler.hosts().filter((host) => host.memoryMibAllocated > 0).length;
    expect(hostsUsed).toBeLessThanOrEqual(Math.ceil(totalMib / 131072) + 1);
  });
});
