import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { protoFiles, protoRoot, type ProtoArea } from '@flotilla/contracts';

/** proto-loader options shared by servers and clients; they match the ts-proto generation options. */
export const loaderOptions: protoLoader.Options = {
  keepCase: false,
  longs: Number,
  enums: String,
  defaults: true,
  oneofs: true,
  includeDirs: [protoRoot],
};

export const allAreas: ProtoArea[] = ['common', 'compute', 'storage', 'network', 'migration', 'gateway'];

let cached: protoLoader.PackageDefinition | undefined;

/** Every Flotilla contract, loaded once per process. */
export function packageDefinition(): protoLoader.PackageDefinition {
  cached ??= protoLoader.loadSync(protoFiles(...allAreas), loaderOptions);
  return cached;
}

/** The grpc-js service definition of a fully qualified service, e.g. "flotilla.compute.v1.VmService". */
export function serviceDefinition(fullName: string): grpc.ServiceDefinition {
  const def = packageDefinition()[fullName] as grpc.ServiceDefinition | undefined;
  if (!def || typeof def !== 'object' || !Object.values(def).some((m) => (m as { path?: string }).path))
    throw new Error(`unknown gRPC service ${fullName}`);
  return def;
}
