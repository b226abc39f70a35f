import * as path from 'node:path';
import { z } from 'zod';

/** One configuration key, read from an environment variable of the same name. */
export interface ConfigKey<T> {
  description: string;
  schema: z.ZodType<T>;
  /** Used when the variable is unset or empty; a key without one is required. */
  default?: T;
  /** Never printed. */
  sensitive?: boolean;
}

export type ConfigSpec = Record<string, ConfigKey<unknown>>;
export type ConfigOf<S extends ConfigSpec> = { [K in keyof S]: S[K] extends ConfigKey<infer T> ? T : never };

export class ConfigError extends Error {}

export const port = (): z.ZodType<number> =>
  z.coerce.number().int('must be an integer').min(1, 'must be 1..65535').max(65535, 'must be 1..65535');
export const positiveMs = (max = 3_600_000): z.ZodType<number> =>
  z.coerce.number().int('must be an integer').min(1, `must be 1..${max} ms`).max(max, `must be 1..${max} ms`);
export const listenAddress = (): z.ZodType<string> =>
  z.string().regex(/^[A-Za-z0-9.:[\]-]+:\d{1,5}$/, 'must be host:port, e.g. 127.0.0.1:7401');

/** Parses the environment against the spec; the first bad key gives one line naming it and the fix. */
export function parseConfig<S extends ConfigSpec>(
  spec: S,
  env: NodeJS.ProcessEnv = process.env,
): ConfigOf<S> {
  const out: Record<string, unknown> = {};
  for (const [name, key] of Object.entries(spec)) {
    const raw = env[name];
    if (raw === undefined || raw === '') {
      if (!('default' in key)) throw new ConfigError(`${name} is required: ${key.description}`);
      out[name] = key.default;
      continue;
    }
    const parsed = key.schema.safeParse(raw);
    if (!parsed.success) {
      const shown = key.sensitive
        ? '(hidden)'
        : JSON.stringify(raw.length > 60 ? `${raw.slice(0, 60)}…` : raw);
      throw new ConfigError(
        `${name}=${shown} ${parsed.error.issues[0]?.message ?? 'is invalid'} (${key.description})`,
      );
    }
    out[name] = parsed.data;
  }
  return out as ConfigOf<S>;
}

/** For service entry points: bad configuration prints one clear line and exits with status 2. */
export function loadConfigOrExit<S extends ConfigSpec>(service: string, spec: S): ConfigOf<S> {
  try {
    return parseConfig(spec);
  } catch (e) {
    if (e instanceof ConfigError) {
      process.stderr.write(`flotilla-${service}: invalid configuration: ${e.message}\n`);
      process.exit(2);
    }
    throw e;
  }
}

/** Keys every service shares. */
export const commonConfig = {
  FLOTILLA_LOG_LEVEL: {
    description: 'log level: fatal, error, warn, info, debug or trace',
    schema: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace']),
    default: 'info',
  },
  FLOTILLA_SERVICE_TOKEN: {
    description: 'shared secret that identifies Flotilla services to each other (at least 16 characters)',
    schema: z.string().min(16, 'must be at least 16 characters'),
    sensitive: true,
  },
  DATABASE_URL: {
    description: 'PostgreSQL URL, e.g. postgres://user:pass@127.0.0.1:5432/flotilla; unset: embedded PGlite',
    schema: z.string().regex(/^postgres(ql)?:\/\//, 'must start with postgres://'),
    default: '',
    sensitive: true,
  },
  FLOTILLA_DATA_DIR: {
    description: 'directory for local state (embedded database when DATABASE_URL is unset)',
    schema: z.string().min(1),
    default: './var',
  },
} satisfies ConfigSpec;

/** How long a service with Watch streams keeps their history (EventFeed.keepHistory). */
export const eventRetentionConfig: ConfigKey<number> = {
  description: 'how long Watch history is kept; a watcher resuming from an older token must list again',
  schema: z.coerce
    .number()
    .int('must be an integer')
    .min(1, 'must be 1..8760 hours')
    .max(8760, 'must be 1..8760 hours'),
  default: 24,
};

/** The database schema a service owns (tests and side-by-side installations give each its own). */
export const dbSchemaConfig = (defaultSchema: string): ConfigKey<string> => ({
  description: 'database schema of this service',
  schema: z
    .string()
    .regex(
      /^[a-z_][a-z0-9_]{0,62}$/,
      'must be 1..63 lowercase letters, digits or "_", not starting with a digit',
    ),
  default: defaultSchema,
});

/**
 * The image catalogue directory on each host (FLOTILLA_IMAGE_DIR): KERNEL image paths are relative to it.
 * Empty means <FLOTILLA_DATA_DIR>/images; catalogueDir() resolves it, so every reader agrees.
 */
export const imageDirConfig: ConfigKey<string> = {
  description:
    'image catalogue directory of this host: KERNEL image paths are resolved under it (empty: <FLOTILLA_DATA_DIR>/images)',
  schema: z.string(),
  default: '',
};

/**
 * Directories under which a host agent accepts SR directories (FLOTILLA_SR_ROOTS), colon-separated absolute
 * paths. Empty means <FLOTILLA_DATA_DIR>/sr; srRoots() resolves it, so every reader agrees.
 */
export const srRootsConfig: ConfigKey<string> = {
  description:
    'colon-separated absolute directories under which SR directories may be created or adopted on this host (empty: <FLOTILLA_DATA_DIR>/sr)',
  schema: z
    .string()
    .refine(
      (s) => s === '' || s.split(':').every((p) => path.isAbsolute(p) && !p.split('/').includes('..')),
      {
        message: 'must be absolute directories without "..", separated by ":"',
      },
    ),
  default: '',
};

export function srRoots(config: { FLOTILLA_SR_ROOTS?: string; FLOTILLA_DATA_DIR: string }): string[] {
  const roots = config.FLOTILLA_SR_ROOTS
    ? config.FLOTILLA_SR_ROOTS.split(':')
    : [path.join(config.FLOTILLA_DATA_DIR, 'sr')];
  return roots.map((r) => path.resolve(r));
}

export function catalogueDir(config: { FLOTILLA_IMAGE_DIR?: string; FLOTILLA_DATA_DIR: string }): string {
  return path.resolve(config.FLOTILLA_IMAGE_DIR || path.join(config.FLOTILLA_DATA_DIR, 'images'));
}
