import type { Metadata } from '@grpc/grpc-js';
import type { DataSource } from 'typeorm';
import { commonV1, computeV1, storageV1 } from '@flotilla/contracts';
import type { Logger, Role } from '@flotilla/platform';
import type { Principal } from '../auth/token-auth';
import { type Catalogue, type CatalogueCaller, CatalogueIndex } from '../compat/catalogue';
import { listAllVms } from '../compat/list-all';
import type { PoolApi } from '../compat/pool-api';
import type { ReservationItems, InstanceView } from './instance-view';
import type { InstanceRows } from './instance-rows';
import type { PageWalks } from './page-walks';
import type { Params } from './params';
import type { Xml } from './xml';

/** What the EC2 front knows of its installation (from its deps). */
export interface Ec2Site {
  pool: PoolApi;
  dataSource: DataSource;
  region: string;
  zone: string;
  endpointUrl: string;
  logger: Logger;
  /** DescribeInstances listings kept for the pages after the first (one per paginated walk). */
  instanceWalks: PageWalks<InstanceView>;
  /** DescribeInstances' reservation items, kept as written while their instances do not change. */
  reservationItems: ReservationItems;
  /** Tenants' instance rows, kept while their version stays. */
  instanceRows: InstanceRows;
}

/** One authenticated request, as an action handler sees it. */
export interface Ec2Context {
  site: Ec2Site;
  principal: Principal;
  requestId: string;
  params: Params;
  /** Call options acting as the principal. */
  call: { metadata: Metadata };
  /** Lookups cached for the request's duration. */
  lookups: PoolLookups;
  /**
   * Settles once the signature's one run is claimed (mutating actions); rejects when it was used before. An
   * action with readsWhileClaiming awaits it before its first change; for the others it is settled already.
   */
  claimed: Promise<void>;
}

export interface Ec2Action {
  /** The least role that may run it (DryRun answers UnauthorizedOperation below it). */
  role: Role;
  /** Mutating actions run once per signature (the replay guard claims it first). */
  mutating: boolean;
  /**
   * The action reads (ids, states, catalogue) while the signature is being claimed and awaits ctx.claimed
   * before it changes anything: one database round trip off its latency. A replayed signature still answers
   * AuthFailure, whatever the action would have answered.
   */
  readsWhileClaiming?: boolean;
  /** The response body after <requestId>, in order; undefined members are left out. */
  handle(ctx: Ec2Context): Promise<Array<Xml | undefined>>;
}

/**
 * The pool's lists as one request needs them: every VM, image and flavor the principal sees, each read at
 * most once per request, and the kinds of the operations in flight. Lookups of single images and flavors
 * go to the lists the catalogue keeps (`keptImages`, `keptFlavors`), and read again only on a miss.
 */
export class PoolLookups {
  private vms?: Promise<computeV1.Vm[]>;
  private images?: Promise<readonly storageV1.Image[]>;
  private flavors?: Promise<readonly computeV1.Flavor[]>;

  constructor(
    private readonly pool: PoolApi,
    private readonly catalogue: Catalogue,
    private readonly caller: CatalogueCaller,
  ) {}

  /** Every VM (not snapshots) of the principal's tenant: cross-tenant roles still see one account here. */
  allVms(): Promise<computeV1.Vm[]> {
    const tenantId = this.caller.principal.tenantId;
    this.vms ??= listAllVms(this.pool, this.caller.call).then((vms) =>
      vms.filter((vm) => vm.tenantId === tenantId && !vm.isSnapshot),
    );
    return this.vms;
  }

  /** Every image the principal sees, as the pool has them now. */
  allImages(): Promise<readonly storageV1.Image[]> {
    this.images ??= this.catalogue.images(this.caller, { fresh: true });
    return this.images;
  }

  /** Every flavor, as the pool has them now. */
  allFlavors(): Promise<readonly computeV1.Flavor[]> {
    this.flavors ??= this.catalogue.flavors(this.caller, { fresh: true });
    return this.flavors;
  }

  /** The images as the catalogue keeps them: one made a moment ago may be missing (then read allImages). */
  keptImages(): Promise<readonly storageV1.Image[]> {
    return this.images ?? this.catalogue.images(this.caller);
  }

  /** The flavors as the catalogue keeps them: one made a moment ago may be missing (then read allFlavors). */
  keptFlavors(): Promise<readonly computeV1.Flavor[]> {
    return this.flavors ?? this.catalogue.flavors(this.caller);
  }

  /** keptFlavors and keptImages, indexed. */
  async keptCatalogue(): Promise<CatalogueIndex> {
    const [flavors, images] = await Promise.all([this.keptFlavors(), this.keptImages()]);
    return new CatalogueIndex(flavors, images);
  }

  /** The kind of the VM's operation in flight ("vm.start", …), undefined when none is (or it just ended). */
  async inFlightKind(vm: Pick<computeV1.Vm, 'currentOperationId'>): Promise<string | undefined> {
    if (!vm.currentOperationId) return undefined;
    try {
      const { operation } = await this.pool.computeOperations.call.getOperation(
        { id: vm.currentOperationId },
        this.caller.call,
      );
      const done = [
        commonV1.OperationState.OPERATION_STATE_SUCCEEDED,
        commonV1.OperationState.OPERATION_STATE_FAILED,
        commonV1.OperationState.OPERATION_STATE_CANCELLED,
      ];
      return operation && !done.includes(operation.state) ? operation.kind : undefined;
    } catch {
      // The operation was purged or is not readable: the power state alone decides.
      return undefined;
    }
  }
}
