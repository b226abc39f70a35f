import { randomUUID } from 'node:crypto';
import { EntityManager } from 'typeorm';
import { computeV1 } from '@flotilla/contracts';
import {
  DomainError,
  ErrorCode,
  failedPrecondition,
  isUuid,
  limits,
  notFound,
  parsePage,
  validateIntRange,
  validateVmSize,
  validateName,
} from '@flotilla/domain';
import { Caller, requireRole, fetchPage } from '@flotilla/platform';
import { flavorToProto } from '../mappers';
import { events, ComputeStore } from '../persistence/compute-store';
import { FlavorRow, VmRow } from '../persistence/entities';

export class FlavorService {
  constructor(private readonly store: ComputeStore) {}

  async get(idOrName: string): Promise<computeV1.Flavor> {
    return flavorToProto(await this.find(idOrName));
  }

  async list(page: computeV1.ListFlavorsRequest['page']): Promise<computeV1.ListFlavorsResponse> {
    const spec = parsePage(page, ['name']);
    const qb = this.store.manager.createQueryBuilder(FlavorRow, 'f');
    for (const [i, { value }] of spec.filter.entries()) qb.andWhere(`f.name = :f${i}`, { [`f${i}`]: value });
    const { rows, nextPageToken } = await fetchPage(
      qb.orderBy('f.memory_mib').addOrderBy('f.name'),
      spec,
      page?.filter,
    );
    return { flavors: rows.map(flavorToProto), nextPageToken };
  }

  async create(caller: Caller, req: computeV1.CreateFlavorRequest): Promise<computeV1.Flavor> {
    requireRole(caller, 'pool-admin', 'creating a flavor');
    const flavor: Omit<FlavorRow, 'createdAt'> = {
      id: randomUUID(),
      name: validateName('name', req.name),
      ...validateVmSize(req),
      rootDiskGib: validateIntRange('root_disk_gib', req.rootDiskGib, 0, limits.diskGibMax, ' GiB'),
      version: 1,
    };
    const saved = await this.store.tx(async (m, emit) => {
      if (await m.existsBy(FlavorRow, { name: flavor.name }))
        throw new DomainError(ErrorCode.AlreadyExists, `flavor ${flavor.name} already exists`, {
          field: 'name',
        });
      await m.insert(FlavorRow, flavor);
      const row = await m.findOneByOrFail(FlavorRow, { id: flavor.id });
      emit(events.flavor('CREATED', row));
      return row;
    });
    return flavorToProto(saved);
  }

  async delete(caller: Caller, idOrName: string): Promise<void> {
    requireRole(caller, 'pool-admin', 'deleting a flavor');
    await this.store.tx(async (m, emit) => {
      // Read in the transaction: on PGlite a read on another connection waits for it (a deadlock).
      const flavor = await this.find(idOrName, m);
      const users = await m.countBy(VmRow, { flavorId: flavor.id });
      if (users)
        throw failedPrecondition(
          `flavor ${flavor.name} is used by ${users} VM(s): delete or resize them first`,
        );
      await m.delete(FlavorRow, { id: flavor.id });
      emit(events.flavor('DELETED', flavor));
    });
  }

  private async find(idOrName: string, m: EntityManager = this.store.manager): Promise<FlavorRow> {
    const flavor = isUuid(idOrName)
      ? await m.findOneBy(FlavorRow, { id: idOrName.toLowerCase() })
      : idOrName
        ? await m.findOneBy(FlavorRow, { name: idOrName })
        : null;
    if (!flavor) throw notFound('flavor', idOrName);
    return flavor;
  }
}
