import * as grpc from '@grpc/grpc-js';
import { getEventListeners } from 'node:events';
import { computeV1 } from '@flotilla/contracts';
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
