import { DomainError } from './errors';
import { validateNics } from './nics';

let draws = 0;
/** Deterministic "random" bytes: 0xab 0x01 0xff on the first draw, then counting. */
const bytes = () => new Uint8Array([0xab, 0x01, 0xff - draws++]);

beforeEach(() => {
  draws = 0;
});

function fieldOf(f: () => unknown): string | undefined {
  try {
    f();
  } catch (e) {
    return (e as DomainError).fields.field;
  }
  return undefined;
}

describe('validateNics', () => {
  it('gives a VM without NICs one NIC with a generated locally administered MAC', () => {
    expect(validateNics([], bytes)).toEqual([{ mac: '52:54:00:ab:01:ff', forwards: [] }]);
  });

  it('draws again when a generated MAC is taken by another NIC of the VM', () => {
    const [a, b] = validateNics(
      [
        { mac: '52:54:00:ab:01:ff', forwards: [] },
        { mac: '', forwards: [] },
      ],
      bytes,
    );
    expect(a.mac).toBe('52:54:00:ab:01:ff');
    expect(b.mac).toBe('52:54:00:ab:01:fe');
  });

  it('keeps given MACs (lower-cased) and forwards', () => {
    expect(validateNics([{ mac: '52:54:00:AA:BB:CC', forwards: [{ guestPort: 80 }] }], bytes)).toEqual([
      { mac: '52:54:00:aa:bb:cc', forwards: [{ guestPort: 80 }] },
    ]);
  });

  it('names the field of each kind of bad input', () => {
    const nic = (mac: string, ...ports: number[]) => ({
      mac,
      forwards: ports.map((guestPort) => ({ guestPort })),
    });
    expect(fieldOf(() => validateNics([nic('zz:54:00:aa:bb:cc')], bytes))).toBe('nics[0].mac');
    expect(fieldOf(() => validateNics([nic('01:00:5e:00:00:01')], bytes))).toBe('nics[0].mac');
    expect(fieldOf(() => validateNics([nic(''), nic('', 0)], bytes))).toBe('nics[1].forwards[0].guest_port');
    expect(fieldOf(() => validateNics([nic('', 70000)], bytes))).toBe('nics[0].forwards[0].guest_port');
    expect(fieldOf(() => validateNics([nic('', 80, 80)], bytes))).toBe('nics[0].forwards[1].guest_port');
    expect(fieldOf(() => validateNics([nic('52:54:00:aa:bb:cc'), nic('52:54:00:aa:bb:cc')], bytes))).toBe(
      'nics[1].mac',
    );
    expect(
      fieldOf(() =>
        validateNics(
          Array.from({ length: 9 }, () => nic('')),
          bytes,
        ),
      ),
    ).toBe('nics');
  });
});
