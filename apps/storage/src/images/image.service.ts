import { randomUUID } from 'node:crypto';
import { EntityManager } from 'typeorm';
import { storageV1 } from '@flotilla/contracts';
import {
  checkPhysicalSpace,
  conflict,
  DomainError,
  ErrorCode,
  failedPrecondition,
  fullCopyBytes,
  invalidArgument,
  isUuid,
  notFound,
  parsePage,
  truncate,
  validateCataloguePath,
  validateCmdline,
  validateImageName,
  validateIntRange,
  validateLabels,
  validateRequestId,
  validateSha256,
} from '@flotilla/domain';
import {
  Caller,
  fetchPage,
  NewEvent,
  OperationRow,
  OperationService,
  quotedTable,
  requireRole,
  TransactionalStore,
} from '@flotilla/platform';
import { imageToProto } from '../mappers';
import { ImageRow, ImageVisibility, VdiRow } from '../persistence/entities';
import { StorageRunner } from '../srs/operation-runner';
import { srSpace } from '../srs/sr-space';
import { vdiEvent } from '../vdis/vdi.mapper';
import { newVdiRow, rollbackParams, VdiService } from '../vdis/vdi.service';

/** What DISK images need of the VDIs: the source to copy, the SR to hold the base, and the runner. */
export interface DiskImageSupport {
  vdis: VdiService;
  runner: StorageRunner;
}

const listFields = ['name', 'kind', 'visibility', 'state', 'os_type', 'architecture', 'label.*'] as const;
const textMax = { description: 1024, osType: 63, architecture: 63 } as const;

export const imageEvent = (type: NewEvent['type'], image: ImageRow): NewEvent => ({
  kind: 'image',
  type,
  resourceId: image.id,
  tenantId: image.tenantId,
  // The operator's view: the Watch stream empties host paths and the base VDI for tenants (events/).
  payload: imageToProto(image, 'operator'),
});

/**
 * The image catalogue: which images VMs may boot, who sees them, and (for KERNEL images) where the files
 * are under each host's catalogue directory. The catalogue records intent; agents check the files.
 */
export class ImageService {
  constructor(
    private readonly store: TransactionalStore,
    private readonly operations: OperationService,
    private readonly disks?: DiskImageSupport,
  ) {}

  /** By id or name; another tenant's PRIVATE image is NOT_FOUND, as if it did not exist. */
  async get(caller: Caller, idOrName: string, m: EntityManager = this.store.manager): Promise<ImageRow> {
    if (!idOrName) throw invalidArgument('id', 'is required: an image id or name');
    const image = isUuid(idOrName)
      ? await m.findOneBy(ImageRow, { id: idOrName.toLowerCase() })
      : await m.findOneBy(ImageRow, { name: idOrName });
    if (!image || !visibleTo(caller, image)) throw notFound('image', idOrName);
    return image;
  }

  async list(
    caller: Caller,
    page: storageV1.ListImagesRequest['page'],
  ): Promise<{ images: ImageRow[]; nextPageToken: string }> {
    const spec = parsePage(page, listFields);
    const qb = this.store.manager.createQueryBuilder(ImageRow, 'i');
    if (!caller.crossTenant)
      qb.andWhere("(i.visibility = 'PUBLIC' OR i.tenant_id = :tenant)", { tenant: caller.tenantId });
    for (const [i, { field, value }] of spec.filter.entries()) {
      const p = `f${i}`;
      const enumValue = (prefix: string) => value.toUpperCase().replace(new RegExp(`^${prefix}`), '');
      if (field === 'name') qb.andWhere(`i.name = :${p}`, { [p]: value });
      else if (field === 'kind') qb.andWhere(`i.kind = :${p}`, { [p]: enumValue('IMAGE_KIND_') });
      else if (field === 'visibility')
        qb.andWhere(`i.visibility = :${p}`, { [p]: enumValue('IMAGE_VISIBILITY_') });
      else if (field === 'state') qb.andWhere(`i.state = :${p}`, { [p]: enumValue('IMAGE_STATE_') });
      else if (field === 'os_type') qb.andWhere(`i.os_type = :${p}`, { [p]: value });
      else if (field === 'architecture') qb.andWhere(`i.architecture = :${p}`, { [p]: value });
      else
        qb.andWhere(`i.labels ->> :k${i} = :${p}`, { [`k${i}`]: field.slice('label.'.length), [p]: value });
    }
    const { rows, nextPageToken } = await fetchPage(
      qb.orderBy('i.name').addOrderBy('i.id'),
      spec,
      page?.filter,
    );
    return { images: rows, nextPageToken };
  }

