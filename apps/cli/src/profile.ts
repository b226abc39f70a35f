import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { CliError, ExitCode } from './errors';

/** Where and with which credentials the CLI reaches a Flotilla gateway. */
export interface Profile {
  /** host:port of the gateway's gRPC endpoint. */
  endpoint: string;
  /** Bearer token ("flt_…"). */
  token?: string;
  /** The hosts' image catalogue directory of a local cloud (written by `flotilla up`; used by build-demo). */
  imageDir?: string;
  /** The gateway's EC2 Query API and OpenStack API URLs (written by `flotilla up`; shown by credential create). */
  ec2Url?: string;
  openstackUrl?: string;
}

/** The CLI's config file: named profiles and the one used by default. */
export interface CliConfig {
  current?: string;
  profiles: Record<string, Profile>;
}

export const defaultEndpoint = '127.0.0.1:7400';

/** $FLOTILLA_CONFIG, else $XDG_CONFIG_HOME/flotilla/config.json, else ~/.config/flotilla/config.json. */
export function configPath(env: NodeJS.ProcessEnv = process.env, home: string = os.homedir()): string {
  if (env.FLOTILLA_CONFIG) return path.resolve(env.FLOTILLA_CONFIG);
  const base = env.XDG_CONFIG_HOME ? path.resolve(env.XDG_CONFIG_HOME) : path.join(home, '.config');
  return path.join(base, 'flotilla', 'config.json');
}

/** Reads the config file; a missing file is an empty config, a malformed one a usage error naming the file. */
export function readConfig(file: string): CliConfig {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return { profiles: {} };
    throw new CliError(`cannot read ${file}: ${(e as Error).message}`, ExitCode.Usage);
  }
  const parsed = parseConfig(text);
  if (typeof parsed === 'string')
    throw new CliError(`${file}: ${parsed}; fix or delete the file`, ExitCode.Usage);
  return parsed;
}

/** Validates the file's shape; returns the config or what is wrong with it. */
export function parseConfig(text: string): CliConfig | string {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    return `not valid JSON (${(e as Error).message})`;
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) return 'expected a JSON object';
  const { current, profiles } = raw as { current?: unknown; profiles?: unknown };
  if (current !== undefined && typeof current !== 'string') return '"current" must be a string';
  if (
    profiles !== undefined &&
    (typeof profiles !== 'object' || profiles === null || Array.isArray(profiles))
  )
    return '"profiles" must be an object';
  const out: CliConfig = { profiles: {} };
  if (current) out.current = current;
  for (const [name, p] of Object.entries((profiles ?? {}) as Record<string, unknown>)) {
    const { endpoint, token, imageDir, ec2Url, openstackUrl } = (p ?? {}) as {
      endpoint?: unknown;
      token?: unknown;
      imageDir?: unknown;
      ec2Url?: unknown;
      openstackUrl?: unknown;
    };
    if (typeof endpoint !== 'string' || !endpoint) return `profile "${name}" needs an "endpoint" string`;
    if (token !== undefined && typeof token !== 'string')
      return `profile "${name}": "token" must be a string`;
    for (const [key, value] of Object.entries({ imageDir, ec2Url, openstackUrl }))
      if (value !== undefined && typeof value !== 'string')
        return `profile "${name}": "${key}" must be a string`;
    out.profiles[name] = {
      endpoint,
      ...(token === undefined ? {} : { token }),
      ...(imageDir === undefined ? {} : { imageDir: imageDir as string }),
      ...(ec2Url === undefined ? {} : { ec2Url: ec2Url as string }),
      ...(openstackUrl === undefined ? {} : { openstackUrl: openstackUrl as string }),
    };
  }
  return out;
}

/** Writes the config readable by its owner only (it holds tokens), atomically. */
export function writeConfig(file: string, config: CliConfig): void {
  fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
  const tmp = `${file}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, `${JSON.stringify(config, null, 2)}\n`, { mode: 0o600 });
  fs.chmodSync(tmp, 0o600);
  fs.renameSync(tmp, file);
}

/** Adds or replaces one profile, optionally making it the current one, keeping every other profile. */
export function saveProfile(
  file: string,
  name: string,
  profile: Profile,
  options: { makeCurrent: boolean },
): void {
  const config = readConfig(file);
  config.profiles[name] = profile;
  if (options.makeCurrent) config.current = name;
  writeConfig(file, config);
}

export interface ConnectionFlags {
  endpoint?: string;
  token?: string;
  profile?: string;
}

/** What a command connects with, and where each part came from (for error messages). */
export interface Connection {
  endpoint: string;
  token?: string;
  /** The profile used, if any. */
  profile?: string;
}

/**
 * Flags (and their environment variables, which commander folds into them) win over the profile; the profile
 * is --profile / FLOTILLA_PROFILE, else the config's current one.
 */
export function resolveConnection(flags: ConnectionFlags, config: CliConfig, file: string): Connection {
  const name = flags.profile ?? config.current;
  let profile: Profile | undefined;
  if (name !== undefined) {
    profile = config.profiles[name];
    if (!profile && flags.profile !== undefined) {
      const known = Object.keys(config.profiles);
      throw new CliError(
        `no profile "${name}" in ${file} (${known.length ? `profiles: ${known.join(', ')}` : 'it has none; `npx flotilla up` writes "local"'})`,
        ExitCode.Usage,
      );
    }
  }
  const connection: Connection = { endpoint: flags.endpoint || profile?.endpoint || defaultEndpoint };
  const token = flags.token || profile?.token;
  if (token) connection.token = token;
  if (profile && name) connection.profile = name;
  return connection;
}
