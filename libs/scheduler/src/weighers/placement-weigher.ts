import type { CandidateView, WeigherName } from '../model';

/** What a weigher may look at: a host's own free capacity and its id, never the request. */
export type WeighedHost = Pick<CandidateView, 'id' | 'freeMemoryMib' | 'freeVcpus'>;

/**
 * Ranks hosts that passed every filter. Invariants the index relies on:
 * - `compare` is a strict total order (0 only for the same host id), so the best host is unique and the
 *   indexed scheduler and placeOnce agree on it;
 * - the order depends only on the host's own state, not on the request, so hosts can be kept sorted
 *   between decisions and re-sorted only when their own allocation changes.
 */
export interface PlacementWeigher {
  readonly name: WeigherName;
  /** Negative when `a` should be chosen before `b`. */
  compare(a: WeighedHost, b: WeighedHost): number;
}

/** The last tie-break: deterministic, so a rerun on the same snapshot makes the same choice. */
export function compareHostIds(a: Pick<WeighedHost, 'id'>, b: Pick<WeighedHost, 'id'>): number {
  return a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
}
