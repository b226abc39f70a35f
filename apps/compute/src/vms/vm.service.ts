import { randomUUID } from 'node:crypto';
import { EntityManager } from 'typeorm';
import { computeV1 } from '@flotilla/contracts';
import {
  DomainError,
  ErrorCode,
  invalidArgument,
  isUuid,
  notFound,
  parsePage,
  truncate,
  validateVmSize,
  validateLabels,
  validateName,
  validateNics,
  validateRequestId,
  type VmOperation,
} from '@flotilla/domain';
import {
  Caller,
  fetchPage,
  pooledRandomBytes,
  requireRole,
  OperationService,
  operationRow,
} from '@flotilla/platform';
import { ComputeStore, writeVm } from '../persistence/compute-store';
import {
  BootRow,
  FlavorRow,
  notMigrating,
  OperationParams,
  OperationRow,
  VmRow,
} from '../persistence/entities';
import { OperationRunner } from '../operations/operation-runner';
import { CreateBatcher } from './create-batcher';
import { ImageCatalogue } from './image-catalogue';
import { VmSnapshots } from './vm-snapshots';
import { assertVmOperationAllowed } from './vm-guard';

const gib = 1024 ** 3;
/** The largest VDI storage makes (64 TiB). */
const rootDiskMaxBytes = 64 * 1024 * gib;

/** A VM of a DISK image gets a copy-on-write root disk of it, made by the create operation. */
interface RootDiskPlan {
  image: string;
  sizeBytes: number;
  /** 0: the image's size, decided by storage. */
  requestedBytes: number;
  sr: string;
}

/** Operation kinds by lifecycle operation; params say how (clean or hard, timeouts). */
export const vmOperationKind: Record<VmOperation, string> = {
  START: 'vm.start',
  CLEAN_SHUTDOWN: 'vm.shutdown',
  HARD_SHUTDOWN: 'vm.shutdown',
  CLEAN_REBOOT: 'vm.reboot',
  HARD_REBOOT: 'vm.reboot',
  PAUSE: 'vm.pause',
  UNPAUSE: 'vm.unpause',
  SUSPEND: 'vm.suspend',
  RESUME: 'vm.resume',
  DESTROY: 'vm.destroy',
  SNAPSHOT: 'vm.snapshot',
  REVERT: 'vm.revert',
  CLONE: 'vm.clone',
};

const listFields = [
  'name',
  'power_state',
  'host_id',
  'flavor_id',
  'is_snapshot',
  'snapshot_of',
  'label.*',
] as const;

/** The VM records: create, read, and the requests that start lifecycle operations. */
export class VmService {
  /** VM snapshots, clones of them and reverts (SnapshotVm, CloneVm, RevertVm). */
  readonly snapshots: VmSnapshots;

  constructor(
    private readonly store: ComputeStore,
    private readonly operations: OperationService,
    private readonly runner: OperationRunner,
    private readonly images: ImageCatalogue,
    private readonly creates: CreateBatcher = new CreateBatcher(store),
  ) {
    this.snapshots = new VmSnapshots(store, operations, runner, this);
  }

  async create(
    caller: Caller,
    req: computeV1.CreateVmRequest,
  ): Promise<{ vm: VmRow; operation: OperationRow }> {
    requireRole(caller, 'vm-admin', 'creating a VM');
    const tenantId = this.tenantOf(caller);
    const name = validateName('name', req.name);
    const requestId = validateRequestId(req.requestId);
    const labels = validateLabels('labels', req.labels);
    const requiredHostLabels = validateLabels('required_host_labels', req.requiredHostLabels);
    if (req.antiAffinityGroup) validateName('anti_affinity_group', req.antiAffinityGroup);
    const boot = validateBoot(req.boot);
    const nics = validateNics(req.nics ?? [], pooledRandomBytes);
    if (Object.keys(requiredHostLabels).length) requireRole(caller, 'vm-power-admin', 'placement hints');

    const sizing = await this.sizing(this.store.manager, req);
    const rootDisk = await this.rootDisk(tenantId, boot, req);
    // The create runs as an operation when it starts the VM or makes its root disk.
    const runs = req.start || rootDisk !== undefined;
    const now = new Date();
    const operationId = randomUUID();
    const vm: VmRow = {
      id: randomUUID(),
      name,
      tenantId,
      labels,
      ...sizing,
      ...(rootDisk ? { rootDiskGib: Math.ceil(rootDisk.sizeBytes / gib) } : {}),
      boot: rootDisk ? { ...boot, fromDisk: true } : boot,
      powerState: 'HALTED',
      powerStateReason: '',
      hostId: null,
      // A create that only records the VM is done in its commit; one that starts it or makes its disk runs on.
      currentOperationId: runs ? operationId : null,
      antiAffinityGroup: req.antiAffinityGroup ?? '',
      requiredHostLabels,
      nics,
      isSnapshot: false,
      snapshotOf: null,
      snapshotTime: null,
      requestId: requestId ?? null,
      ...notMigrating,
      version: 1,
      createdAt: now,
      updatedAt: now,
    };
    const operation = operationRow({
      id: operationId,
      kind: 'vm.create',
      target: { kind: 'vm', id: vm.id, name },
      tenantId,
      requestId,
      params: {
        start: req.start,
        ...(rootDisk
          ? {
              rootDisk: true,
              image: rootDisk.image,
              rootDiskSizeBytes: rootDisk.requestedBytes,
              rootDiskSr: rootDisk.sr,
            }
          : {}),
      },
      succeeded: !runs,
      now,
    });
    // Committed with the creates that arrive meanwhile (group commit); the unique indexes decide races.
    const created = await this.creates.submit({ vm, operation });
    if (created.isNew && created.operation.state === 'PENDING') this.runner.enqueue(created.operation);
    return created;
  }

