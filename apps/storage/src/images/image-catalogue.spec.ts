import { status } from '@grpc/grpc-js';
import { gatewayV1, storageV1 } from '@flotilla/contracts';
import {
  checkHealth,
  GrpcClient,
  LocalCloud,
  md,
  operationDone,
  rejection,
  startLocalCloud,
  TestTenant,
  testDatabases,
  uniqueSchema,
  vmRequest,
} from '@flotilla/platform';

// Real: gateway (token auth, relaying ImageService, operation routing), storage (catalogue, roles,
// visibility), compute, gRPC on loopback, the database (PGlite and PostgreSQL). No host agents: the
// catalogue records intent and never touches hosts.

const { ImageVisibility, ImageKind, ImageState } = storageV1;
const sha = (c: string) => c.repeat(64);

function kernelImage(
  name: string,
  over: Partial<storageV1.RegisterImageRequest> = {},
  kernel: Partial<storageV1.KernelImageSource> = {},
): storageV1.RegisterImageRequest {
  return {
    requestId: '',
    name,
    description: 'test kernel',
    labels: {},
    visibility: ImageVisibility.IMAGE_VISIBILITY_PUBLIC,
    osType: 'linux',
    architecture: 'x86_64',
    minDiskBytes: 0,
    minMemoryMib: 64,
    sha256: sha('a'),
    srId: '',
    kernel: {
      kernelPath: `${name}/vmlinuz`,
      initrdPath: `${name}/initrd.img`,
      cmdline: 'console=ttyS0',
      initrdSha256: sha('b'),
      ...kernel,
    },
    ...over,
  };
}

const everything = { page: { pageSize: 1000, pageToken: '', filter: '' } };

