import { BinaryReader, WireType } from '@bufbuild/protobuf/wire';
import { computeV1Decoders } from '@flotilla/contracts';
import { Generations } from './generations';

type Vm = computeV1Decoders.Vm;
type ListVmsResponse = computeV1Decoders.ListVmsResponse;

/** ListVmsResponse: field 1 `repeated Vm vms`, field 2 `string next_page_token`; Vm: field 1 `string id`. */
const vmsTag = (1 << 3) | WireType.LengthDelimited;
const nextPageTokenTag = (2 << 3) | WireType.LengthDelimited;
const idTag = (1 << 3) | WireType.LengthDelimited;

interface Kept {
  bytes: Uint8Array;
  vm: Readonly<Vm>;
}

/**
 * Decodes ListVms replies, keeping each VM's bytes and the message decoded from them: a VM whose bytes are
 * the same as last time is not decoded again. The EC2 and OpenStack fronts list a tenant's VMs whole on every
 * DescribeInstances and server list, and pollers (SDK waiters, dashboards) list the same, mostly unchanged VMs
 * over and over; decoding a thousand VMs cost the gateway ~7 ms per listing.
 *
 * Byte equality, not the etag, decides: some fields are computed when compute answers (a VM on a DOWN host
 * reads UNKNOWN without its row changing). Kept messages are shared between listings and frozen, so no
 * caller can change another's. At most `capacity` VMs are kept (Generations): VMs not listed lately are
 * forgotten.
 */
export class VmListingDecoder {
  private readonly kept: Generations<string, Kept>;

  constructor(capacity = 20_000) {
    this.kept = new Generations(capacity);
  }

  decode(reply: Uint8Array): ListVmsResponse {
    // A Buffer, so that each VM's bytes (a subarray) are one too: idOf reads the id without a reader.
    const reader = new BinaryReader(Buffer.from(reply.buffer, reply.byteOffset, reply.byteLength));
    const out: ListVmsResponse = { vms: [], nextPageToken: '' };
    while (reader.pos < reader.len) {
      const tag = reader.uint32();
      if (tag === vmsTag) out.vms.push(this.vm(reader.bytes() as Buffer) as Vm);
      else if (tag === nextPageTokenTag) out.nextPageToken = reader.string();
      else reader.skip(tag & 7, tag >>> 3);
    }
    return out;
  }

  /** How many VMs are kept. */
  get size(): number {
    return this.kept.size;
  }

  private vm(bytes: Buffer): Readonly<Vm> {
    const id = idOf(bytes);
    const kept = this.kept.get(id);
    if (kept && sameBytes(kept.bytes, bytes)) return kept.vm;
    // A copy: `bytes` is a view of the whole reply, which must not stay alive for one VM's sake.
    const entry = { bytes: new Uint8Array(bytes), vm: deepFreeze(computeV1Decoders.Vm.decode(bytes)) };
    this.kept.set(id, entry);
    return entry.vm;
  }
}

/** The VM's id (field 1); compute writes it first (a UUID: one byte of length), but any order decodes. */
function idOf(bytes: Buffer): string {
  if (bytes[0] === idTag && bytes[1] < 0x80 && bytes.length >= 2 + bytes[1])
    return bytes.toString('utf8', 2, 2 + bytes[1]);
  const reader = new BinaryReader(bytes);
  while (reader.pos < reader.len) {
    const tag = reader.uint32();
    if (tag === idTag) return reader.string();
    reader.skip(tag & 7, tag >>> 3);
  }
  return '';
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && Buffer.compare(a, b) === 0;
}

/** Freezes the message and every object and array in it (Dates stay as they are: they have no fields). */
function deepFreeze<T>(value: T): T {
  if (value && typeof value === 'object' && !(value instanceof Date) && !Object.isFrozen(value)) {
    for (const v of Object.values(value)) deepFreeze(v);
    Object.freeze(value);
  }
  return value;
}
