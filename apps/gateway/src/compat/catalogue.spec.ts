import * as grpc from '@grpc/grpc-js';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { computeV1, gatewayV1, storageV1 } from '@flotilla/contracts';
import {
  createLogger,
  GrpcClient,
  kernelImageRegistration,
  type LocalCloud,
  serviceDefinition,
  startLocalCloud,
  testDatabases,
  uniqueSchema,
  waitFor,
} from '@flotilla/platform';
import { callerMetadata, type Principal } from '../auth/token-auth';
import { Catalogue, CatalogueIndex, ChangeWatch, ListCache } from './catalogue';
import { PoolApi } from './pool-api';

const logger = createLogger('catalogue-test', process.env.FLOTILLA_TEST_LOG_LEVEL || 'silent');

describe('ListCache', () => {
  const signal = { live: true, generation: 1 };
  let loads: number;
  const load = async () => [{ n: ++loads }];
  beforeEach(() => {
    signal.live = true;
    signal.generation = 1;
    loads = 0;
  });

  it('keeps a list while the generation stays, per key, and reads again after a change', async () => {
    const cache = new ListCache<{ n: number }>(signal);
    const first = await cache.get('a', load);
    expect(await cache.get('a', load)).toBe(first);
    expect(await cache.get('b', load)).toEqual([{ n: 2 }]);
    signal.generation++;
    expect(await cache.get('a', load)).toEqual([{ n: 3 }]);
    expect(await cache.get('a', load)).toEqual([{ n: 3 }]);
    expect(loads).toBe(3);
  });

  it('reads on every call while the signal is not live', async () => {
    const cache = new ListCache<{ n: number }>(signal);
    signal.live = false;
    await cache.get('a', load);
    await cache.get('a', load);
    expect(loads).toBe(2);
  });

  it('does not keep a list when a change comes while it is read', async () => {
    const cache = new ListCache<{ n: number }>(signal);
    let finish!: (v: Array<{ n: number }>) => void;
    const reading = cache.get('a', () => new Promise((resolve) => (finish = resolve)));
    signal.generation++;
    finish([{ n: 0 }]);
    await reading;
    expect(await cache.get('a', load)).toEqual([{ n: 1 }]);
  });

  it('reads when asked for a fresh list, and keeps that one', async () => {
    const cache = new ListCache<{ n: number }>(signal);
    await cache.get('a', load);
    const fresh = await cache.get('a', load, true);
    expect(fresh).toEqual([{ n: 2 }]);
    expect(await cache.get('a', load)).toBe(fresh);
  });

  it('does not keep a failed read', async () => {
    const cache = new ListCache<{ n: number }>(signal);
    await expect(cache.get('a', () => Promise.reject(new Error('down')))).rejects.toThrow('down');
    expect(await cache.get('a', load)).toEqual([{ n: 1 }]);
  });

  it('shares frozen lists, and keeps at most maxKeys of them', async () => {
    const cache = new ListCache<{ n: number }>(signal, 2);
    const a = await cache.get('a', load);
    expect(Object.isFrozen(a)).toBe(true);
    await cache.get('b', load);
    await cache.get('c', load);
    expect(await cache.get('a', load)).not.toBe(a);
    expect(loads).toBe(4);
  });
});

describe('CatalogueIndex', () => {
  const flavor = (id: string, name: string) => ({ id, name }) as computeV1.Flavor;
  const image = (name: string) => ({ id: `id-${name}`, name }) as storageV1.Image;
  const vm = (flavorId: string, bootImage: string) =>
    ({ flavorId, boot: { image: bootImage, kernel: '', initrd: '', cmdline: '' } }) as computeV1.Vm;
  const kept = new CatalogueIndex([flavor('f1', 'm1.tiny')], [image('demo')]);
  const reads = () => {
    const counts = { flavors: 0, images: 0 };
    const read = {
      allFlavors: async () => (counts.flavors++, [flavor('f1', 'm1.tiny'), flavor('f2', 'm1.new')]),
      allImages: async () => (counts.images++, [image('demo'), image('new')]),
    };
    return { counts, read };
  };

  it("finds a VM's flavor by id or name and its image by name", () => {
    expect(kept.flavorOf(vm('f1', ''))?.name).toBe('m1.tiny');
    expect(kept.flavorOf(vm('m1.tiny', ''))?.id).toBe('f1');
    expect(kept.flavorOf(vm('', ''))).toBeUndefined();
    expect(kept.imageOf(vm('', 'demo'))?.id).toBe('id-demo');
    expect(kept.imageOf(undefined)).toBeUndefined();
  });

  it('is its own cover when it knows what every VM names, explicitly sized and terminated ones included', async () => {
    const { counts, read } = reads();
    expect(await kept.covering([vm('f1', 'demo'), vm('', ''), undefined], read)).toBe(kept);
    expect(counts).toEqual({ flavors: 0, images: 0 });
  });

  it('reads only the list that lacks what a VM names', async () => {
    const { counts, read } = reads();
    const covered = await kept.covering([vm('f2', 'demo')], read);
    expect(covered.flavorOf(vm('f2', ''))?.name).toBe('m1.new');
    expect(counts).toEqual({ flavors: 1, images: 0 });
    const both = await kept.covering([vm('f1', 'new'), vm('f2', 'demo')], read);
    expect(both.imageOf(vm('', 'new'))?.id).toBe('id-new');
    expect(counts).toEqual({ flavors: 2, images: 1 });
  });
});

