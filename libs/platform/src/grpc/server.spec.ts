import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { Module, type INestMicroservice } from '@nestjs/common';
import * as path from 'node:path';
import type { ProtoArea } from '@flotilla/contracts';
import { createLogger } from '../logging';
import { freePort } from '../testing/ports';
import { service as healthService } from 'grpc-health-check';
import { checkHealth } from './health';
import { startGrpcService } from './server';

@Module({})
class NoControllers {}

const HealthClient = grpc.makeGenericClientConstructor(
  healthService as grpc.ServiceDefinition,
  'grpc.health.v1.Health',
);

/** A grpc.reflection.v1 client, loaded from the reflection package's own contract (what grpcurl speaks). */
const reflectionPackage = grpc.loadPackageDefinition(
  protoLoader.loadSync(
    path.join(
      path.dirname(require.resolve('@grpc/reflection/package.json')),
      'build/proto/grpc/reflection/v1/reflection.proto',
    ),
    { keepCase: true, longs: String, defaults: true, oneofs: true },
  ),
) as unknown as {
  grpc: { reflection: { v1: { ServerReflection: grpc.ServiceClientConstructor } } };
};

interface ReflectionAnswer {
  list_services_response?: { service: Array<{ name: string }> };
  file_descriptor_response?: { file_descriptor_proto: Buffer[] };
  error_response?: { error_code: number; error_message: string };
}

/** Asks one reflection question on a fresh stream, as grpcurl does. */
function ask(address: string, question: Record<string, unknown>): Promise<ReflectionAnswer> {
  const client = new reflectionPackage.grpc.reflection.v1.ServerReflection(
    address,
    grpc.credentials.createInsecure(),
  );
  return new Promise((resolve, reject) => {
    const stream = (
      client as unknown as { ServerReflectionInfo(): grpc.ClientDuplexStream<unknown, unknown> }
    ).ServerReflectionInfo();
    stream.on('data', (answer: ReflectionAnswer) => {
      resolve(answer);
      stream.end();
    });
    stream.on('error', reject);
    stream.on('end', () => client.close());
    stream.write(question);
  });
}

describe('gRPC services: reflection and health, several servers in one process', () => {
  const logger = createLogger('server-spec', 'silent');
  const servers: Array<{ app: INestMicroservice; address: string }> = [];

  async function serve(areas: ProtoArea[], healthServices: string[]) {
    const address = `127.0.0.1:${await freePort()}`;
    const app = await startGrpcService({ module: NoControllers, address, areas, healthServices, logger });
    servers.push({ app, address });
    return address;
  }

  let network: string;
  let storage: string;
  let secondNetwork: string;
  beforeAll(async () => {
    network = await serve(['common', 'network'], ['flotilla.network.v1.NetworkService']);
    storage = await serve(['common', 'storage'], ['flotilla.storage.v1.SrService']);
    // The same areas again: it shares the first server's loaded contracts and must still serve them.
    secondNetwork = await serve(['network', 'common'], ['flotilla.network.v1.NetworkService']);
  });
  afterAll(async () => {
    for (const { app } of servers) await app.close();
  });

  const listed = async (address: string) =>
    (await ask(address, { list_services: '' })).list_services_response!.service.map((s) => s.name);

  it('lists the services of its own areas, and only those', async () => {
    for (const address of [network, secondNetwork]) {
      const names = await listed(address);
      expect(names).toEqual(
        expect.arrayContaining(['flotilla.network.v1.NetworkService', 'flotilla.common.v1.OperationService']),
      );
      expect(names.filter((n) => n.startsWith('flotilla.storage.'))).toEqual([]);
    }
    const names = await listed(storage);
    expect(names).toEqual(expect.arrayContaining(['flotilla.storage.v1.SrService']));
    expect(names.filter((n) => n.startsWith('flotilla.network.'))).toEqual([]);
  });

  it('describes a symbol with its file descriptor, and says NOT_FOUND for an unknown one', async () => {
    const found = await ask(storage, { file_containing_symbol: 'flotilla.storage.v1.SrService' });
    const files = found.file_descriptor_response!.file_descriptor_proto.map((b) => b.toString('latin1'));
    expect(files.some((f) => f.includes('flotilla.storage.v1') && f.includes('SrService'))).toBe(true);
    const missing = await ask(storage, { file_containing_symbol: 'flotilla.network.v1.NetworkService' });
    expect(missing.error_response?.error_code).toBe(grpc.status.NOT_FOUND);
  });

  it('reports SERVING for the empty name and for its services, NOT_FOUND for another service', async () => {
    expect(await checkHealth(storage)).toBe('SERVING');
    expect(await checkHealth(storage, { service: 'flotilla.storage.v1.SrService' })).toBe('SERVING');
    const client = new HealthClient(storage, grpc.credentials.createInsecure());
    try {
      const code = await new Promise<grpc.status>((resolve) =>
        (
          client as unknown as { check: (req: object, cb: (e: grpc.ServiceError | null) => void) => void }
        ).check({ service: 'flotilla.network.v1.NetworkService' }, (e) =>
          resolve(e ? e.code : grpc.status.OK),
        ),
      );
      expect(code).toBe(grpc.status.NOT_FOUND);
    } finally {
      client.close();
    }
  });
});

describe('a stopped gRPC service', () => {
  const logger = createLogger('server-spec', 'silent');

  /** A health check on `client`'s channel: the status code it got. */
  const check = (client: grpc.Client) =>
    new Promise<grpc.status>((resolve) =>
      (
        client as unknown as {
          check: (req: object, o: grpc.CallOptions, cb: (e: grpc.ServiceError | null) => void) => void;
        }
      ).check({ service: '' }, { deadline: Date.now() + 2_000 }, (e) => resolve(e ? e.code : grpc.status.OK)),
    );

  it('closes the connections clients held: no call is answered by it after stop, nothing stays open', async () => {
    const address = `127.0.0.1:${await freePort()}`;
    const app = await startGrpcService({
      module: NoControllers,
      address,
      areas: ['common'],
      healthServices: [],
      logger,
    });
    const client = new HealthClient(address, grpc.credentials.createInsecure());
    try {
      expect(await check(client)).toBe(grpc.status.OK);
      await app.close();
      // The same channel, whose connection was open: the call must not reach the stopped service.
      expect(await check(client)).toBe(grpc.status.UNAVAILABLE);
      expect(client.getChannel().getConnectivityState(false)).not.toBe(grpc.connectivityState.READY);
    } finally {
      client.close();
    }
  });
});