  /**
   * Registers a KERNEL image in one transaction: the image AVAILABLE and its operation SUCCEEDED. Nothing
   * is copied or checked here (the files live on the hosts, which check them when they boot from them),
   * so there is no work left for a runner. DISK sources wait for the storage repositories.
   */
  async register(
    caller: Caller,
    req: storageV1.RegisterImageRequest,
  ): Promise<{ image: ImageRow; operation: OperationRow }> {
    if (req.url !== undefined)
      throw new DomainError(
        ErrorCode.Unimplemented,
        'url: DISK images from a URL are not available in this pool yet; import the disk with ImportVdi, then register the image from that VDI (vdi_id)',
        { field: 'url' },
      );
    if (req.vdiId !== undefined) return this.registerDisk(caller, req, req.vdiId);
    if (!req.kernel)
      throw invalidArgument('source', 'is required: give kernel (KERNEL image), vdi_id or url (DISK image)');
    const visibility = visibilityOf(req.visibility);
    // KERNEL images name host files: only the pool's administrator installs them, whatever the visibility.
    requireRole(caller, 'pool-admin', 'registering a KERNEL image');
    if (visibility === 'PRIVATE' && !caller.tenantId)
      throw invalidArgument('visibility', 'a PRIVATE image belongs to a tenant: call through the gateway');
    const name = validateImageName('name', req.name);
    const requestId = validateRequestId(req.requestId);
    const now = new Date();
    const image: ImageRow = {
      id: randomUUID(),
      name,
      tenantId: visibility === 'PUBLIC' ? '' : caller.tenantId,
      labels: validateLabels('labels', req.labels),
      description: boundedText('description', req.description, textMax.description),
      kind: 'KERNEL',
      visibility,
      state: 'AVAILABLE',
      stateReason: '',
      osType: boundedText('os_type', req.osType, textMax.osType),
      architecture: boundedText('architecture', req.architecture, textMax.architecture),
      minDiskBytes: validateIntRange('min_disk_bytes', req.minDiskBytes, 0, Number.MAX_SAFE_INTEGER),
      minMemoryMib: validateIntRange('min_memory_mib', req.minMemoryMib, 0, 4 * 1024 * 1024, ' MiB'),
      sha256: validateSha256('sha256', req.sha256),
      vdiId: null,
      virtualSizeBytes: 0,
      sizeBytes: 0,
      kernelPath: validateCataloguePath('kernel.kernel_path', req.kernel.kernelPath),
      initrdPath: req.kernel.initrdPath
        ? validateCataloguePath('kernel.initrd_path', req.kernel.initrdPath)
        : '',
      initrdSha256: validateSha256('kernel.initrd_sha256', req.kernel.initrdSha256),
      cmdline: validateCmdline('kernel.cmdline', req.kernel.cmdline),
      requestTenantId: caller.tenantId,
      requestId: requestId ?? null,
      version: 1,
      createdAt: now,
      updatedAt: now,
    };
    if (image.initrdSha256 && !image.initrdPath)
      throw invalidArgument('kernel.initrd_sha256', 'is given without kernel.initrd_path');
    if (req.srId) throw invalidArgument('sr_id', 'applies to DISK images only; leave it empty for KERNEL');

    return this.store.tx(async (m, emit) => {
      // The unique indexes decide races: a concurrent register with the same name or request_id makes this
      // insert wait for it, then insert nothing.
      if (!(await insertImageIfAbsent(m, image))) {
        const earlier = requestId
          ? await m.findOneBy(ImageRow, { requestTenantId: caller.tenantId, requestId })
          : null;
        if (!earlier)
          throw new DomainError(
            ErrorCode.AlreadyExists,
            `an image named ${name} already exists in this pool: choose another name, or deregister it first`,
            { field: 'name', resource: `image ${name}` },
          );
        const operation = await m.findOneByOrFail(OperationRow, {
          targetId: earlier.id,
          kind: 'image.register',
        });
        return { image: earlier, operation };
      }
      emit(imageEvent('CREATED', image));
      const operation = await this.operations.create(m, emit, {
        kind: 'image.register',
        target: { kind: 'image', id: image.id, name },
        tenantId: caller.tenantId,
        requestId,
        succeeded: true,
        now,
      });
      return { image, operation };
    });
  }