  /** `lock`: inside a transaction, hold the row until commit (a concurrent request waits and re-reads). */
  async get(
    caller: Caller,
    idOrName: string,
    m: EntityManager = this.store.manager,
    lock = false,
  ): Promise<VmRow> {
    if (!idOrName) throw invalidArgument('id', 'is required: a VM id');
    if (!isUuid(idOrName))
      throw invalidArgument(
        'id',
        `${JSON.stringify(truncate(idOrName, 40))} is not a VM id (a UUID); find it with ListVms filter name=<name>`,
      );
    const vm = await m.findOne(VmRow, {
      where: { id: idOrName.toLowerCase() },
      ...(lock ? { lock: { mode: 'pessimistic_write' as const } } : {}),
    });
    if (!vm || (!caller.crossTenant && vm.tenantId !== caller.tenantId)) throw notFound('vm', idOrName);
    return vm;
  }

  async list(
    caller: Caller,
    page: computeV1.ListVmsRequest['page'],
  ): Promise<{ vms: VmRow[]; nextPageToken: string }> {
    const spec = parsePage(page, listFields);
    const qb = this.store.manager.createQueryBuilder(VmRow, 'v');
    if (!caller.crossTenant) qb.andWhere('v.tenant_id = :tenant', { tenant: caller.tenantId });
    // VM snapshots are listed only when asked for (XAPI's vm-list hides them too).
    let snapshots: boolean | undefined;
    for (const [i, { field, value }] of spec.filter.entries()) {
      const p = `f${i}`;
      if (field === 'is_snapshot') {
        if (value !== 'true' && value !== 'false')
          throw invalidArgument('page.filter', 'is_snapshot takes true or false');
        snapshots = value === 'true';
      } else if (field === 'snapshot_of') {
        snapshots ??= true;
        qb.andWhere(`v.snapshot_of::text = :${p}`, { [p]: value.toLowerCase() });
      } else if (field === 'name') qb.andWhere(`v.name = :${p}`, { [p]: value });
      else if (field === 'power_state')
        qb.andWhere(`v.power_state = :${p}`, { [p]: value.toUpperCase().replace(/^POWER_STATE_/, '') });
      else if (field === 'host_id') qb.andWhere(`v.host_id::text = :${p}`, { [p]: value });
      else if (field === 'flavor_id') qb.andWhere(`v.flavor_id::text = :${p}`, { [p]: value });
      else
        qb.andWhere(`v.labels ->> :k${i} = :${p}`, { [`k${i}`]: field.slice('label.'.length), [p]: value });
    }
    qb.andWhere('v.is_snapshot = :snapshots', { snapshots: snapshots ?? false });
    const { rows, nextPageToken } = await fetchPage(
      qb.orderBy('v.created_at').addOrderBy('v.id'),
      spec,
      page?.filter,
    );
    return { vms: rows, nextPageToken };
  }

  /**
   * Records a lifecycle operation if the VM's state allows it (FAILED_PRECONDITION otherwise) and hands it
   * to the runner. A repeated request_id returns the first operation.
   */
  async request(
    caller: Caller,
    id: string,
    op: VmOperation,
    opts: { requestId?: string; params?: OperationParams } = {},
  ): Promise<OperationRow> {
    requireRole(
      caller,
      op === 'DESTROY' ? 'vm-admin' : 'vm-operator',
      `${op.toLowerCase().replace('_', ' ')} of a VM`,
    );
    const requestId = validateRequestId(opts.requestId);
    const result = await this.store.tx(async (m, emit) => {
      // Locked: of two requests at once, the second sees the first's operation (FAILED_PRECONDITION, "in
      // progress") instead of losing the version race (ABORTED) for a change it did not ask to guard.
      const vm = await this.get(caller, id, m, true);
      const spec = {
        kind: vmOperationKind[op],
        target: { kind: 'vm', id: vm.id, name: vm.name },
        tenantId: vm.tenantId,
        requestId,
        params: { operation: op, ...opts.params },
      };
      const earlier = await this.operations.findByRequest(m, spec);
      if (earlier) return { operation: earlier, isNew: false };
      assertVmOperationAllowed(vm, op);
      const operation = await this.operations.create(m, emit, spec);
      await writeVm(m, emit, vm, { currentOperationId: operation.id });
      return { operation, isNew: true };
    });
    if (result.isNew) this.runner.enqueue(result.operation);
    return result.operation;
  }

