import { OpenStackError } from './errors';
import { atLeast, Microversion } from './microversion';
import { defaultNetwork } from './neutron-documents';
import { isObject, objectAt } from './request';

export interface CreateServerSpec {
  name: string;
  /** Glance image id (from an id or a URL ending in one). */
  imageRef: string;
  flavorRef: string;
  minCount: number;
  maxCount: number;
  /** Nova metadata, kept as the VM's labels (compute checks keys and values as it does for labels). */
  metadata: Record<string, string>;
  nicCount: number;
}

/**
 * POST /servers validated as Nova does at the negotiated microversion: 400 naming the field for anything
 * missing, malformed, or asking for what this cloud cannot do (user data, key pairs, volumes, file
 * injection, ports, another zone) rather than ignoring it.
 */
export function parseCreateServer(
  body: unknown,
  o: { version: Microversion; zone: string },
): CreateServerSpec {
  const server = objectAt(body, 'server');
  const name = server.name;
  if (typeof name !== 'string' || name.trim() === '')
    throw new OpenStackError(400, "Invalid input for field/attribute name: 'name' is a required string.");
  const ref = (key: string) => {
    const v = server[key];
    if (typeof v !== 'string' || v === '')
      throw new OpenStackError(
        400,
        `Invalid input for field/attribute ${key}: '${key}' is a required string.`,
      );
    // Nova takes an id or a URL ending in one.
    return v.replace(/\/+$/, '').split('/').pop() ?? v;
  };
  const minCount = countField(server, 'min_count');
  const maxCount = server.max_count === undefined ? minCount : countField(server, 'max_count');
  if (maxCount < minCount)
    throw new OpenStackError(400, "Invalid input: 'min_count' must be <= 'max_count'.");
  for (const unsupported of ['user_data', 'key_name', 'block_device_mapping', 'block_device_mapping_v2'])
    if (server[unsupported] !== undefined && server[unsupported] !== null)
      throw new OpenStackError(400, `Invalid input: '${unsupported}' is not supported by this cloud.`);
  if (atLeast(o.version, 57) && server.personality !== undefined)
    throw new OpenStackError(400, "Invalid input: 'personality' was removed in microversion 2.57.");
  if (Array.isArray(server.personality) && server.personality.length > 0)
    throw new OpenStackError(
      400,
      "Invalid input: 'personality' (file injection) is not supported by this cloud.",
    );
  const zone = server.availability_zone;
  if (zone !== undefined && zone !== null && zone !== o.zone)
    throw new OpenStackError(
      400,
      `The requested availability zone is not available: this cloud's zone is ${o.zone}.`,
    );
  return {
    name,
    imageRef: ref('imageRef'),
    flavorRef: ref('flavorRef'),
    minCount,
    maxCount,
    metadata: metadataField(server.metadata),
    nicCount: networksField(server.networks, o.version),
  };
}

function countField(server: Record<string, unknown>, key: string): number {
  const v = server[key];
  if (v === undefined) return 1;
  const n = typeof v === 'string' && /^\d+$/.test(v) ? Number(v) : v;
  if (typeof n !== 'number' || !Number.isInteger(n) || n < 1 || n > 100)
    throw new OpenStackError(400, `Invalid input for field/attribute ${key}: an integer from 1 to 100.`);
  return n;
}

/** Nova metadata becomes VM labels: keys and values as Flotilla labels take them (compute checks). */
function metadataField(v: unknown): Record<string, string> {
  if (v === undefined || v === null) return {};
  if (!isObject(v))
    throw new OpenStackError(400, 'Invalid input for field/attribute metadata: must be an object.');
  const out: Record<string, string> = {};
  for (const [k, value] of Object.entries(v)) {
    if (typeof value !== 'string')
      throw new OpenStackError(
        400,
        `Invalid input for field/attribute metadata: the value of '${k}' must be a string.`,
      );
    out[k] = value;
  }
  return out;
}

/**
 * How many NICs a create asks for. "auto" (and, below 2.37, no networks) is one NIC; a list names the one
 * network, once per NIC. "none" is refused: every Flotilla VM has a NIC until the network service exists.
 */
function networksField(v: unknown, version: Microversion): number {
  if (v === undefined) {
    if (atLeast(version, 37))
      throw new OpenStackError(
        400,
        "Invalid input for field/attribute networks: 'networks' is required from microversion 2.37 ('auto', 'none' or a list).",
      );
    return 1;
  }
  if (v === 'auto') return 1;
  if (v === 'none')
    throw new OpenStackError(
      400,
      `Invalid input for field/attribute networks: 'none' is not supported: every server gets a NIC on network ${defaultNetwork.name} (${defaultNetwork.id}).`,
    );
  if (!Array.isArray(v) || v.length === 0 || v.length > 8)
    throw new OpenStackError(
      400,
      "Invalid input for field/attribute networks: 'auto' or a list of 1 to 8 networks.",
    );
  for (const n of v) {
    if (!isObject(n))
      throw new OpenStackError(400, 'Invalid input for field/attribute networks: each entry is an object.');
    if (n.port !== undefined || n.fixed_ip !== undefined)
      throw new OpenStackError(
        400,
        "Invalid input for field/attribute networks: 'port' and 'fixed_ip' are not supported.",
      );
    if (n.uuid !== defaultNetwork.id)
      throw new OpenStackError(400, `Network ${String(n.uuid)} could not be found.`);
  }
  return v.length;
}
