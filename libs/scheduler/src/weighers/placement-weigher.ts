import type { CandidateView, PlacementRequest, WeigherName } from '../model';

/** What a weigher may look at: a host's own capacity, allocation and id. */
export type WeighedHost = Pick<
  CandidateView,
  | 'id'
  | 'memoryCapacityMib'
  | 'vcpuCapacity'
  | 'memoryMibAllocated'
  | 'vcpusAllocated'
  | 'freeMemoryMib'
  | 'freeVcpus'
>;

/** What a weigher may look at of the request: its size, never its labels, group or exclusions. */
export type WeighedRequest = Pick<PlacementRequest, 'vcpus' | 'memoryMib'>;

/**
 * Ranks hosts that passed every filter. Invariants placeOnce and the index rely on:
 * - for any one request, `compare` is a strict total order (0 only for the same host id), so the best host
 *   is unique and both placement paths agree on it, whatever order they look at hosts in;
 * - the order may depend on the request only across capacity classes: on hosts of the same
 *   `capacityClass`, `compare(a, b, request)` has the sign of `compareWithinClass(a, b)` for every request.
 *   The index keeps each class sorted by `compareWithinClass` between decisions and re-sorts a host only
 *   when its own allocation changes; a decision compares the classes' best hosts under `compare`.
 * A request-independent weigher (pack) puts every host in one class.
 */
export interface PlacementWeigher {
  readonly name: WeigherName;
  /** Negative when `a` should be chosen before `b` for this request. */
  compare(a: WeighedHost, b: WeighedHost, request: WeighedRequest): number;
  /**
   * The first key `compare` sorts by, as a number: a host with a lower rank comes first, equal ranks go on
   * to the tie-breaks. Lets the index bound whole classes with one subtraction-free comparison each.
   */
  rank(host: WeighedHost, request: WeighedRequest): number;
  /**
   * Hosts with the same key are ranked the same way for every request. Depends on effective capacity only,
   * so a host keeps its class while its allocation changes.
   */
  capacityClass(host: Pick<WeighedHost, 'memoryCapacityMib' | 'vcpuCapacity'>): string;
  /** The request-independent order within one capacity class; negative when `a` comes first. */
  compareWithinClass(a: WeighedHost, b: WeighedHost): number;
}

/** The last tie-break: deterministic, so a rerun on the same snapshot makes the same choice. */
export function compareHostIds(a: Pick<WeighedHost, 'id'>, b: Pick<WeighedHost, 'id'>): number {
  return a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
}
