import type { PlacementFilter } from './filters/placement-filter';
import type { CandidateView, PlacementRequest, PlacementResult, Rejection } from './model';
import { FILTER_STACK, firstRejectingFilter } from './stack';

export type NoHostResult = Extract<PlacementResult, { ok: false }>;

/** "2 vCPU / 4096 MiB": how messages name a request. */
export function describeRequestSize(request: Pick<PlacementRequest, 'vcpus' | 'memoryMib'>): string {
  return `${request.vcpus} vCPU / ${request.memoryMib} MiB`;
}

/**
 * Why no host fits: every host is counted against the first filter (in stack order) that rejects it, and
 * the filters with the most rejections come first, e.g.
 * "no host can run 2 vCPU / 4096 MiB: 3 hosts rejected by memory (need 4096 MiB free, best has 2048 MiB),
 * 2 by host-state (not ENABLED: 2 DOWN)".
 * Costs a full pass over the hosts; it runs only when no host fits.
 */
export function explainNoHost(hosts: Iterable<CandidateView>, request: PlacementRequest): NoHostResult {
  const rejectedByFilter = new Map<PlacementFilter, CandidateView[]>();
  for (const host of hosts) {
    const filter = firstRejectingFilter(host, request);
    if (filter === undefined) continue;
    const rejected = rejectedByFilter.get(filter);
    if (rejected === undefined) rejectedByFilter.set(filter, [host]);
    else rejected.push(host);
  }

  const rejections: Rejection[] = [];
  for (const filter of FILTER_STACK) {
    const rejected = rejectedByFilter.get(filter);
    if (rejected === undefined) continue;
    rejections.push({
      filter: filter.name,
      hosts: rejected.length,
      reason: filter.describe(request, rejected),
    });
  }
  // Stable sort: equal counts keep stack order.
  rejections.sort((a, b) => b.hosts - a.hosts);

  const head = `no host can run ${describeRequestSize(request)}`;
  if (rejections.length === 0) return { ok: false, rejections, message: `${head}: there are no hosts` };
  const parts = rejections.map((rejection, index) => {
    const count =
      index === 0
        ? `${rejection.hosts} ${rejection.hosts === 1 ? 'host' : 'hosts'} rejected`
        : `${rejection.hosts}`;
    return `${count} by ${rejection.filter} (${rejection.reason})`;
  });
  return { ok: false, rejections, message: `${head}: ${parts.join(', ')}` };
}
