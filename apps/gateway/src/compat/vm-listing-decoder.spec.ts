import { BinaryWriter } from '@bufbuild/protobuf/wire';
import { computeV1, computeV1Decoders } from '@flotilla/contracts';
import { serviceDefinition } from '@flotilla/platform';
import { VmListingDecoder } from './vm-listing-decoder';

const P = computeV1.PowerState;
// Encoded as compute encodes its replies (proto-loader's serializer of the same service).
const encode = serviceDefinition('flotilla.compute.v1.VmService').ListVms.responseSerialize as (
  r: computeV1.ListVmsResponse,
) => Buffer;

const vm = (n: number, over: Partial<computeV1.Vm> = {}): computeV1.Vm => ({
  id: `00000000-0000-4000-8000-${String(n).padStart(12, '0')}`,
  name: `vm-${n}`,
  tenantId: '7d7f9c62-3d49-4b8e-8a1e-5e2a1c0b9f10',
  labels: { tier: 'web' },
  createdAt: new Date(1_764_000_000_000 + n),
  updatedAt: new Date(1_764_000_100_000 + n),
  etag: '3',
  powerState: P.POWER_STATE_HALTED,
  powerStateReason: '',
  flavorId: 'm1.small',
  vcpus: 1,
  memoryMib: 512,
  rootDiskGib: 0,
  boot: { image: 'demo', kernel: '', initrd: '', cmdline: '' },
  hostId: '',
  allowedOperations: [computeV1.VmOperation.VM_OPERATION_START],
  currentOperationId: '',
  antiAffinityGroup: '',
  requiredHostLabels: {},
  nics: [{ mac: '52:54:00:00:00:01', forwards: [{ guestPort: 80, hostAddress: '127.0.0.1:8080' }] }],
  isSnapshot: false,
  snapshotOf: '',
  snapshotTime: undefined,
  ...over,
});

describe('VmListingDecoder', () => {
  it('reads a reply as the generated decoder does', () => {
    const reply = encode({ vms: [vm(1), vm(2, { powerState: P.POWER_STATE_RUNNING })], nextPageToken: 'n' });
    expect(new VmListingDecoder().decode(reply)).toStrictEqual(
      computeV1Decoders.ListVmsResponse.decode(reply),
    );
  });

  it('gives the same message again for a VM whose bytes did not change, and a new one for a VM that did', () => {
    const decoder = new VmListingDecoder();
    const first = decoder.decode(encode({ vms: [vm(1), vm(2), vm(3)], nextPageToken: '' }));
    // Same id and etag, another power state: what compute answers for a VM on a host that went DOWN.
    const unknown = { powerState: P.POWER_STATE_UNKNOWN, powerStateReason: 'host h1 is DOWN' };
    const second = decoder.decode(encode({ vms: [vm(1), vm(2, unknown), vm(3)], nextPageToken: '' }));
    expect(second.vms[0]).toBe(first.vms[0]);
    expect(second.vms[2]).toBe(first.vms[2]);
    expect(second.vms[1]).not.toBe(first.vms[1]);
    expect(second.vms[1]).toMatchObject(unknown);
    expect(first.vms[1].powerState).toBe(P.POWER_STATE_HALTED);
  });

  it('keeps its own copy of the bytes, not a view of a reply that grpc-js may reuse', () => {
    const decoder = new VmListingDecoder();
    const reply = encode({ vms: [vm(1)], nextPageToken: '' });
    const first = decoder.decode(reply).vms[0];
    reply.fill(0);
    expect(decoder.decode(encode({ vms: [vm(1)], nextPageToken: '' })).vms[0]).toBe(first);
  });

  it('shares kept messages frozen: no caller can change what another listing reads', () => {
    const decoder = new VmListingDecoder();
    const [kept] = decoder.decode(encode({ vms: [vm(1)], nextPageToken: '' })).vms;
    expect(() => {
      (kept as { name: string }).name = 'changed';
    }).toThrow(TypeError);
    expect(() => kept.nics[0].forwards.push({ guestPort: 1, hostAddress: 'x' })).toThrow(TypeError);
    expect(() => {
      (kept.labels as Record<string, string>).tier = 'db';
    }).toThrow(TypeError);
  });

  it('finds the id wherever the VM message puts it, and skips fields it does not know', () => {
    const body = new BinaryWriter()
      .uint32((2 << 3) | 2)
      .string('named-first')
      .uint32((99 << 3) | 0)
      .uint32(7) // a field from a newer compute
      .uint32((1 << 3) | 2)
      .string('id-after-name')
      .finish();
    const reply = new BinaryWriter()
      .uint32((1 << 3) | 2)
      .bytes(body)
      .uint32((3 << 3) | 2)
      .string('unknown top-level field')
      .uint32((2 << 3) | 2)
      .string('token')
      .finish();
    const decoder = new VmListingDecoder();
    const a = decoder.decode(reply);
    expect(a.nextPageToken).toBe('token');
    expect(a.vms[0]).toMatchObject({ id: 'id-after-name', name: 'named-first' });
    expect(decoder.decode(reply).vms[0]).toBe(a.vms[0]);
  });

  it('keeps at most its capacity, forgetting the VMs listed longest ago', () => {
    const decoder = new VmListingDecoder(4);
    const early = decoder.decode(encode({ vms: [vm(1), vm(2)], nextPageToken: '' }));
    const later = decoder.decode(encode({ vms: [3, 4, 5, 6, 7].map((n) => vm(n)), nextPageToken: '' }));
    expect(decoder.size).toBeLessThanOrEqual(4);
    // Still right after the generations turned: the latest VMs kept, the earliest decoded anew.
    expect(decoder.decode(encode({ vms: [vm(7)], nextPageToken: '' })).vms[0]).toBe(later.vms[4]);
    const again = decoder.decode(encode({ vms: [vm(1)], nextPageToken: '' })).vms[0];
    expect(again).not.toBe(early.vms[0]);
    expect(again).toStrictEqual(early.vms[0]);
  });
});
