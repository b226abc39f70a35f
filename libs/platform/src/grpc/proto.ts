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

const definitions = new Map<string, protoLoader.PackageDefinition>();

/**
 * The contracts of some areas (all of them by default), loaded once per process: parsing them costs about a
 * tenth of a second of CPU, which every server of a local cloud in one process (a test's hundred sim agents)
 * would otherwise pay again. Package definitions are only read after loading.
 */
export function packageDefinition(areas: ProtoArea[] = allAreas): protoLoader.PackageDefinition {
  const key = [...new Set(areas)].sort().join(',');
  let definition = definitions.get(key);
  if (!definition)
    definitions.set(key, (definition = protoLoader.loadSync(protoFiles(...areas), loaderOptions)));
  return definition;
}

/** The grpc-js service definition of a fully qualified service, e.g. "flotilla.compute.v1.VmService". */
export function serviceDefinition(fullName: string): grpc.ServiceDefinition {
  const def = packageDefinition()[fullName] as grpc.ServiceDefinition | undefined;
  if (!def || typeof def !== 'object' || !Object.values(def).some((m) => (m as { path?: string }).path))
    throw new Error(`unknown gRPC service ${fullName}`);
  return def;
}