describe.each(testDatabases())('image catalogue through the gateway on %s', (_db, url) => {
  let cloud: LocalCloud;
  let a: TestTenant;
  let b: TestTenant;
  let operatorOfA: TestTenant;

  beforeAll(async () => {
    cloud = await startLocalCloud({ databaseUrl: url, schemaPrefix: uniqueSchema('images'), agents: 0 });
    a = await cloud.tenant('tenant-a');
    b = await cloud.tenant('tenant-b');
    operatorOfA = await cloud.tenant('tenant-ops', gatewayV1.Role.ROLE_POOL_OPERATOR);
  });
  afterAll(() => cloud?.stop());

  describe('register, read, deregister', () => {
    it('registers a KERNEL image AVAILABLE with an image.register operation that already SUCCEEDED', async () => {
      const { image, operation } = await cloud.admin.images.call.registerImage(kernelImage('k-basic'));
      expect(image).toMatchObject({
        name: 'k-basic',
        kind: ImageKind.IMAGE_KIND_KERNEL,
        visibility: ImageVisibility.IMAGE_VISIBILITY_PUBLIC,
        state: ImageState.IMAGE_STATE_AVAILABLE,
        tenantId: '',
        kernelPath: 'k-basic/vmlinuz',
        initrdPath: 'k-basic/initrd.img',
        cmdline: 'console=ttyS0',
        sha256: sha('a'),
        initrdSha256: sha('b'),
        etag: '1',
      });
      expect(operation).toMatchObject({
        kind: 'image.register',
        state: 'OPERATION_STATE_SUCCEEDED',
        target: { kind: 'image', id: image!.id, name: 'k-basic' },
        result: { image_id: image!.id },
      });
    });

    it('finds the register operation through the gateway, by Get, Wait and the merged list', async () => {
      const { operation } = await cloud.admin.images.call.registerImage(kernelImage('k-ops'));
      const ops = cloud.admin.operations.call;
      expect((await ops.getOperation({ id: operation!.id })).operation).toMatchObject({ id: operation!.id });
      expect((await ops.waitOperation({ id: operation!.id, timeoutMs: 1000 })).operation!.state).toBe(
        'OPERATION_STATE_SUCCEEDED',
      );
      const { operations } = await ops.listOperations({
        page: { pageSize: 1000, pageToken: '', filter: 'kind=image.register' },
      });
      expect(operations.map((o) => o.id)).toContain(operation!.id);
      expect(await rejection(ops.cancelOperation({ id: operation!.id }))).toMatchObject({
        code: 'FAILED_PRECONDITION',
      });
    });

    it('answers NOT_FOUND for an operation no service knows', async () => {
      expect(
        await rejection(
          cloud.admin.operations.call.getOperation({ id: '00000000-0000-4000-8000-000000000000' }),
        ),
      ).toMatchObject({ code: 'NOT_FOUND' });
    });

    it('pages the merged operation list without losing or repeating an operation', async () => {
      // Operations in both services: VM creates in compute, image registers in storage.
      for (let i = 0; i < 3; i++) {
        await a.clients.vms.call.createVm({
          requestId: '',
          name: `pager-${i}`,
          labels: {},
          flavorId: 'm1.tiny',
          vcpus: 0,
          memoryMib: 0,
          boot: undefined,
          antiAffinityGroup: '',
          requiredHostLabels: {},
          start: false,
          nics: [],
          rootDiskSizeBytes: 0,
          rootDiskSr: '',
        });
        await cloud.admin.images.call.registerImage(kernelImage(`k-pager-${i}`));
      }
      const all = (await cloud.admin.operations.call.listOperations(everything)).operations;
      const seen: string[] = [];
      let pageToken = '';
      do {
        const page = await cloud.admin.operations.call.listOperations({
          page: { pageSize: 2, pageToken, filter: '' },
        });
        expect(page.operations.length).toBeLessThanOrEqual(2);
        seen.push(...page.operations.map((o) => o.id));
        pageToken = page.nextPageToken;
      } while (pageToken);
      expect(seen).toEqual(all.map((o) => o.id));
      expect(new Set(all.map((o) => o.kind))).toEqual(new Set(['vm.create', 'image.register']));
    });

    it('gets an image by id and by name, lists it, and filters by kind and label', async () => {
      const { image } = await cloud.admin.images.call.registerImage(
        kernelImage('k-read', { labels: { tier: 'gold' } }),
      );
      const images = cloud.admin.images.call;
      expect((await images.getImage({ id: image!.id })).image!.name).toBe('k-read');
      expect((await images.getImage({ id: 'k-read' })).image!.id).toBe(image!.id);
      const byLabel = await images.listImages({
        page: { pageSize: 10, pageToken: '', filter: 'label.tier=gold,kind=KERNEL' },
      });
      expect(byLabel.images.map((i) => i.name)).toEqual(['k-read']);
      expect(
        await rejection(images.listImages({ page: { pageSize: 10, pageToken: '', filter: 'colour=red' } })),
      ).toMatchObject({ code: 'INVALID_ARGUMENT', field: 'page.filter' });
    });

    it('deregisters with the current etag, answers ABORTED for a stale one and NOT_FOUND after', async () => {
      const { image } = await cloud.admin.images.call.registerImage(kernelImage('k-gone'));
      const images = cloud.admin.images.call;
      expect(await rejection(images.deregisterImage({ id: image!.id, etag: '7' }))).toMatchObject({
        code: 'ABORTED',
      });
      await images.deregisterImage({ id: 'k-gone', etag: image!.etag });
      expect(await rejection(images.getImage({ id: image!.id }))).toMatchObject({ code: 'NOT_FOUND' });
      expect(await rejection(images.deregisterImage({ id: image!.id, etag: '' }))).toMatchObject({
        code: 'NOT_FOUND',
      });
    });
  });

  describe('idempotency and names', () => {
    it('returns the first image and operation for a repeated request_id', async () => {
      const first = await cloud.admin.images.call.registerImage(kernelImage('k-idem', { requestId: 'r-1' }));
      const again = await cloud.admin.images.call.registerImage(kernelImage('k-idem', { requestId: 'r-1' }));
      expect(again.image!.id).toBe(first.image!.id);
      expect(again.operation!.id).toBe(first.operation!.id);
    });

    it('answers ALREADY_EXISTS for a taken name, whoever registered it', async () => {
      await cloud.admin.images.call.registerImage(kernelImage('k-taken'));
      expect(await rejection(cloud.admin.images.call.registerImage(kernelImage('k-taken')))).toMatchObject({
        code: 'ALREADY_EXISTS',
        field: 'name',
      });
    });

    it.each([
      ['an empty name', ''],
      ['an uppercase name', 'Demo'],
      ['a name with an underscore', 'my_image'],
      ['a name of 64 characters', 'a'.repeat(64)],
    ])('answers INVALID_ARGUMENT on name for %s', async (_what, name) => {
      expect(
        await rejection(
          cloud.admin.images.call.registerImage(kernelImage('k-x', { name }, { kernelPath: 'x/vmlinuz' })),
        ),
      ).toMatchObject({ code: 'INVALID_ARGUMENT', field: 'name' });
    });
  });

  describe('path validation', () => {
    it.each([
      ['an absolute kernel path', { kernelPath: '/boot/vmlinuz' }, 'kernel.kernel_path'],
      ['a kernel path with ..', { kernelPath: 'demo/../../etc/shadow' }, 'kernel.kernel_path'],
      ['an empty kernel path', { kernelPath: '' }, 'kernel.kernel_path'],
      ['an initrd path with ..', { initrdPath: '../initrd.img' }, 'kernel.initrd_path'],
      ['a kernel path with a hidden segment', { kernelPath: 'demo/.vmlinuz' }, 'kernel.kernel_path'],
      ['a kernel path with an empty segment', { kernelPath: 'demo//vmlinuz' }, 'kernel.kernel_path'],
      ['a kernel path with a space', { kernelPath: 'demo/vm linuz' }, 'kernel.kernel_path'],
      ['a malformed initrd sha256', { initrdSha256: 'abc' }, 'kernel.initrd_sha256'],
      ['a multi-line cmdline', { cmdline: 'console=ttyS0\ninit=/bin/sh' }, 'kernel.cmdline'],
    ])('answers INVALID_ARGUMENT for %s and registers nothing', async (_what, kernel, field) => {
      const refused = await rejection(
        cloud.admin.images.call.registerImage(kernelImage('k-path', {}, kernel)),
      );
      expect(refused).toMatchObject({ code: 'INVALID_ARGUMENT', field });
      expect(await rejection(cloud.admin.images.call.getImage({ id: 'k-path' }))).toMatchObject({
        code: 'NOT_FOUND',
      });
    });

    it('answers INVALID_ARGUMENT when no source is given', async () => {
      const req = kernelImage('k-nosource');
      delete req.kernel;
      expect(await rejection(cloud.admin.images.call.registerImage(req))).toMatchObject({
        code: 'INVALID_ARGUMENT',
        field: 'source',
      });
    });
  });

  describe('DISK sources and storage repositories', () => {
    it('answers NOT_FOUND for a DISK image from a VDI that does not exist, and registers nothing', async () => {
      const req = kernelImage('d-vdi');
      delete req.kernel;
      req.vdiId = '00000000-0000-4000-8000-000000000001';
      expect(await rejection(cloud.admin.images.call.registerImage(req))).toMatchObject({
        code: 'NOT_FOUND',
      });
      expect(await rejection(cloud.admin.images.call.getImage({ id: 'd-vdi' }))).toMatchObject({
        code: 'NOT_FOUND',
      });
    });

    it('answers UNIMPLEMENTED for a DISK image from a URL', async () => {
      const req = kernelImage('d-url');
      delete req.kernel;
      req.url = {
        url: 'https://example.org/disk.qcow2',
        format: 'DISK_FORMAT_QCOW2' as storageV1.DiskFormat,
      };
      expect(await rejection(cloud.admin.images.call.registerImage(req))).toMatchObject({
        code: 'UNIMPLEMENTED',
      });
    });

    it('serves the SR service on the storage service', async () => {
      const srs = new GrpcClient<storageV1.SrServiceClient>({
        address: cloud.storageAddress,
        service: 'flotilla.storage.v1.SrService',
        staticMetadata: { [md.serviceToken]: cloud.serviceToken },
      });
      try {
        expect((await srs.call.listSrs({ page: { pageSize: 0, pageToken: '', filter: '' } })).srs).toEqual(
          [],
        );
        expect(await checkHealth(cloud.storageAddress, { service: 'flotilla.storage.v1.SrService' })).toBe(
          'SERVING',
        );
      } finally {
        srs.close();
      }
    });
  });

  describe('visibility and roles', () => {
    let privateOfA: storageV1.Image;

    beforeAll(async () => {
      // A tenant's PRIVATE KERNEL image: registered by the pool admin on the tenant's behalf is not possible
      // through the gateway (the admin's token is the admin tenant's), so the admin registers its own.
      ({ image: privateOfA } = (await cloud.admin.images.call.registerImage(
        kernelImage('k-private', { visibility: ImageVisibility.IMAGE_VISIBILITY_PRIVATE }),
      )) as { image: storageV1.Image });
      await cloud.admin.images.call.registerImage(kernelImage('k-public'));
    });

    it('shows every tenant the PUBLIC images without host paths', async () => {
      const { image } = await a.clients.images.call.getImage({ id: 'k-public' });
      expect(image).toMatchObject({
        name: 'k-public',
        kernelPath: '',
        initrdPath: '',
        cmdline: 'console=ttyS0',
      });
      const { images } = await b.clients.images.call.listImages(everything);
      expect(images.map((i) => i.name)).toContain('k-public');
    });

    it("answers NOT_FOUND for another tenant's PRIVATE image, by id and by name, and never lists it", async () => {
      expect(await rejection(a.clients.images.call.getImage({ id: privateOfA.id }))).toMatchObject({
        code: 'NOT_FOUND',
      });
      expect(await rejection(b.clients.images.call.getImage({ id: 'k-private' }))).toMatchObject({
        code: 'NOT_FOUND',
      });
      const { images } = await b.clients.images.call.listImages(everything);
      expect(images.map((i) => i.name)).not.toContain('k-private');
      expect(images.every((i) => i.visibility === ImageVisibility.IMAGE_VISIBILITY_PUBLIC)).toBe(true);
    });

    it('shows a pool-operator every image with its host paths', async () => {
      const { image } = await operatorOfA.clients.images.call.getImage({ id: 'k-private' });
      expect(image!.kernelPath).toBe('k-private/vmlinuz');
    });

    it.each([
      ['a PUBLIC KERNEL image', ImageVisibility.IMAGE_VISIBILITY_PUBLIC],
      ['a PRIVATE KERNEL image', ImageVisibility.IMAGE_VISIBILITY_PRIVATE],
    ])('answers PERMISSION_DENIED when a vm-admin registers %s', async (_what, visibility) => {
      const refused = await rejection(
        a.clients.images.call.registerImage(kernelImage('k-denied', { visibility })),
      );
      expect(refused.code).toBe('PERMISSION_DENIED');
      expect(refused.message).toMatch(/pool-admin/);
    });

    it('answers PERMISSION_DENIED when a pool-operator deregisters a PUBLIC image, and keeps it', async () => {
      expect(
        await rejection(operatorOfA.clients.images.call.deregisterImage({ id: 'k-public', etag: '' })),
      ).toMatchObject({ code: 'PERMISSION_DENIED' });
      expect((await a.clients.images.call.getImage({ id: 'k-public' })).image!.name).toBe('k-public');
    });

    it("answers NOT_FOUND when a tenant reads the register operation of another tenant's image", async () => {
      const { operations } = await cloud.admin.operations.call.listOperations({
        page: { pageSize: 10, pageToken: '', filter: `target_id=${privateOfA.id}` },
      });
      expect(operations).toHaveLength(1);
      expect(await rejection(a.clients.operations.call.getOperation({ id: operations[0].id }))).toMatchObject(
        {
          code: 'NOT_FOUND',
        },
      );
    });

    it("fails the start of a VM that names another tenant's PRIVATE image with NOT_FOUND, as if it did not exist", async () => {
      const { operation } = await a.clients.vms.call.createVm(
        vmRequest({ name: 'peeker', boot: { image: 'k-private', kernel: '', initrd: '', cmdline: '' } }),
      );
      const done = await operationDone(a.clients.operations, operation!.id);
      expect(done.state).toBe('OPERATION_STATE_FAILED');
      expect(done.error).toMatchObject({ code: status.NOT_FOUND });
      expect(done.error!.message).toMatch(/image k-private not found/);
    });

    it('answers UNAUTHENTICATED without a bearer token', async () => {
      expect(await rejection(cloud.clients().images.call.listImages(everything))).toMatchObject({
        code: 'UNAUTHENTICATED',
      });
    });
  });
});
