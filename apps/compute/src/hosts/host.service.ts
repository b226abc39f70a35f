import { EntityManager } from 'typeorm';
import {
  DomainError,
  ErrorCode,
  failedPrecondition,
  invalidArgument,
  isUuid,
  notFound,
  parsePage,
} from '@flotilla/domain';
import { Caller, requireRole, updateVersionedRow, fetchPage } from '@flotilla/platform';
import { computeV1 } from '@flotilla/contracts';
import { hostToProto } from '../mappers';
import { events, ComputeStore, noAllocation } from '../persistence/compute-store';
import { HostRow } from '../persistence/entities';

const maxReasonLength = 512;

/** The pool's hosts as operators see them. */
export class HostService {
  constructor(private readonly store: ComputeStore) {}

  async get(caller: Caller, idOrName: string): Promise<computeV1.Host> {
    this.authorize(caller, 'reading hosts');
    const host = await this.find(this.store.manager, idOrName);
    return hostToProto(
      host,
      (await this.store.allocations(this.store.manager, [host.id])).get(host.id) ?? noAllocation,
    );
  }

  async list(caller: Caller, page: computeV1.ListHostsRequest['page']): Promise<computeV1.ListHostsResponse> {
    this.authorize(caller, 'listing hosts');
    const spec = parsePage(page, ['name', 'state', 'driver', 'label.*']);
    const qb = this.store.manager.createQueryBuilder(HostRow, 'h');
    for (const [i, { field, value }] of spec.filter.entries()) {
      const p = `f${i}`;
      if (field === 'name') qb.andWhere(`h.name = :${p}`, { [p]: value });
      else if (field === 'driver') qb.andWhere(`h.driver = :${p}`, { [p]: value });
      else if (field === 'state') {
        const state = value.toUpperCase().replace(/^HOST_STATE_/, '');
        if (state === 'DOWN') qb.andWhere('h.down = true');
        else qb.andWhere(`h.down = false AND h.admin_state = :${p}`, { [p]: state });
      } else
        qb.andWhere(`h.labels ->> :k${i} = :${p}`, { [`k${i}`]: field.slice('label.'.length), [p]: value });
    }
    const { rows, nextPageToken } = await fetchPage(qb.orderBy('h.name'), spec, page?.filter);
    const allocations = await this.store.allocations(
      this.store.manager,
      rows.map((h) => h.id),
    );
    return { hosts: rows.map((h) => hostToProto(h, allocations.get(h.id) ?? noAllocation)), nextPageToken };
  }

  /**
   * ENABLED lets the scheduler place VMs on the host again; DISABLED and MAINTENANCE keep it away (new
   * VMs, starts, migrations to it) while its VMs keep running. `reason` is shown as state_reason
   * (MAINTENANCE says "maintenance" without one); a DOWN host keeps saying why it is DOWN.
   */
  async setAdminState(
    caller: Caller,
    idOrName: string,
    adminState: 'ENABLED' | 'DISABLED' | 'MAINTENANCE',
    reason = '',
  ): Promise<computeV1.Host> {
    requireRole(caller, 'pool-operator', adminState === 'ENABLED' ? 'enabling a host' : 'disabling a host');
    if (reason.length > maxReasonLength)
      throw invalidArgument('reason', `is ${reason.length} characters; at most ${maxReasonLength}`);
    // The event carries the host as the API shows it: that is also the answer.
    return this.store.tx(async (m, emit) => {
      const host = await this.find(m, idOrName);
      if (adminState === 'ENABLED' && host.down)
        throw failedPrecondition(`host ${host.name} is DOWN: it is enabled again once its agent reports`);
      const stateReason = adminState === 'MAINTENANCE' ? reason || 'maintenance' : reason;
      const saved = await updateVersionedRow(
        m,
        HostRow,
        { kind: 'host', id: host.id, version: host.version },
        { adminState, ...(host.down ? {} : { stateReason }) },
      );
      const event = events.host('UPDATED', saved, (await this.store.allocations(m, [host.id])).get(host.id));
      emit(event);
      return event.payload as computeV1.Host;
    });
  }

  private async find(m: EntityManager, idOrName: string): Promise<HostRow> {
    const host = isUuid(idOrName)
      ? await m.findOneBy(HostRow, { id: idOrName.toLowerCase() })
      : idOrName
        ? await m.findOneBy(HostRow, { name: idOrName })
        : null;
    if (!host) throw notFound('host', idOrName);
    return host;
  }

  private authorize(caller: Caller, action: string): void {
    if (!caller.crossTenant)
      throw new DomainError(
        ErrorCode.PermissionDenied,
        `${action} needs role pool-operator or above; this token has ${caller.role}`,
      );
  }
}