  /**
   * Registers a DISK image from a READY VDI: the image (REGISTERING) and its base VDI (CREATING, read-only,
   * space reserved) are recorded with an image.register operation; the VDI operations copy the source,
   * chain flattened, into the base and make the image AVAILABLE.
   */
  private async registerDisk(
    caller: Caller,
    req: storageV1.RegisterImageRequest,
    vdiId: string,
  ): Promise<{ image: ImageRow; operation: OperationRow }> {
    if (!this.disks)
      throw new DomainError(ErrorCode.Unimplemented, 'vdi_id: this storage service serves no VDIs');
    const { vdis, runner } = this.disks;
    const visibility = visibilityOf(req.visibility);
    if (visibility === 'PUBLIC') requireRole(caller, 'pool-admin', 'registering a PUBLIC image');
    else requireRole(caller, 'vm-admin', 'registering a PRIVATE DISK image');
    if (visibility === 'PRIVATE' && !caller.tenantId)
      throw invalidArgument('visibility', 'a PRIVATE image belongs to a tenant: call through the gateway');
    const name = validateImageName('name', req.name);
    const requestId = validateRequestId(req.requestId);
    const out = await this.store.tx(async (m, emit) => {
      if (requestId) {
        const earlier = await m.findOneBy(ImageRow, { requestTenantId: caller.tenantId, requestId });
        if (earlier)
          return {
            image: earlier,
            operation: await m.findOneByOrFail(OperationRow, {
              targetId: earlier.id,
              kind: 'image.register',
            }),
            fresh: false,
          };
      }
      const source = await vdis.get(caller, vdiId, m);
      await vdis.assertAllowed(m, source, 'COPY');
      const sr = await vdis.usableSr(m, caller, req.srId || source.srId, 'sr_id');
      const bytes = fullCopyBytes(source.virtualSizeBytes, await vdis.chainPhysicalBytes(m, source));
      checkPhysicalSpace(await srSpace(m, sr), bytes, `the base of image ${name}`);
      const now = new Date();
      const image: ImageRow = {
        id: randomUUID(),
        name,
        tenantId: visibility === 'PUBLIC' ? '' : caller.tenantId,
        labels: validateLabels('labels', req.labels),
        description: boundedText('description', req.description, textMax.description),
        kind: 'DISK',
        visibility,
        state: 'REGISTERING',
        stateReason: `copying vdi ${source.id} into SR ${sr.name}`,
        osType: boundedText('os_type', req.osType, textMax.osType),
        architecture: boundedText('architecture', req.architecture, textMax.architecture),
        minDiskBytes: validateIntRange('min_disk_bytes', req.minDiskBytes, 0, Number.MAX_SAFE_INTEGER),
        minMemoryMib: validateIntRange('min_memory_mib', req.minMemoryMib, 0, 4 * 1024 * 1024, ' MiB'),
        sha256: validateSha256('sha256', req.sha256),
        vdiId: null,
        virtualSizeBytes: source.virtualSizeBytes,
        sizeBytes: 0,
        kernelPath: '',
        initrdPath: '',
        initrdSha256: '',
        cmdline: '',
        requestTenantId: caller.tenantId,
        requestId: requestId ?? null,
        version: 1,
        createdAt: now,
        updatedAt: now,
      };
      const base = newVdiRow({
        name: `image ${name}`,
        tenantId: image.tenantId,
        srId: sr.id,
        virtualSizeBytes: source.virtualSizeBytes,
        readOnly: true,
        imageId: image.id,
        imageBase: true,
        reservedPhysicalBytes: bytes,
      });
      image.vdiId = base.id;
      if (!(await insertImageIfAbsent(m, image)))
        throw new DomainError(
          ErrorCode.AlreadyExists,
          `an image named ${name} already exists in this pool: choose another name, or deregister it first`,
          { field: 'name', resource: `image ${name}` },
        );
      emit(imageEvent('CREATED', image));
      const operation = await this.operations.create(m, emit, {
        kind: 'image.register',
        target: { kind: 'image', id: image.id, name },
        tenantId: caller.tenantId,
        requestId,
        params: { sourceId: source.id, baseId: base.id, ...rollbackParams([base.id]) },
        now,
      });
      base.currentOperationId = operation.id;
      await m.insert(VdiRow, base);
      emit(vdiEvent('CREATED', base));
      await vdis.update(m, emit, source, { currentOperationId: operation.id });
      return { image, operation, fresh: true };
    });
    if (out.fresh) runner.enqueue(out.operation);
    return { image: out.image, operation: out.operation };
  }

