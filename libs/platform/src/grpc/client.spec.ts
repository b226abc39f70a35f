import * as grpc from '@grpc/grpc-js';
import { getEventListeners } from 'node:events';
import { computeV1, computeV1Decoders } from '@flotilla/contracts';
import { GrpcClient } from './client';
import { serviceDefinition } from './proto';

describe('GrpcClient and AbortSignal', () => {
  let server: grpc.Server;
  let client: GrpcClient<computeV1.FlavorServiceClient>;
  let release: () => void = () => undefined;
  beforeAll(async () => {
    server = new grpc.Server();
    server.addService(serviceDefinition('flotilla.compute.v1.FlavorService'), {
      // GetFlavor answers at once; ListFlavors waits until released (a call to cancel).
      GetFlavor: (_call: unknown, cb: grpc.sendUnaryData<unknown>) =>
        cb(null, { flavor: { id: 'f', name: 'm1.tiny', vcpus: 1, memoryMib: 512, etag: '1' } }),
      ListFlavors: (_call: unknown, cb: grpc.sendUnaryData<unknown>) => {
        release = () => cb(null, { flavors: [], nextPageToken: '' });
      },
    });
    const port = await new Promise<number>((resolve, reject) =>
      server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e, p) =>
        e ? reject(e) : resolve(p),
      ),
    );
    client = new GrpcClient({ address: `127.0.0.1:${port}`, service: 'flotilla.compute.v1.FlavorService' });
  });
  afterAll(() => {
    client.close();
    release();
    server.forceShutdown();
  });

  it('leaves no listener on a signal shared by many finished calls (no leak on a long-lived signal)', async () => {
    const lifetime = new AbortController();
    for (let i = 0; i < 20; i++)
      expect((await client.call.getFlavor({ id: 'f' }, { signal: lifetime.signal })).flavor?.name).toBe(
        'm1.tiny',
      );
    expect(getEventListeners(lifetime.signal, 'abort')).toHaveLength(0);
  });

  it('still cancels a call in flight when its signal aborts', async () => {
    const stop = new AbortController();
    const pending = client.call.listFlavors(
      { page: { pageSize: 10, pageToken: '', filter: '' } },
      { signal: stop.signal },
    );
    expect(getEventListeners(stop.signal, 'abort')).toHaveLength(1);
    stop.abort();
    await expect(pending).rejects.toMatchObject({ code: grpc.status.CANCELLED });
    expect(getEventListeners(stop.signal, 'abort')).toHaveLength(0);
  });
});

describe('GrpcClient responseDecoders (the generated one-pass decoder of ListVms)', () => {
  const P = computeV1.PowerState;
  const O = computeV1.VmOperation;
  // Every field set, the maps and repeated fields filled, timestamps to the millisecond; then one all defaults.
  const vms: computeV1.Vm[] = [
    {
      id: '0b0c6f1e-59a5-4f6c-9d5e-3c1f2f6a9a01',
      name: 'web-1',
      tenantId: '7d7f9c62-3d49-4b8e-8a1e-5e2a1c0b9f10',
      labels: { tier: 'web', 'é<&>': 'ünïcode "quoted"' },
      createdAt: new Date('2026-11-26T07:01:02.345Z'),
      updatedAt: new Date('2026-11-26T07:05:06.789Z'),
      etag: '17',
      powerState: P.POWER_STATE_RUNNING,
      powerStateReason: 'host h1 is DOWN',
      flavorId: 'm1.small',
      vcpus: 2,
      memoryMib: 2 ** 40,
      rootDiskGib: 20,
      boot: { image: 'demo', kernel: '/k', initrd: '/i', cmdline: 'console=ttyS0' },
      hostId: '5f5e0c1a-8b0e-4a43-9c51-2d0f3e4a5b6c',
      allowedOperations: [O.VM_OPERATION_CLEAN_SHUTDOWN, O.VM_OPERATION_HARD_SHUTDOWN],
      currentOperationId: 'op-1',
      antiAffinityGroup: 'db',
      requiredHostLabels: { rack: 'r1' },
      nics: [
        { mac: '52:54:00:12:34:56', forwards: [{ guestPort: 80, hostAddress: '127.0.0.1:40123' }] },
        { mac: '52:54:00:12:34:57', forwards: [] },
      ],
      isSnapshot: true,
      snapshotOf: '9e9e0c1a-8b0e-4a43-9c51-2d0f3e4a5b6c',
      snapshotTime: new Date('2026-11-26T07:03:04.005Z'),
    },
    {
      id: '',
      name: '',
      tenantId: '',
      labels: {},
      createdAt: undefined,
      updatedAt: undefined,
      etag: '',
      powerState: P.POWER_STATE_UNSPECIFIED,
      powerStateReason: '',
      flavorId: '',
      vcpus: 0,
      memoryMib: 0,
      rootDiskGib: 0,
      boot: undefined,
      hostId: '',
      allowedOperations: [],
      currentOperationId: '',
      antiAffinityGroup: '',
      requiredHostLabels: {},
      nics: [],
      isSnapshot: false,
      snapshotOf: '',
      snapshotTime: undefined,
    },
  ];
  let server: grpc.Server;
  let address: string;
  beforeAll(async () => {
    server = new grpc.Server();
    server.addService(serviceDefinition('flotilla.compute.v1.VmService'), {
      ListVms: (_call: unknown, cb: grpc.sendUnaryData<unknown>) => cb(null, { vms, nextPageToken: 'next' }),
    });
    const port = await new Promise<number>((resolve, reject) =>
      server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e, p) =>
        e ? reject(e) : resolve(p),
      ),
    );
    address = `127.0.0.1:${port}`;
  });
  afterAll(() => server.forceShutdown());

  // proto-loader gives null for an absent message field; the generated decoder undefined, as the types say.
  const nullsAsUndefined = (x: unknown): unknown =>
    x === null
      ? undefined
      : Array.isArray(x)
        ? x.map(nullsAsUndefined)
        : x && typeof x === 'object' && !(x instanceof Date)
          ? Object.fromEntries(Object.entries(x).map(([k, v]) => [k, nullsAsUndefined(v)]))
          : x;

  it('reads a reply as proto-loader does (absent messages undefined, as typed, not null)', async () => {
    const service = 'flotilla.compute.v1.VmService';
    const plain = new GrpcClient<computeV1.VmServiceClient>({ address, service });
    const generated = new GrpcClient<computeV1.VmServiceClient>({
      address,
      service,
      responseDecoders: { ListVms: (reply) => computeV1Decoders.ListVmsResponse.decode(reply) },
    });
    try {
      const request = { page: { pageSize: 10, pageToken: '', filter: '' } };
      const [a, b] = await Promise.all([plain.call.listVms(request), generated.call.listVms(request)]);
      expect(b).toStrictEqual(nullsAsUndefined(a));
      expect(b).toStrictEqual({ vms, nextPageToken: 'next' });
      expect(b.vms[0].createdAt).toBeInstanceOf(Date);
    } finally {
      plain.close();
      generated.close();
    }
  });

  it('refuses a decoder for a method the service does not have', () => {
    expect(
      () =>
        new GrpcClient({
          address,
          service: 'flotilla.compute.v1.VmService',
          responseDecoders: { ListVm: () => ({}) },
        }),
    ).toThrow('no method ListVm to decode replies of');
  });
});
