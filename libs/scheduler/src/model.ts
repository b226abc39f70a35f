/**
 * The placement vocabulary: what the scheduler is told about hosts and requests, and what it answers.
 * Everything here is plain data so a service can build it from its own snapshot (STYLE 9).
 */

/** A host's administrative/health state as the compute service records it; only ENABLED hosts take VMs. */
export type HostState = 'ENABLED' | 'DISABLED' | 'MAINTENANCE' | 'DOWN';

/** One hypervisor host as the scheduler sees it: capacity, what is already allocated, and its constraints. */
export interface HostCandidate {
  readonly id: string;
  readonly state: HostState;
  /** Physical cores the host offers to guests. */
  readonly cpus: number;
  /** Physical memory the host offers to guests. */
  readonly memoryMib: number;
  /** vCPUs of the VMs already placed on the host. */
  readonly vcpusAllocated: number;
  /** Memory of the VMs already placed on the host. */
  readonly memoryMibAllocated: number;
  /** vCPUs per core this host accepts; the policy's default when absent. */
  readonly cpuOvercommitRatio?: number;
  /** MiB of guest memory per MiB of host memory this host accepts; the policy's default when absent. */
  readonly memoryOvercommitRatio?: number;
  readonly labels: Readonly<Record<string, string>>;
  /** Anti-affinity group → number of VMs of that group already on the host. */
  readonly antiAffinityGroups: Readonly<Record<string, number>>;
}

/** What one VM needs. Callers validate sizes at the service edge (positive integers). */
export interface PlacementRequest {
  readonly vcpus: number;
  readonly memoryMib: number;
  /** Every key=value must be present on the host. */
  readonly requiredLabels?: Readonly<Record<string, string>>;
  /** No two VMs of the same group share a host. */
  readonly antiAffinityGroup?: string;
  /** Hosts never to choose, e.g. the source of a migration or a host that just failed this VM. */
  readonly excludeHostIds?: readonly string[];
}

/**
 * spread: lowest memory utilisation after placement, then lowest vCPU utilisation, then host id.
 * pack: least free memory that still fits, then fewest free vCPUs, then host id.
 */
export type WeigherName = 'spread' | 'pack';

export interface PlacementPolicy {
  readonly weigher: WeigherName;
  /** Used for hosts without their own cpuOvercommitRatio. */
  readonly cpuOvercommitRatio: number;
  /** Used for hosts without their own memoryOvercommitRatio. */
  readonly memoryOvercommitRatio: number;
}

/**
 * Spread is the default: hosts fill in proportion to their size (lowest utilisation after placement), which
 * keeps failure blast radius and noisy neighbours small.
 */
export const DEFAULT_PLACEMENT_POLICY: PlacementPolicy = Object.freeze({
  weigher: 'spread',
  cpuOvercommitRatio: 4.0,
  memoryOvercommitRatio: 1.0,
});

export function placementPolicy(overrides: Partial<PlacementPolicy> = {}): PlacementPolicy {
  return { ...DEFAULT_PLACEMENT_POLICY, ...overrides };
}

/** The name of a filter in the stack; rejections are keyed by it. */
export type FilterName =
  'host-state' | 'memory' | 'vcpus' | 'excluded-host' | 'anti-affinity' | 'required-labels';

/** How many hosts one filter rejected, and why, in words an operator can act on. */
export interface Rejection {
  readonly filter: FilterName;
  readonly hosts: number;
  readonly reason: string;
}

export type PlacementResult =
  | { readonly ok: true; readonly hostId: string }
  | { readonly ok: false; readonly rejections: readonly Rejection[]; readonly message: string };

/**
 * A host with its capacity worked out under the policy: what filters and weighers look at. Effective
 * capacity is the physical size times the overcommit ratio; free capacity is effective capacity minus what
 * is allocated, and may be negative when a host is overcommitted beyond its ratio.
 */
export interface CandidateView {
  readonly id: string;
  readonly state: HostState;
  /** `memoryMib × memoryOvercommitRatio`. */
  readonly memoryCapacityMib: number;
  /** `cpus × cpuOvercommitRatio`. */
  readonly vcpuCapacity: number;
  readonly memoryMibAllocated: number;
  readonly vcpusAllocated: number;
  /** `memoryCapacityMib − memoryMibAllocated`. */
  readonly freeMemoryMib: number;
  /** `vcpuCapacity − vcpusAllocated`. */
  readonly freeVcpus: number;
  readonly labels: Readonly<Record<string, string>>;
  readonly antiAffinityGroups: Readonly<Record<string, number>>;
}