describe('ChangeWatch over a real Watch stream', () => {
  let server: grpc.Server;
  let client: GrpcClient<unknown>;
  // Partial messages with enum names: the server's serializer (proto-loader) fills in the rest.
  const calls: Array<grpc.ServerWritableStream<computeV1.WatchRequest, unknown>> = [];
  const requests: unknown[] = [];
  const bookmark = {
    event: { token: '1', type: 'EVENT_TYPE_BOOKMARK', kind: '', resourceId: '', tenantId: '' },
  };

  beforeAll(async () => {
    server = new grpc.Server();
    server.addService(serviceDefinition('flotilla.compute.v1.EventService'), {
      Watch: (call: (typeof calls)[number]) => {
        requests.push(call.request);
        calls.push(call);
      },
    });
    const port = await new Promise<number>((resolve, reject) =>
      server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e, p) =>
        e ? reject(e) : resolve(p),
      ),
    );
    client = new GrpcClient({ address: `127.0.0.1:${port}`, service: 'flotilla.compute.v1.EventService' });
  });

  afterAll(() => {
    client.close();
    server.forceShutdown();
  });

  it('is live from the first BOOKMARK, moves on each change, drops with the stream and opens it again', async () => {
    const watch = new ChangeWatch(client, ['flavor'], logger, { retryMs: 20, maxRetryMs: 40 }).start();
    try {
      await waitFor('the Watch call', () => calls.length === 1);
      expect(requests[0]).toMatchObject({ cursor: { resumeToken: '', kinds: ['flavor'] } });
      expect(watch.live).toBe(false);
      calls[0].write(bookmark);
      await waitFor('live', () => watch.live);
      const live = watch.generation;
      calls[0].write(bookmark);
      calls[0].write({
        event: { token: '2', type: 'EVENT_TYPE_CREATED', kind: 'flavor', resourceId: 'f', tenantId: '' },
      });
      await waitFor('the change', () => watch.generation === live + 1);
      calls[0].emit('error', { code: grpc.status.UNAVAILABLE, details: 'compute restarting' });
      await waitFor('the drop', () => !watch.live);
      expect(watch.generation).toBeGreaterThan(live + 1);
      await waitFor('the Watch opened again', () => calls.length === 2);
      calls[1].write(bookmark);
      await waitFor('live again', () => watch.live);
    } finally {
      watch.close();
    }
    expect(watch.live).toBe(false);
  });
});

describe.each(testDatabases())('Catalogue against a local cloud on %s', (_db, url) => {
  let cloud: LocalCloud;
  let pool: PoolApi;
  let catalogue: Catalogue;
  let caller: { principal: Pick<Principal, 'tenantId' | 'role'>; call: { metadata: grpc.Metadata } };

  beforeAll(async () => {
    cloud = await startLocalCloud({ databaseUrl: url, schemaPrefix: uniqueSchema('catalogue') });
    const tenant = await cloud.tenant('catalogue-a', gatewayV1.Role.ROLE_VM_ADMIN);
    fs.mkdirSync(path.join(cloud.imageDir, 'k'), { recursive: true });
    for (const f of ['k/vmlinuz', 'k/initrd']) fs.writeFileSync(path.join(cloud.imageDir, f), 'sim');
    pool = new PoolApi({
      computeAddress: cloud.compute.address,
      storageAddress: cloud.storageAddress,
      serviceToken: cloud.serviceToken,
      deadlineMs: 15_000,
    });
    catalogue = new Catalogue(pool, logger);
    const principal = { tenantId: tenant.id, role: 'vm-admin' as const };
    caller = { principal, call: { metadata: callerMetadata(principal) } };
    await waitFor('the catalogue to follow both change streams', () => catalogue.following);
  }, 120_000);

  afterAll(async () => {
    catalogue?.close();
    pool?.close();
    await cloud?.stop();
  });

  it('keeps the flavors until compute announces a change, then shows it', async () => {
    const before = await catalogue.flavors(caller);
    expect(await catalogue.flavors(caller)).toBe(before);
    await cloud.admin.flavors.call.createFlavor({ name: 'cat-new', vcpus: 1, memoryMib: 64, rootDiskGib: 0 });
    const after = await waitFor('the new flavor in the kept list', async () => {
      const flavors = await catalogue.flavors(caller);
      return flavors.some((f) => f.name === 'cat-new') && flavors;
    });
    expect(after.length).toBe(before.length + 1);
    expect(await catalogue.flavors(caller)).toBe(after);
  });

  it('keeps the images until storage announces a change: registered, then deregistered', async () => {
    const before = await catalogue.images(caller);
    expect(await catalogue.images(caller)).toBe(before);
    const { operation } = await cloud.admin.images.call.registerImage(
      kernelImageRegistration('cat-image', {
        minMemoryMib: 0,
        defaultCmdline: '',
        files: { kernel: { path: 'k/vmlinuz', sha256: '' }, initrd: { path: 'k/initrd', sha256: '' } },
      }),
    );
    expect(operation).toBeDefined();
    const shown = await waitFor('the new image in the kept list', async () =>
      (await catalogue.images(caller)).find((i) => i.name === 'cat-image'),
    );
    await cloud.admin.images.call.deregisterImage({ id: shown.id, etag: '' });
    await waitFor('the image gone from the kept list', async () =>
      (await catalogue.images(caller)).every((i) => i.name !== 'cat-image'),
    );
  });
});
