import { z } from 'zod';
import {
  commonConfig,
  dbSchemaConfig,
  eventRetentionConfig,
  listenAddress,
  positiveMs,
  type ConfigSpec,
} from '@flotilla/platform';
import { parseUrlAllowList } from './vdis/url-policy';

export const storageConfigSpec = {
  ...commonConfig,
  FLOTILLA_STORAGE_ADDRESS: {
    description: 'host:port the storage gRPC service listens on',
    schema: listenAddress(),
    default: '127.0.0.1:7402',
  },
  FLOTILLA_DB_SCHEMA: dbSchemaConfig('storage'),
  FLOTILLA_EVENT_RETENTION_HOURS: eventRetentionConfig,
  FLOTILLA_COMPUTE_URL: {
    description: "host:port of the pool's compute service (host list and addresses of the host agents)",
    schema: listenAddress(),
    default: '127.0.0.1:7401',
  },
  FLOTILLA_IMPORT_URL_ALLOW: {
    description:
      'where ImportVdi may fetch images from: comma-separated URL prefixes (https://images.example.com/pub/) or host patterns (images.example.com, *.example.com, 10.0.0.5:8080); empty turns URL imports off. Host names resolving to loopback, link-local (169.254.169.254), private or reserved addresses are refused unless an entry names that address itself',
    schema: z.string().superRefine((value, ctx) => {
      const parsed = parseUrlAllowList(value);
      if (!parsed.ok) ctx.addIssue({ code: z.ZodIssueCode.custom, message: parsed.reason });
    }),
    default: '',
  },
  FLOTILLA_IMPORT_URL_TIMEOUT_MS: {
    description:
      'URL imports: how long connecting, the answer headers and every pause in the body may take, 1..600000 ms',
    schema: positiveMs(600_000),
    default: 30_000,
  },
  FLOTILLA_SR_MONITOR_INTERVAL_MS: {
    description:
      "how often every SR's hosts are asked whether they see it (state, capacity, utilisation), 1000..3600000 ms; an SR some host does not see is asked again every 2 s",
    schema: z.coerce
      .number()
      .int('must be an integer')
      .min(1000, 'must be 1000..3600000 ms')
      .max(3_600_000, 'must be 1000..3600000 ms'),
    default: 15_000,
  },
} satisfies ConfigSpec;
