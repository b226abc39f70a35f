import { quotedTable } from '@flotilla/platform';
import { EntityManager } from 'typeorm';
import { DomainError, ErrorCode } from '@flotilla/domain';
import { HostCandidate, placeOnce, PlacementPolicy, PlacementRequest } from '@flotilla/scheduler';
import { ComputeStore } from '../persistence/compute-store';
import { HostRow, VmRow } from '../persistence/entities';
import { hostState } from '../mappers';

/**
 * Builds the scheduler's snapshot of the pool from the database and asks it where a VM goes. The full-scan
 * placeOnce is used: a pool's hosts fit one query, and the database read dominates the decision.
 */
export class Placement {
  constructor(
    private readonly store: ComputeStore,
    private readonly policy: PlacementPolicy,
  ) {}

  async choose(m: EntityManager, request: PlacementRequest): Promise<string> {
    const hosts = await this.candidates(m);
    const result = placeOnce(hosts, request, this.policy);
    if (result.ok) return result.hostId;
    throw new DomainError(ErrorCode.ResourceExhausted, result.message, {
      metadata: Object.fromEntries(result.rejections.map((r) => [r.filter, String(r.hosts)])),
    });
  }

  /** Re-checks one host inside the reserving transaction, with the host row locked. */
  async stillFits(m: EntityManager, hostId: string, request: PlacementRequest): Promise<boolean> {
    const hosts = await this.candidates(m, hostId);
    return hosts.length === 1 && placeOnce(hosts, request, this.policy).ok;
  }

  private async candidates(m: EntityManager, onlyHostId?: string): Promise<HostCandidate[]> {
    const qb = m.createQueryBuilder(HostRow, 'h');
    if (onlyHostId) qb.where('h.id = :id', { id: onlyHostId }).setLock('pessimistic_write');
    const hosts = await qb.getMany();
    const allocations = await this.store.allocations(m, onlyHostId ? [onlyHostId] : undefined);
    const groups: Array<{ host_id: string; grp: string; n: string }> = await m.query(
      `SELECT host_id, anti_affinity_group AS grp, count(*)::text AS n FROM ${quotedTable(m, VmRow)}
        WHERE host_id IS NOT NULL AND anti_affinity_group <> '' ${onlyHostId ? 'AND host_id = $1' : ''}
        GROUP BY 1, 2`,
      onlyHostId ? [onlyHostId] : [],
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
