import { toCandidateView } from './capacity';
import { placementPolicy, type HostCandidate, type PlacementRequest, type WeigherName } from './model';
import { placeOnce } from './place-once';
import { Scheduler } from './scheduler';
import { firstRejectingFilter } from './stack';
import {
  integerBetween,
  pick,
  randomHost,
  randomRequest,
  seededRandom,
  tieProneHost,
  tieProneRequest,
} from './testing/random-cluster';

/**
 * Property: on any host set and any sequence of decisions, reservations, releases and host changes, the
 * indexed Scheduler agrees with the full scan (placeOnce on the Scheduler's own snapshot): same feasibility,
 * the same host (both follow the weigher's total order), a host every filter accepts, and the same
 * explanation when nothing fits. Bounded: fixed seeds, at most a few hundred hosts and steps per seed.
 */

interface Case {
  seed: number;
  weigher: WeigherName;
  maxHosts: number;
  steps: number;
  /** random: many capacity classes of a few hosts; tie-prone: few classes of many hosts, exact ties. */
  cluster: 'random' | 'tie-prone';
}

const GENERATORS = {
  random: { host: randomHost, request: randomRequest },
  'tie-prone': { host: tieProneHost, request: tieProneRequest },
} as const;

const cases: Case[] = [];
for (let seed = 1; seed <= 25; seed += 1) {
  for (const weigher of ['spread', 'pack'] as const)
    cases.push({ seed, weigher, maxHosts: 40, steps: 200, cluster: 'random' });
}
for (let seed = 101; seed <= 104; seed += 1) {
  // Enough hosts for several index blocks and for the rare-label scan path (k² ≤ n).
  for (const weigher of ['spread', 'pack'] as const)
    cases.push({ seed, weigher, maxHosts: 600, steps: 400, cluster: 'random' });
}
for (let seed = 201; seed <= 210; seed += 1) {
  for (const weigher of ['spread', 'pack'] as const)
    cases.push({ seed, weigher, maxHosts: 500, steps: 300, cluster: 'tie-prone' });
}

function expectAgreesWithFullScan(scheduler: Scheduler, request: PlacementRequest, context: string): void {
  const snapshot = scheduler.hosts();
  const expected = placeOnce(snapshot, request, scheduler.policy);
  const actual = scheduler.place(request);
  expect({ context, ok: actual.ok }).toEqual({ context, ok: expected.ok });
  if (actual.ok) {
    const chosen = snapshot.find((host) => host.id === actual.hostId) as HostCandidate;
    expect({
      context,
      rejectedBy: firstRejectingFilter(toCandidateView(chosen, scheduler.policy), request)?.name,
    }).toEqual({
      context,
      rejectedBy: undefined,
    });
  }
  expect({ context, result: actual }).toEqual({ context, result: expected });
}

describe('Scheduler agrees with placeOnce', () => {
  it.each(cases)(
    'on $cluster cluster seed $seed with $weigher and up to $maxHosts hosts',
    ({ seed, weigher, maxHosts, steps, cluster }) => {
      const random = seededRandom(seed);
      const generate = GENERATORS[cluster];
      let nextHostId = 0;
      const newHost = () => generate.host(random, `h${String(nextHostId++).padStart(4, '0')}`);
      const hostCount = integerBetween(random, 0, maxHosts);
      const scheduler = new Scheduler({
        policy: placementPolicy({ weigher, cpuOvercommitRatio: pick(random, [1, 2, 4]) }),
        hosts: Array.from({ length: hostCount }, newHost),
      });
      const reservations: { hostId: string; request: PlacementRequest }[] = [];

      for (let step = 0; step < steps; step += 1) {
        const context = `seed ${seed} step ${step}`;
        const ids = scheduler.hosts().map((host) => host.id);
        const roll = random();
        if (roll < 0.7) {
          const request = generate.request(random, ids);
          expectAgreesWithFullScan(scheduler, request, context);
          const result = scheduler.place(request);
          if (result.ok) {
            scheduler.reserve(result.hostId, request);
            reservations.push({ hostId: result.hostId, request });
          }
        } else if (roll < 0.8 && reservations.length > 0) {
          const [reservation] = reservations.splice(integerBetween(random, 0, reservations.length - 1), 1);
          if (scheduler.host(reservation.hostId) !== undefined)
            scheduler.release(reservation.hostId, reservation.request);
        } else if (roll < 0.9 && ids.length > 0) {
          // A fresh snapshot from the compute service: new state, allocation kept (reservations stay valid).
          const current = scheduler.host(pick(random, ids)) as HostCandidate;
          scheduler.upsertHost({
            ...current,
            state: pick(random, ['ENABLED', 'ENABLED', 'DOWN', 'MAINTENANCE'] as const),
          });
        } else if (roll < 0.95 && ids.length > 0) {
          const removed = pick(random, ids);
          scheduler.removeHost(removed);
          for (let index = reservations.length - 1; index >= 0; index -= 1) {
            if (reservations[index].hostId === removed) reservations.splice(index, 1);
          }
        } else {
          scheduler.upsertHost(newHost());
        }
      }
      expect(scheduler.stats().indexMisses).toBe(0);
    },
  );
});
