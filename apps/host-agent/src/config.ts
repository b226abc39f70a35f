import * as os from 'node:os';
import { z } from 'zod';
import {
  commonConfig,
  imageDirConfig,
  listenAddress,
  srRootsConfig,
  type ConfigSpec,
} from '@flotilla/platform';

const labelList = z
  .string()
  .regex(
    /^([a-z0-9][a-z0-9._/-]*=[^,=]*)(,[a-z0-9][a-z0-9._/-]*=[^,=]*)*$/,
    'must be key=value pairs separated by commas',
  )
  .transform((s) => Object.fromEntries(s.split(',').map((kv) => kv.split('=') as [string, string])));

export const agentConfigSpec = {
  FLOTILLA_SERVICE_TOKEN: commonConfig.FLOTILLA_SERVICE_TOKEN,
  FLOTILLA_LOG_LEVEL: commonConfig.FLOTILLA_LOG_LEVEL,
  FLOTILLA_DATA_DIR: commonConfig.FLOTILLA_DATA_DIR,
  FLOTILLA_AGENT_ADDRESS: {
    description: 'host:port the agent gRPC service listens on; compute calls this address',
    schema: listenAddress(),
    default: '127.0.0.1:7410',
  },
  FLOTILLA_AGENT_ADVERTISE_ADDRESS: {
    description:
      'host:port compute should call this agent on, when it differs from the listen address (NAT, containers listening on 0.0.0.0); empty: FLOTILLA_AGENT_ADDRESS',
    schema: listenAddress(),
    default: '',
  },
  FLOTILLA_MIGRATION_HOST: {
    description:
      "host name or IP address the migration and NBD listeners of incoming VMs bind to; the source host's QEMU connects there (empty: the host part of FLOTILLA_AGENT_ADVERTISE_ADDRESS, else of FLOTILLA_AGENT_ADDRESS)",
    schema: z
      .string()
      .regex(
        /^([A-Za-z0-9][A-Za-z0-9.-]{0,252}|\[[0-9A-Fa-f:.]+\])$/,
        'must be a host name or IP address without a port (IPv6 in brackets), e.g. 10.0.0.5',
      ),
    default: '',
  },
  FLOTILLA_AGENT_NAME: {
    description: 'the host name registered with the pool (unique in the pool)',
    schema: z
      .string()
      .regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/, 'must be 1..63 letters, digits, ".", "_" or "-"'),
    default: os.hostname().split('.')[0] || 'host-1',
  },
  FLOTILLA_AGENT_STATE_DIR: {
    description: 'directory for per-VM runtime state (default: <FLOTILLA_DATA_DIR>/agents/<name>)',
    schema: z.string().min(1),
    default: '',
  },
  FLOTILLA_IMAGE_DIR: imageDirConfig,
  FLOTILLA_SR_ROOTS: srRootsConfig,
  FLOTILLA_AGENT_ADMIN_ADDRESS: {
    description:
      "host:port of the agent's admin HTTP (/healthz, /metrics with per-VM counters for Prometheus); empty: off",
    schema: z.union([z.literal(''), listenAddress()]),
    default: '',
  },
  FLOTILLA_COMPUTE_URL: {
    description: "host:port of the pool's compute service",
    schema: listenAddress(),
    default: '127.0.0.1:7401',
  },
  FLOTILLA_DRIVER: {
    description: 'hypervisor driver: auto, sim or qemu',
    schema: z.enum(['auto', 'sim', 'qemu']),
    default: 'auto' as const,
  },
  FLOTILLA_ACCEL: {
    description:
      'qemu accelerator: auto (probe whether KVM really runs a guest, else TCG), kvm or tcg (skip the probe)',
    schema: z.enum(['auto', 'kvm', 'tcg']),
    default: 'auto' as const,
  },
  FLOTILLA_HOST_RESERVED_MEMORY_MIB: {
    description:
      "memory kept for the host itself (agent, QEMU's own overhead, the OS): not offered to VMs, like nova's reserved_host_memory_mb",
    schema: z.coerce
      .number()
      .int()
      .min(0, 'must be 0 or more')
      .max(1024 * 1024, 'is too large'),
    default: 512,
  },
  FLOTILLA_SIM_CPUS: {
    description: 'CPUs the sim driver reports',
    schema: z.coerce.number().int().min(1, 'must be 1..4096').max(4096, 'must be 1..4096'),
    default: 16,
  },
  FLOTILLA_SIM_MEMORY_MIB: {
    description: 'memory the sim driver reports, MiB',
    schema: z.coerce
      .number()
      .int()
      .min(64, 'must be at least 64')
      .max(64 * 1024 * 1024, 'is too large'),
    default: 65536,
  },
  FLOTILLA_SIM_LATENCY_MS: {
    description: 'simulated latency of each sim power operation, ms',
    schema: z.coerce.number().int().min(0, 'must be 0..60000').max(60_000, 'must be 0..60000'),
    default: 20,
  },
  FLOTILLA_SIM_MIGRATION_TIME_SCALE: {
    description:
      "real time per modelled time of the sim driver's live migrations: 1 runs the pre-copy model in real time, 0.01 makes a migration take 1% of its modelled time (for evacuations of many simulated hosts)",
    schema: z.coerce
      .number()
      .positive('must be more than 0 and at most 1, e.g. 0.01')
      .max(1, 'must be more than 0 and at most 1, e.g. 0.01'),
    default: 1,
  },
  FLOTILLA_HOST_LABELS: {
    description: 'labels of this host for placement, e.g. "zone=a,ssd=true"',
    schema: labelList,
    default: {} as Record<string, string>,
  },
} satisfies ConfigSpec;

/** FLOTILLA_MIGRATION_HOST, else the host part of the address compute reaches the agent on. */
export function migrationHost(config: {
  FLOTILLA_MIGRATION_HOST: string;
  FLOTILLA_AGENT_ADDRESS: string;
  FLOTILLA_AGENT_ADVERTISE_ADDRESS: string;
}): string {
  if (config.FLOTILLA_MIGRATION_HOST) return config.FLOTILLA_MIGRATION_HOST;
  const address = config.FLOTILLA_AGENT_ADVERTISE_ADDRESS || config.FLOTILLA_AGENT_ADDRESS;
  return address.slice(0, address.lastIndexOf(':'));
}
