import * as path from 'node:path';
import { status } from '@grpc/grpc-js';
import { commonV1, gatewayV1, storageV1 } from '@flotilla/contracts';
import {
  GrpcClient,
  LocalCloud,
  md,
  operationDone,
  startLocalCloud,
  TestTenant,
  testDatabases,
  uniqueSchema,
  waitFor,
  WatchRecorder,
} from '@flotilla/platform';

// Real: gateway (relays the stream), storage (outbox, event feed, Watch), compute, one host agent serving
// StorageAgentService with real qemu-img, gRPC on loopback, the database (PGlite and PostgreSQL). Fake: the
// hypervisor (sim driver; no VM runs).

const { EventType: E, OperationState } = commonV1;
const { ImageVisibility, SrType } = storageV1;
const MIB = 1024 * 1024;

type Recorder = WatchRecorder<storageV1.WatchResponse>;

function kernelImage(name: string, visibility: storageV1.ImageVisibility): storageV1.RegisterImageRequest {
  return {
    requestId: '',
    name,
    description: 'watched kernel',
    labels: {},
    visibility,
    osType: 'linux',
    architecture: 'x86_64',
    minDiskBytes: 0,
    minMemoryMib: 64,
    sha256: 'a'.repeat(64),
    srId: '',
    kernel: {
      kernelPath: `${name}/vmlinuz`,
      initrdPath: `${name}/initrd.img`,
      cmdline: 'console=ttyS0',
      initrdSha256: '',
    },
  };
}

/** Storage's services called directly with the service identity: as a pool-admin, or as `as` says. */
function storageClients(cloud: LocalCloud, as: Record<string, string> = {}) {
  const staticMetadata = { [md.serviceToken]: cloud.serviceToken, ...as };
  const make = <C>(service: string) =>
    new GrpcClient<C>({ address: cloud.storageAddress, service, staticMetadata, defaultDeadlineMs: 30_000 });
  return {
    events: make<storageV1.StorageEventServiceClient>('flotilla.storage.v1.StorageEventService'),
    srs: make<storageV1.SrServiceClient>('flotilla.storage.v1.SrService'),
    vdis: make<storageV1.VdiServiceClient>('flotilla.storage.v1.VdiService'),
    ops: make<commonV1.OperationServiceClient>('flotilla.common.v1.OperationService'),
  };
}
type StorageClients = ReturnType<typeof storageClients>;

