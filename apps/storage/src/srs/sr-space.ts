import { EntityManager } from 'typeorm';
import { DomainError, ErrorCode, notFound, SrSpace } from '@flotilla/domain';
import { SrRow, VdiRow } from '../persistence/entities';
import { HostDirectory, PoolHost } from './agents';

/**
 * Locks the SR row for the rest of the transaction: reservations of space in one SR are serialised, so two
 * creates cannot both take the last free bytes.
 */
export async function lockSr(m: EntityManager, id: string): Promise<SrRow> {
  const sr = await m
    .createQueryBuilder(SrRow, 's')
    .setLock('pessimistic_write')
    .where('s.id = :id', { id })
    .getOne();
  if (!sr) throw notFound('sr', id);
  return sr;
}

/**
 * Virtual allocation (guest-writable VDIs) per SR. A hidden writable CREATING node is a migration's target
 * file (hidden nodes are otherwise read-only): it holds its VDI's size there until the commit moves the VDI.
 */
export async function virtualAllocations(
  m: EntityManager,
  srIds: readonly string[],
): Promise<Map<string, number>> {
  const out = new Map(srIds.map((id) => [id, 0]));
  if (!srIds.length) return out;
  const rows: Array<{ sr_id: string; total: string }> = await m
    .createQueryBuilder(VdiRow, 'v')
    .select('v.sr_id', 'sr_id')
    .addSelect('COALESCE(SUM(v.virtual_size_bytes), 0)', 'total')
    .where('v.sr_id IN (:...ids)', { ids: srIds })
    .andWhere("NOT v.read_only AND (v.managed OR v.state = 'CREATING')")
    .groupBy('v.sr_id')
    .getRawMany();
  for (const r of rows) out.set(r.sr_id, Number(r.total));
  return out;
}

/** The SR's space as the accounting rules read it (call with the SR locked). */
export async function srSpace(m: EntityManager, sr: SrRow): Promise<SrSpace> {
  const raw: { reserved: string } | undefined = await m
    .createQueryBuilder(VdiRow, 'v')
    .select('COALESCE(SUM(v.reserved_physical_bytes), 0)', 'reserved')
    .where('v.sr_id = :id', { id: sr.id })
    .getRawOne();
  return {
    name: sr.name,
    capacityBytes: sr.capacityBytes,
    freeBytes: sr.freeBytes,
    overprovisionRatio: sr.overprovisionRatio,
    virtualAllocationBytes: (await virtualAllocations(m, [sr.id])).get(sr.id) ?? 0,
    reservedPhysicalBytes: Number(raw?.reserved ?? 0),
  };
}

/** Which hosts serve an SR: the FILE host, or the ENABLED hosts for a SHARED one. */
export class SrHosts {
  constructor(readonly directory: HostDirectory) {}

  /** The hosts that should see the SR. */
  async targets(sr: Pick<SrRow, 'type' | 'hostId'>): Promise<PoolHost[]> {
    const hosts = await this.directory.list();
    if (sr.type === 'FILE') return hosts.filter((h) => h.id === sr.hostId);
    return hosts.filter((h) => h.state === 'ENABLED');
  }

  /** A host that sees the SR now, for file work; FAILED_PRECONDITION or UNAVAILABLE naming why not. */
  async hostFor(sr: SrRow, preferHostId?: string | null): Promise<PoolHost> {
    const hosts = await this.directory.list();
    const seeing = sr.hosts.filter((a) => a.attached).map((a) => a.hostId);
    const candidates = hosts.filter((h) => seeing.includes(h.id) && h.state !== 'DOWN');
    const host =
      candidates.find((h) => h.id === preferHostId) ??
      candidates.find((h) => h.state === 'ENABLED') ??
      candidates[0];
    if (host) return host;
    if (sr.type === 'FILE') {
      const own = hosts.find((h) => h.id === sr.hostId);
      throw new DomainError(
        ErrorCode.Unavailable,
        own
          ? `SR ${sr.name} is on host ${own.name}, which is ${own.state}: bring the host back, then retry`
          : `SR ${sr.name}'s host ${sr.hostId} is gone from the pool: forget the SR`,
        { resource: `sr ${sr.id}` },
      );
    }
    throw new DomainError(
      ErrorCode.FailedPrecondition,
      `SR ${sr.name} is not seen by any usable host${sr.stateReason ? ` (${sr.stateReason})` : ''}: mount it and scan it again`,
      { resource: `sr ${sr.id}` },
    );
  }

  /** A host that sees both SRs (for a local copy), or undefined (the copy is streamed between hosts). */
  async hostForBoth(a: SrRow, b: SrRow): Promise<PoolHost | undefined> {
    const hosts = await this.directory.list();
    const sees = (sr: SrRow, h: PoolHost) => sr.hosts.some((x) => x.hostId === h.id && x.attached);
    const both = hosts.filter((h) => h.state !== 'DOWN' && sees(a, h) && sees(b, h));
    return both.find((h) => h.state === 'ENABLED') ?? both[0];
  }
}

/** Whether VMs on host `hostId` may use the SR's VDIs (FILE: its own host; SHARED: hosts that see it). */
export function srVisibleFromHost(
  sr: Pick<SrRow, 'type' | 'hostId' | 'hosts' | 'state'>,
  hostId: string,
): boolean {
  if (sr.state === 'CREATING' || sr.state === 'UNAVAILABLE') return false;
  if (sr.type === 'FILE') return sr.hostId === hostId;
  return sr.hosts.some((h) => h.hostId === hostId && h.attached);
}
