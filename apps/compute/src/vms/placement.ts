import { EntityManager } from 'typeorm';
import { DomainError, ErrorCode } from '@flotilla/domain';
import {
  HostCandidate,
  placeOnce,
  PlacementPolicy,
  PlacementRequest,
  PlacementResult,
} from '@flotilla/scheduler';
import { ComputeStore, vmsOnHosts } from '../persistence/compute-store';
import { HostRow } from '../persistence/entities';
import { hostState } from '../mappers';

const placementColumns = [
  'id',
  'adminState',
  'down',
  'cpus',
  'memoryMib',
  'cpuOvercommitRatio',
  'memoryOvercommitRatio',
  'labels',
] as const satisfies ReadonlyArray<keyof HostRow>;

/**
 * Builds the scheduler's snapshot of the pool from the database and asks it where a VM goes. The full-scan
 * placeOnce is used: a pool's hosts fit one query, and the database read dominates the decision.
 */
export class Placement {
  constructor(
    private readonly store: ComputeStore,
    readonly policy: PlacementPolicy,
  ) {}

  async choose(m: EntityManager, request: PlacementRequest): Promise<string> {
    const result = await this.place(m, request);
    if (result.ok) return result.hostId;
    throw new DomainError(ErrorCode.ResourceExhausted, result.message, {
      metadata: Object.fromEntries(result.rejections.map((r) => [r.filter, String(r.hosts)])),
    });
  }

  /** The scheduler's answer now; `exceptVmId`'s own holdings are left out (a migration moving it). */
  async place(m: EntityManager, request: PlacementRequest, exceptVmId?: string): Promise<PlacementResult> {
    return placeOnce(await this.candidates(m, { exceptVmId }), request, this.policy);
  }

  /** Re-checks one host inside the reserving transaction, with the host row locked. */
  async stillFits(m: EntityManager, hostId: string, request: PlacementRequest): Promise<boolean> {
    const host = await this.candidate(m, hostId, { lock: true });
    return host !== undefined && placeOnce([host], request, this.policy).ok;
  }

  /** One host as the scheduler sees it; `lock` holds its row until commit (reservations serialise on it). */
  async candidate(
    m: EntityManager,
    hostId: string,
    options: { lock?: boolean; exceptVmId?: string } = {},
  ): Promise<HostCandidate | undefined> {
    const [host] = await this.candidates(m, { onlyHostId: hostId, ...options });
    return host;
  }

  private async candidates(
    m: EntityManager,
    options: { onlyHostId?: string; lock?: boolean; exceptVmId?: string },
  ): Promise<HostCandidate[]> {
    const { onlyHostId, exceptVmId } = options;
    // Only what the scheduler reads: hydrating whole rows (dates, CPU flags) of every host on every
    // placement made starting 500 VMs in a pool of 120 sim hosts take 37 s instead of 29 s.
    const qb = m.createQueryBuilder(HostRow, 'h').select(placementColumns.map((c) => `h.${c}`));
    if (onlyHostId) qb.where('h.id = :id', { id: onlyHostId });
    if (options.lock) qb.setLock('pessimistic_write');
    const hosts = await qb.getMany();
    const allocations = await this.store.allocations(m, onlyHostId ? [onlyHostId] : undefined, exceptVmId);
    const groups: Array<{ host_id: string; grp: string; n: string }> = await m.query(
      `SELECT host_id, anti_affinity_group AS grp, count(*)::text AS n FROM (${vmsOnHosts(m)}) AS placed
        WHERE anti_affinity_group <> '' AND ($1::uuid IS NULL OR host_id = $1::uuid)
          AND id IS DISTINCT FROM $2::uuid
        GROUP BY 1, 2`,
      [onlyHostId ?? null, exceptVmId ?? null],
    );
    const groupsByHost = new Map<string, Record<string, number>>();
    for (const g of groups)
      groupsByHost.set(g.host_id, { ...groupsByHost.get(g.host_id), [g.grp]: Number(g.n) });
    return hosts.map((h) => {
      const a = allocations.get(h.id);
      return {
        id: h.id,
        state: hostState(h),
        cpus: h.cpus,
        memoryMib: h.memoryMib,
        vcpusAllocated: a?.vcpus ?? 0,
        memoryMibAllocated: a?.memoryMib ?? 0,
        cpuOvercommitRatio: h.cpuOvercommitRatio,
        memoryOvercommitRatio: h.memoryOvercommitRatio,
        labels: h.labels,
        antiAffinityGroups: groupsByHost.get(h.id) ?? {},
      };
    });
  }
}