  /** Removes the image from the catalogue at once; `etag`, when given, must be the current one. */
  async deregister(caller: Caller, idOrName: string, etag: string): Promise<void> {
    await this.store.tx(async (m, emit) => {
      const image = await this.get(caller, idOrName, m);
      if (image.visibility === 'PUBLIC' || image.kind === 'KERNEL')
        requireRole(caller, 'pool-admin', `deregistering a ${image.visibility} ${image.kind} image`);
      else requireRole(caller, 'vm-admin', 'deregistering an image');
      if (image.state === 'REGISTERING')
        throw failedPrecondition(
          `image ${image.name} is still being registered: cancel its image.register operation instead`,
          { resource: `image ${image.id}` },
        );
      if (etag && etag !== String(image.version)) throw conflict('image', image.id);
      // The version check makes a concurrent change (or a second deregister) lose cleanly.
      const deleted = await m
        .createQueryBuilder()
        .delete()
        .from(ImageRow)
        .where('id = :id AND version = :version', { id: image.id, version: image.version })
        .execute();
      if (deleted.affected !== 1) throw conflict('image', image.id);
      emit(imageEvent('DELETED', image));
      // Its bases become hidden chain nodes: removed, or kept while clones are backed by them.
      if (image.kind === 'DISK') {
        const bases = await m.findBy(VdiRow, { imageId: image.id, imageBase: true });
        for (const b of bases) {
          await m.update(VdiRow, { id: b.id }, { managed: false, version: b.version + 1 });
          emit(vdiEvent('DELETED', b));
        }
      }
    });
  }
}

function visibleTo(caller: Caller, image: Pick<ImageRow, 'visibility' | 'tenantId'>): boolean {
  return caller.crossTenant || image.visibility === 'PUBLIC' || image.tenantId === caller.tenantId;
}

function visibilityOf(v: storageV1.ImageVisibility | string | number): ImageVisibility {
  switch (v) {
    case storageV1.ImageVisibility.IMAGE_VISIBILITY_PUBLIC:
      return 'PUBLIC';
    case storageV1.ImageVisibility.IMAGE_VISIBILITY_PRIVATE:
      return 'PRIVATE';
    default:
      throw invalidArgument(
        'visibility',
        `${v === storageV1.ImageVisibility.IMAGE_VISIBILITY_UNSPECIFIED ? 'is required' : `unknown value ${truncate(String(v), 40)}`}: use IMAGE_VISIBILITY_PUBLIC or IMAGE_VISIBILITY_PRIVATE`,
      );
  }
}

function boundedText(field: string, value: string, max: number): string {
  if (value.length > max) throw invalidArgument(field, `is ${value.length} characters long; at most ${max}`);
  return value;
}

/** Inserts the image unless its name or (tenant, request_id) is taken; false when it was. */
async function insertImageIfAbsent(m: EntityManager, image: ImageRow): Promise<boolean> {
  const columns: Array<[string, unknown]> = [
    ['id', image.id],
    ['name', image.name],
    ['tenant_id', image.tenantId],
    ['labels', JSON.stringify(image.labels)],
    ['description', image.description],
    ['kind', image.kind],
    ['visibility', image.visibility],
    ['state', image.state],
    ['state_reason', image.stateReason],
    ['os_type', image.osType],
    ['architecture', image.architecture],
    ['min_disk_bytes', image.minDiskBytes],
    ['min_memory_mib', image.minMemoryMib],
    ['sha256', image.sha256],
    ['vdi_id', image.vdiId],
    ['virtual_size_bytes', image.virtualSizeBytes],
    ['size_bytes', image.sizeBytes],
    ['kernel_path', image.kernelPath],
    ['initrd_path', image.initrdPath],
    ['initrd_sha256', image.initrdSha256],
    ['cmdline', image.cmdline],
    ['request_tenant_id', image.requestTenantId],
    ['request_id', image.requestId],
    ['version', image.version],
    ['created_at', image.createdAt],
    ['updated_at', image.updatedAt],
  ];
  const rows: unknown[] = await m.query(
    `INSERT INTO ${quotedTable(m, ImageRow)} (${columns.map(([c]) => c).join(', ')})
     VALUES (${columns.map((_, i) => `$${i + 1}`).join(', ')})
     ON CONFLICT DO NOTHING RETURNING id`,
    columns.map(([, v]) => v),
  );
  return rows.length === 1;
}
