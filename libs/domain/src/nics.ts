import { invalidArgument } from './errors';

/** A NIC as a VM records it (see compute.v1.Nic). */
export interface NicSpec {
  mac: string;
  forwards: { guestPort: number }[];
}

export const nicLimits = { nicsMax: 8, forwardsPerNicMax: 16 } as const;

const macPattern = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/;

/**
 * Validates the NICs asked for at create and fills in what the caller may leave out: no NIC means one,
 * an empty MAC gets a random one in QEMU's locally administered 52:54:00 range. `randomBytes` is injected
 * to keep this pure.
 */
export function validateNics(
  nics: readonly { mac: string; forwards: readonly { guestPort: number }[] }[],
  randomBytes: (n: number) => Uint8Array,
): NicSpec[] {
  if (nics.length > nicLimits.nicsMax)
    throw invalidArgument('nics', `has ${nics.length} NICs; at most ${nicLimits.nicsMax}`);
  const wanted = nics.length ? nics : [{ mac: '', forwards: [] }];
  const macs = new Set<string>();
  return wanted.map((nic, i) => {
    const field = `nics[${i}]`;
    let mac = nic.mac ? validateMac(`${field}.mac`, nic.mac) : randomMac(randomBytes);
    // A generated MAC that collides with another NIC of the VM is drawn again.
    for (let draw = 1; !nic.mac && macs.has(mac) && draw < 16; draw++) mac = randomMac(randomBytes);
    if (macs.has(mac)) throw invalidArgument(`${field}.mac`, `${mac} is used by another NIC of this VM`);
    macs.add(mac);
    if (nic.forwards.length > nicLimits.forwardsPerNicMax)
      throw invalidArgument(
        `${field}.forwards`,
        `has ${nic.forwards.length} ports; at most ${nicLimits.forwardsPerNicMax}`,
      );
    const ports = new Set<number>();
    const forwards = nic.forwards.map((f, j) => {
      const port = f.guestPort;
      if (!Number.isInteger(port) || port < 1 || port > 65535)
        throw invalidArgument(`${field}.forwards[${j}].guest_port`, `must be 1..65535; got ${port}`);
      if (ports.has(port))
        throw invalidArgument(`${field}.forwards[${j}].guest_port`, `port ${port} is listed twice`);
      ports.add(port);
      return { guestPort: port };
    });
    return { mac, forwards };
  });
}

function validateMac(field: string, value: string): string {
  const mac = value.toLowerCase();
  if (!macPattern.test(mac))
    throw invalidArgument(field, `${JSON.stringify(value.slice(0, 40))} is not a MAC like 52:54:00:12:34:56`);
  const first = parseInt(mac.slice(0, 2), 16);
  if (first & 1) throw invalidArgument(field, `${mac} is a multicast address: the first octet must be even`);
  return mac;
}

function randomMac(randomBytes: (n: number) => Uint8Array): string {
  const b = randomBytes(3);
  return ['52', '54', '00', ...Array.from(b, (x) => x.toString(16).padStart(2, '0'))].join(':');
}
