import type { CandidateView, FilterName, PlacementRequest } from '../model';

/**
 * One feasibility check, as in Nomad's `feasible/` and Nova's host filters: a pure yes/no per host, plus
 * the words for an operator when it rejected hosts. Filters never rank; weighers do.
 */
export interface PlacementFilter {
  readonly name: FilterName;
  /** True when the host can take the request as far as this filter is concerned. */
  passes(host: CandidateView, request: PlacementRequest): boolean;
  /**
   * Why the given hosts (all rejected by this filter) cannot take the request, as a short phrase such as
   * "need 4096 MiB free, best has 2048 MiB". Called only when no host fits, so it may scan `rejected`.
   */
  describe(request: PlacementRequest, rejected: readonly CandidateView[]): string;
}

/** Whole units for people: capacity may be fractional under overcommit and negative when overcommitted. */
export function formatCapacity(value: number): string {
  return String(Math.max(0, Math.floor(value)));
}

/** The largest value over hosts, by a loop: a spread of thousands of arguments could overflow the stack. */
export function bestOf<T>(hosts: readonly T[], valueOf: (host: T) => number): number {
  let best = -Infinity;
  for (const host of hosts) best = Math.max(best, valueOf(host));
  return best;
}
