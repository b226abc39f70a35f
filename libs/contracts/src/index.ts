// The generated contracts, one namespace per proto package (code under ./gen is generated: `npm run codegen`).
export * as commonV1 from './gen/index.flotilla.common.v1';
export * as computeV1 from './gen/index.flotilla.compute.v1';
export * as storageV1 from './gen/index.flotilla.storage.v1';
export * as networkV1 from './gen/index.flotilla.network.v1';
export * as migrationV1 from './gen/index.flotilla.migration.v1';
export * as gatewayV1 from './gen/index.flotilla.gateway.v1';
// One-pass decoders of large replies, generated too (./decoders): the same messages as computeV1's.
export * as computeV1Decoders from './decoders/flotilla/compute/v1/vm';
export { protoRoot, protoFiles, type ProtoArea } from './proto-files';
