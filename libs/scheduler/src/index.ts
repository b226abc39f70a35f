// @flotilla/scheduler: pure VM placement (filters + weighers), a full-scan reference and an indexed scheduler.
export {
  DEFAULT_PLACEMENT_POLICY,
  placementPolicy,
  type CandidateView,
  type FilterName,
  type HostCandidate,
  type HostState,
  type PlacementPolicy,
  type PlacementRequest,
  type PlacementResult,
  type Rejection,
  type WeigherName,
} from './model';
export {
  freeMemoryMib,
  freeVcpus,
  memoryCapacityMib,
  memoryUtilisation,
  toCandidateView,
  utilisationAfter,
  vcpuCapacity,
} from './capacity';
export { SchedulerError, SchedulerErrorCode } from './errors';
export type { PlacementFilter } from './filters/placement-filter';
export type { PlacementWeigher, WeighedHost, WeighedRequest } from './weighers/placement-weigher';
export { FILTER_STACK, WEIGHERS, firstRejectingFilter, passesAllFilters } from './stack';
export { describeRequestSize, explainNoHost } from './explain';
export { placeOnce } from './place-once';
export { Scheduler, type SchedulerOptions, type SchedulerStats } from './scheduler';
