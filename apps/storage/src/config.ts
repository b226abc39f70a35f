import { commonConfig, dbSchemaConfig, listenAddress, type ConfigSpec } from '@flotilla/platform';

export const storageConfigSpec = {
  ...commonConfig,
  FLOTILLA_STORAGE_ADDRESS: {
    description: 'host:port the storage gRPC service listens on',
    schema: listenAddress(),
    default: '127.0.0.1:7402',
  },
  FLOTILLA_DB_SCHEMA: dbSchemaConfig('storage'),
  FLOTILLA_COMPUTE_URL: {
    description: "host:port of the pool's compute service (host list and addresses of the host agents)",
    schema: listenAddress(),
    default: '127.0.0.1:7401',
  },
} satisfies ConfigSpec;