  /**
   * Whether the VM gets a root disk: with a DISK image in boot.image. The image is looked up now so that
   * root-disk fields are refused at once with a KERNEL image; a VM that asks for no root disk does not
   * depend on the lookup (an image that cannot be found fails its start, as before disks existed).
   */
  private async rootDisk(
    tenantId: string,
    boot: BootRow,
    req: computeV1.CreateVmRequest,
  ): Promise<RootDiskPlan | undefined> {
    const sizeBytes = req.rootDiskSizeBytes;
    if (!Number.isSafeInteger(sizeBytes) || sizeBytes < 0 || sizeBytes > rootDiskMaxBytes)
      throw invalidArgument(
        'root_disk_size_bytes',
        `${sizeBytes} is out of range: give 0 (the image's size) up to ${rootDiskMaxBytes} (64 TiB)`,
      );
    if (req.rootDiskSr.length > 255)
      throw invalidArgument('root_disk_sr', `is ${req.rootDiskSr.length} characters long; at most 255`);
    const asked = sizeBytes > 0 ? 'root_disk_size_bytes' : req.rootDiskSr ? 'root_disk_sr' : undefined;
    if (!boot.image) {
      if (asked) throw invalidArgument(asked, 'applies to a VM of a DISK image: name one in boot.image');
      return undefined;
    }
    let image;
    try {
      image = await this.images.resolve(tenantId, boot.image);
    } catch (e) {
      if (asked) throw e;
      return undefined;
    }
    if (image.kind === 'KERNEL') {
      if (asked)
        throw invalidArgument(
          asked,
          `image ${boot.image} is a KERNEL image, which boots without a root disk: leave ${asked} empty, or choose a DISK image`,
        );
      return undefined;
    }
    const least = Math.max(image.virtualSizeBytes, image.minDiskBytes);
    if (sizeBytes > 0 && sizeBytes < least)
      throw invalidArgument(
        'root_disk_size_bytes',
        `${sizeBytes} bytes is smaller than image ${image.name} needs (${least} bytes): give at least that, or 0 for the image's size`,
      );
    return {
      image: image.name,
      sizeBytes: sizeBytes || least,
      requestedBytes: sizeBytes,
      sr: req.rootDiskSr,
    };
  }

  private tenantOf(caller: Caller): string {
    if (!caller.tenantId)
      throw invalidArgument('tenant', 'the call carries no tenant: call through the gateway');
    return caller.tenantId;
  }

  private async sizing(
    m: EntityManager,
    req: computeV1.CreateVmRequest,
  ): Promise<Pick<VmRow, 'flavorId' | 'vcpus' | 'memoryMib' | 'rootDiskGib'>> {
    if (req.flavorId) {
      if (req.vcpus || req.memoryMib)
        throw invalidArgument('flavor_id', 'give either a flavor or vcpus and memory_mib, not both');
      const flavor = isUuid(req.flavorId)
        ? await m.findOneBy(FlavorRow, { id: req.flavorId.toLowerCase() })
        : await m.findOneBy(FlavorRow, { name: req.flavorId });
      if (!flavor)
        throw new DomainError(
          ErrorCode.NotFound,
          `flavor ${JSON.stringify(truncate(req.flavorId, 60))} not found: see ListFlavors`,
          {
            field: 'flavor_id',
          },
        );
      return {
        flavorId: flavor.id,
        vcpus: flavor.vcpus,
        memoryMib: flavor.memoryMib,
        rootDiskGib: flavor.rootDiskGib,
      };
    }
    if (!req.vcpus && !req.memoryMib)
      throw invalidArgument('flavor_id', 'is required (or give vcpus and memory_mib)');
    return {
      flavorId: null,
      ...validateVmSize(req),
      rootDiskGib: 0,
    };
  }
}

function validateBoot(boot: computeV1.BootSpec | undefined): BootRow {
  if (!boot) return {};
  // Kernel and initrd paths are host paths: they come from the operator's image catalogue, never tenants.
  if (boot.kernel || boot.initrd)
    throw invalidArgument('boot.kernel', 'host paths cannot be given by API callers: use boot.image');
  if (boot.cmdline.length > 1024)
    throw invalidArgument('boot.cmdline', `is ${boot.cmdline.length} characters; at most 1024`);
  if (boot.image) validateName('boot.image', boot.image);
  return { ...(boot.image ? { image: boot.image } : {}), ...(boot.cmdline ? { cmdline: boot.cmdline } : {}) };
}
