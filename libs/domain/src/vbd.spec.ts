import {
  assertVbdOperationAllowed,
  guestDeviceNames,
  isExclusiveWriter,
  lowestFreePosition,
  resolveVbdMode,
  vbdAllowedOperations,
} from './vbd';

describe('VBD rules', () => {
  it('takes the lowest free position and none when all 16 are taken', () => {
    expect(lowestFreePosition([])).toBe(0);
    expect(lowestFreePosition([0, 1, 3])).toBe(2);
    expect(lowestFreePosition(Array.from({ length: 16 }, (_, i) => i))).toBeUndefined();
  });

  it('defaults the mode from the VDI and refuses RW on a read-only VDI or a CD-ROM', () => {
    expect(resolveVbdMode(undefined, 'DISK', { id: 'v', readOnly: false })).toBe('RW');
    expect(resolveVbdMode(undefined, 'DISK', { id: 'v', readOnly: true })).toBe('RO');
    expect(() => resolveVbdMode('RW', 'DISK', { id: 'v', readOnly: true })).toThrow(/read-only/);
    expect(() => resolveVbdMode('RW', 'CDROM', undefined)).toThrow(/mode: a CD-ROM is read-only/);
  });

  it('makes only RW VBDs of VDIs that are not sharable exclusive writers', () => {
    expect(isExclusiveWriter('RW', { sharable: false })).toBe(true);
    expect(isExclusiveWriter('RW', { sharable: true })).toBe(false);
    expect(isExclusiveWriter('RO', { sharable: false })).toBe(false);
  });

  it('allows plug and destroy while DETACHED, unplug while ATTACHED if unpluggable, nothing while UNKNOWN or busy', () => {
    expect(vbdAllowedOperations({ state: 'DETACHED', unpluggable: true })).toEqual(['PLUG', 'DESTROY']);
    expect(vbdAllowedOperations({ state: 'ATTACHED', unpluggable: true })).toEqual(['UNPLUG']);
    expect(vbdAllowedOperations({ state: 'ATTACHED', unpluggable: false })).toEqual([]);
    expect(vbdAllowedOperations({ state: 'UNKNOWN', unpluggable: true })).toEqual([]);
    expect(vbdAllowedOperations({ state: 'DETACHED', unpluggable: true, currentOperationId: 'op' })).toEqual(
      [],
    );
    expect(() =>
      assertVbdOperationAllowed({ id: 'b', state: 'ATTACHED', unpluggable: true }, 'DESTROY'),
    ).toThrow(/ATTACHED: DESTROY is not allowed; unplug it or halt its VM first/);
  });

  it('names guest devices in position order: disks vda.., CD-ROMs sr0..', () => {
    expect(
      guestDeviceNames([
        { type: 'DISK', devicePosition: 3 },
        { type: 'CDROM', devicePosition: 1 },
        { type: 'DISK', devicePosition: 0 },
      ]),
    ).toEqual(['vdb', 'sr0', 'vda']);
  });
});
