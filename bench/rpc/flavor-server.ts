/**
 * Child process of the RPC benchmark: serves flotilla.compute.v1.FlavorService/GetFlavor with a fixed
 * Flavor, either on a bare grpc-js server (`bare`) or through the NestJS path every Flotilla service uses
 * (`nest`: startGrpcService with its interceptor, error filter, health and reflection). Both load the same
 * package definition and return the same object, so the only difference is the framework in between.
 *
 * Usage: node flavor-server.js bare|nest <host:port>. Prints one line `{"ready":true,"pid":…}` on stdout
 * once it accepts calls; stops on SIGTERM.
 */
import * as grpc from '@grpc/grpc-js';
import { Controller, Module } from '@nestjs/common';
import { GrpcMethod } from '@nestjs/microservices';
import { createLogger, serviceDefinition, startGrpcService } from '@flotilla/platform';

/** The one answer both servers give (createdAt is a Date: the contracts' Timestamp wrapper encodes it). */
export const fixedFlavor = {
  flavor: {
    id: '7c9e6679-7425-40de-944b-e07fc1f90ae7',
    name: 'm1.small',
    vcpus: 2,
    memoryMib: 4096,
    rootDiskGib: 20,
    createdAt: new Date('2025-01-01T00:00:00.000Z'),
    etag: '1',
  },
};

@Controller()
class FlavorBenchGrpc {
  @GrpcMethod('FlavorService', 'GetFlavor')
  getFlavor(): typeof fixedFlavor {
    return fixedFlavor;
  }
}

@Module({ controllers: [FlavorBenchGrpc] })
class FlavorBenchModule {}

async function startBare(address: string): Promise<() => Promise<void>> {
  const server = new grpc.Server();
  server.addService(serviceDefinition('flotilla.compute.v1.FlavorService'), {
    GetFlavor: (_call: grpc.ServerUnaryCall<unknown, unknown>, cb: grpc.sendUnaryData<unknown>) =>
      cb(null, fixedFlavor),
  });
  await new Promise<number>((resolve, reject) =>
    server.bindAsync(address, grpc.ServerCredentials.createInsecure(), (err, port) =>
      err ? reject(err) : resolve(port),
    ),
  );
  return () => new Promise<void>((resolve) => server.tryShutdown(() => resolve()));
}

async function startNest(address: string): Promise<() => Promise<void>> {
  const app = await startGrpcService({
    module: FlavorBenchModule,
    address,
    areas: ['common', 'compute'],
    healthServices: ['flotilla.compute.v1.FlavorService'],
    logger: createLogger('bench-flavor', process.env.FLOTILLA_LOG_LEVEL || 'info'),
  });
  return () => app.close();
}

async function main(): Promise<void> {
  const [mode, address] = process.argv.slice(2);
  if ((mode !== 'bare' && mode !== 'nest') || !address) {
    process.stderr.write('usage: flavor-server bare|nest <host:port>\n');
    process.exit(2);
  }
  const stop = mode === 'bare' ? await startBare(address) : await startNest(address);
  process.once('SIGTERM', () => {
    void stop().finally(() => process.exit(0));
    setTimeout(() => process.exit(0), 2000).unref();
  });
  process.stdout.write(`${JSON.stringify({ ready: true, pid: process.pid, mode })}\n`);
}

if (require.main === module) {
  main().catch((e: unknown) => {
    process.stderr.write(`flavor-server: ${e instanceof Error ? e.stack : String(e)}\n`);
    process.exit(1);
  });
}