describe.each(testDatabases())('storage Watch through the gateway on %s', (_db, url) => {
  let cloud: LocalCloud;
  let tenant: TestTenant;
  let operator: TestTenant;
  let admin: StorageClients;
  let asTenant: StorageClients;
  const recorders: Recorder[] = [];
  let n = 0;

  beforeAll(async () => {
    cloud = await startLocalCloud({ databaseUrl: url, schemaPrefix: uniqueSchema('swatch') });
    tenant = await cloud.tenant('storage-watchers');
    operator = await cloud.tenant('storage-ops', gatewayV1.Role.ROLE_POOL_OPERATOR);
    admin = storageClients(cloud);
    asTenant = storageClients(cloud, { [md.tenantId]: tenant.id, [md.role]: 'vm-admin' });
  }, 120_000);
  afterEach(() => {
    for (const r of recorders.splice(0)) r.close();
  });
  afterAll(async () => {
    for (const c of [admin, asTenant]) for (const client of Object.values(c ?? {})) client.close();
    await cloud?.stop();
  });

  const watch = async (
    events: Pick<GrpcClient<unknown>, 'stream'>,
    cursor: Partial<commonV1.WatchCursor> = {},
  ): Promise<Recorder> => {
    const r = new WatchRecorder<storageV1.WatchResponse>(events, cursor);
    recorders.push(r);
    await r.ready();
    return r;
  };

  const register = async (name: string, visibility = ImageVisibility.IMAGE_VISIBILITY_PUBLIC) =>
    (await cloud.admin.images.call.registerImage(kernelImage(name, visibility))).image!;

  /** Registers a PUBLIC image and deregisters it; returns its id. */
  const cycle = async () => {
    const image = await register(`w-cycle-${++n}`);
    await cloud.admin.images.call.deregisterImage({ id: image.id, etag: '' });
    return image.id;
  };

  const is = (id: string, type: commonV1.EventType) => (m: storageV1.WatchResponse) =>
    m.event?.resourceId === id && m.event.type === type;

  const succeeded = async (op: commonV1.Operation | undefined) => {
    const end = await operationDone(admin.ops, op!.id, 60_000);
    expect(end.state).toBe(OperationState.OPERATION_STATE_SUCCEEDED);
  };

  it('delivers a registered image as CREATED with its fields and dates, and a deregistered one as DELETED', async () => {
    const r = await watch(tenant.clients.storageEvents, { kinds: ['image'] });
    const image = await register(`w-public-${++n}`);
    const created = await r.until('the image created', is(image.id, E.EVENT_TYPE_CREATED));
    expect(created.event).toMatchObject({
      kind: 'image',
      tenantId: '',
      token: expect.stringMatching(/^\d+$/),
    });
    expect(created.event!.time).toBeInstanceOf(Date);
    expect(created.image).toMatchObject({
      id: image.id,
      name: image.name,
      visibility: ImageVisibility.IMAGE_VISIBILITY_PUBLIC,
      state: storageV1.ImageState.IMAGE_STATE_AVAILABLE,
      cmdline: 'console=ttyS0',
      sha256: 'a'.repeat(64),
      etag: '1',
      // What GetImage shows a tenant: no host paths.
      kernelPath: '',
      initrdPath: '',
    });
    expect(created.image!.createdAt).toBeInstanceOf(Date);
    expect(created.image!.createdAt!.getTime()).toBe(image.createdAt!.getTime());
    expect(created.image!.updatedAt!.getTime()).toBe(image.updatedAt!.getTime());

    await cloud.admin.images.call.deregisterImage({ id: image.id, etag: '' });
    const deleted = await r.until('the image deleted', is(image.id, E.EVENT_TYPE_DELETED));
    expect(deleted.image).toMatchObject({ id: image.id, name: image.name });
    expect(r.events.every((m) => m.event!.kind === 'image')).toBe(true);
  });

  it("shows a tenant PUBLIC images but not another tenant's PRIVATE image or its operations", async () => {
    const r = await watch(tenant.clients.storageEvents);
    // The admin's token belongs to the admin's tenant: its PRIVATE image is that tenant's.
    const hidden = await register(`w-private-${++n}`, ImageVisibility.IMAGE_VISIBILITY_PRIVATE);
    const marker = await register(`w-marker-${n}`);
    // The marker commits after the PRIVATE image: once the tenant sees it, it has passed that image.
    await r.until('the PUBLIC image', is(marker.id, E.EVENT_TYPE_CREATED));
    expect(r.events.filter((m) => m.event!.resourceId === hidden.id)).toEqual([]);
    expect(r.events.filter((m) => m.operation?.target?.id === hidden.id)).toEqual([]);
    expect(r.events.filter((m) => ![tenant.id, ''].includes(m.event!.tenantId))).toEqual([]);
  });

  it('shows operators every image and operation, with host paths', async () => {
    const direct = await watch(admin.events, { kinds: ['image', 'operation'] });
    const poolOperator = await watch(operator.clients.storageEvents, { kinds: ['image', 'operation'] });
    const hidden = await register(`w-private-${++n}`, ImageVisibility.IMAGE_VISIBILITY_PRIVATE);
    for (const r of [direct, poolOperator]) {
      const created = await r.until('the PRIVATE image', is(hidden.id, E.EVENT_TYPE_CREATED));
      expect(created.image).toMatchObject({
        kernelPath: `${hidden.name}/vmlinuz`,
        initrdPath: `${hidden.name}/initrd.img`,
      });
      const op = await r.until('its register operation', (m) => m.operation?.target?.id === hidden.id);
      expect(op.operation).toMatchObject({
        kind: 'image.register',
        state: OperationState.OPERATION_STATE_SUCCEEDED,
      });
      expect(op.operation!.createdAt).toBeInstanceOf(Date);
      expect(op.operation!.finishedAt).toBeInstanceOf(Date);
    }
  });

  it('shows a tenant pool-wide SRs without their path and its VDIs but never hidden chain nodes; operators see both', async () => {
    const seenByTenant = await watch(tenant.clients.storageEvents, { kinds: ['sr', 'vdi'] });
    const seenByOperator = await watch(operator.clients.storageEvents, { kinds: ['sr', 'vdi'] });
    const dir = path.join(path.dirname(cloud.imageDir), 'sr', `watched-${++n}`);
    const sr = await admin.srs.call.createSr({
      requestId: '',
      name: `watched-${n}`,
      description: '',
      labels: {},
      type: SrType.SR_TYPE_SHARED,
      hostId: '',
      path: dir,
      tenantId: '',
      overprovisionRatio: 0,
      adoptExisting: false,
    });
    await succeeded(sr.operation);
    const srId = sr.sr!.id;
    const tenantSr = await seenByTenant.until('the SR', (m) => m.sr?.id === srId);
    expect(tenantSr.sr).toMatchObject({ name: `watched-${n}`, path: '' });
    expect((await seenByOperator.until('the SR', (m) => m.sr?.id === srId)).sr!.path).toBe(dir);

    // Destroying a VDI makes it a hidden chain node (managed=false) first, deleted by the chain keeper.
    const { vdi, operation } = await asTenant.vdis.call.createVdi({
      requestId: '',
      srId,
      name: `doomed-${n}`,
      description: '',
      labels: {},
      virtualSizeBytes: 8 * MIB,
      sharable: false,
      image: '',
    });
    await succeeded(operation);
    await succeeded(
      (await asTenant.vdis.call.destroyVdi({ id: vdi!.id, requestId: '', etag: '' })).operation,
    );
    await seenByOperator.until('the hidden node', (m) => m.vdi?.id === vdi!.id && m.vdi.managed === false);
    await waitFor('the chain keeper to delete the hidden node', () =>
      seenByOperator.events.some((m) => is(vdi!.id, E.EVENT_TYPE_DELETED)(m) && m.vdi?.managed === false),
    );
    // A later change of the tenant's: once the tenant sees it, it has passed every event of the doomed VDI.
    const marker = await asTenant.vdis.call.createVdi({
      requestId: '',
      srId,
      name: `marker-${n}`,
      description: '',
      labels: {},
      virtualSizeBytes: 8 * MIB,
      sharable: false,
      image: '',
    });
    await seenByTenant.until('the marker VDI', is(marker.vdi!.id, E.EVENT_TYPE_CREATED));
    const doomed = seenByTenant.events.filter((m) => m.event!.resourceId === vdi!.id);
    expect(doomed[0].event!.type).toBe(E.EVENT_TYPE_CREATED);
    expect(doomed.filter((m) => m.event!.type === E.EVENT_TYPE_DELETED)).toHaveLength(1);
    expect(seenByTenant.events.filter((m) => m.vdi && !m.vdi.managed)).toEqual([]);
    expect(seenByTenant.events.filter((m) => m.sr && m.sr.path !== '')).toEqual([]);
    await succeeded(marker.operation);
  }, 60_000);

  it('lets a client that disconnects and resumes with its last token miss nothing and repeat nothing', async () => {
    const tokens = (r: Recorder[]) => r.flatMap((x) => x.events.map((m) => m.event!.token));
    const reference = await watch(tenant.clients.storageEvents);
    const first = await watch(tenant.clients.storageEvents, {
      resumeToken: reference.messages[0].event!.token,
    });
    const a = await cycle();
    await first.until('the first image deleted', is(a, E.EVENT_TYPE_DELETED));
    first.close();
    // Changes while the client is away.
    const b = await cycle();
    const resumed = await watch(tenant.clients.storageEvents, { resumeToken: first.lastToken });
    const c = await cycle();
    await Promise.all(
      [reference, resumed].map((r) => r.until('the third image deleted', is(c, E.EVENT_TYPE_DELETED))),
    );
    expect(tokens([first, resumed])).toEqual(tokens([reference]));
    expect(reference.events.map((m) => m.event!.resourceId)).toEqual(expect.arrayContaining([a, b, c]));
  });

  it('refuses an unknown kind with INVALID_ARGUMENT naming cursor.kinds', async () => {
    const stream = tenant.clients.storageEvents.stream<storageV1.WatchResponse>('Watch', {
      cursor: { resumeToken: '', kinds: ['image', 'vm'] },
    });
    let failure: { code?: number; details?: string; metadata?: { get(k: string): unknown[] } } | undefined;
    stream.on('error', (e) => (failure = e as typeof failure));
    stream.on('data', () => undefined);
    await waitFor('the Watch to fail', () => failure);
    expect(failure!.code).toBe(status.INVALID_ARGUMENT);
    expect(String(failure!.metadata?.get('x-flotilla-field')[0])).toBe('cursor.kinds');
    expect(failure!.details).toContain('sr, vdi, vbd, image, operation');
  });
});
