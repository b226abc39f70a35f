import { MigrationDisk, MigrationSr, planDiskMigration } from './disk-migration';

const GIB = 1024 ** 3;

const sr = (over: Partial<MigrationSr> & Pick<MigrationSr, 'id'>): MigrationSr => ({
  name: over.id,
  type: 'FILE',
  hostId: 'dest',
  tenantId: '',
  seenByDestination: true,
  usable: true,
  ...over,
  space: {
    name: over.id,
    capacityBytes: 100 * GIB,
    freeBytes: 50 * GIB,
    overprovisionRatio: 0,
    virtualAllocationBytes: 0,
    reservedPhysicalBytes: 0,
    ...over.space,
  },
});

const srcFile = sr({ id: 'src-file', hostId: 'src', seenByDestination: false });
const disk = (over: Partial<MigrationDisk> & Pick<MigrationDisk, 'vdiId'>): MigrationDisk => ({
  vbdId: `vbd-${over.vdiId}`,
  vdiName: over.vdiId,
  tenantId: 't1',
  readOnly: false,
  virtualSizeBytes: GIB,
  chainPhysicalBytes: GIB / 4,
  sr: srcFile,
  ...over,
});
const plan = (o: Partial<Parameters<typeof planDiskMigration>[0]>) =>
  planDiskMigration({ disks: [], srs: [], destinationHostName: 'h2', withStorage: true, vdiMap: {}, ...o });

describe('planning the disks of a migration', () => {
  it('keeps disks on a SHARED SR the destination sees and copies nothing', () => {
    const shared = sr({ id: 'shared', type: 'SHARED', hostId: null });
    const p = plan({
      disks: [disk({ vdiId: 'a', sr: shared }), disk({ vdiId: 'b', sr: shared, readOnly: true })],
    });
    expect(p).toEqual({
      disks: [
        { vbdId: 'vbd-a', vdiId: 'a', srId: 'shared', sizeBytes: 0 },
        { vbdId: 'vbd-b', vdiId: 'b', srId: 'shared', sizeBytes: 0 },
      ],
      blockers: [],
      storageBytesToCopy: 0,
    });
  });

  it('copies a local disk to the destination FILE SR with the most free space, counting earlier copies', () => {
    const [small, large] = [
      sr({ id: 'small', space: { freeBytes: 3 * GIB } as never }),
      sr({ id: 'large', space: { freeBytes: 4 * GIB } as never }),
    ];
    const p = plan({
      disks: [disk({ vdiId: 'a', chainPhysicalBytes: 2 * GIB }), disk({ vdiId: 'b' })],
      srs: [small, large],
    });
    expect(p.blockers).toEqual([]);
    expect(p.disks.map((d) => [d.vdiId, d.targetSrId, d.sizeBytes])).toEqual([
      ['a', 'large', GIB],
      ['b', 'small', GIB],
    ]);
    expect(p.storageBytesToCopy).toBe(2 * GIB);
  });

  it('passes over a destination FILE SR whose overprovision ceiling cannot take the copy', () => {
    const roomy = sr({ id: 'roomy', space: { freeBytes: GIB } as never });
    const capped = sr({ id: 'capped', space: { capacityBytes: GIB, overprovisionRatio: 0.5 } as never });
    const p = plan({ disks: [disk({ vdiId: 'a', chainPhysicalBytes: 0 })], srs: [capped, roomy] });
    expect(p.disks[0].targetSrId).toBe('roomy');
  });

  it('lists every blocker at once: local storage without with_storage, an unseen SHARED SR, a read-only local disk', () => {
    const unseen = sr({ id: 'nfs', type: 'SHARED', hostId: null, seenByDestination: false });
    const p = plan({
      withStorage: false,
      disks: [disk({ vdiId: 'a' }), disk({ vdiId: 'b', sr: unseen }), disk({ vdiId: 'c', readOnly: true })],
    });
    expect(p.blockers.map((b) => [b.kind, b.resourceKind, b.resourceId])).toEqual([
      ['LOCAL_STORAGE', 'vdi', 'a'],
      ['SR_NOT_VISIBLE', 'sr', 'nfs'],
      ['LOCAL_STORAGE', 'vdi', 'c'],
    ]);
    expect(p.blockers[0].message).toMatch(/migrate with storage/);
  });

  it('refuses a vdi_map target the destination does not see, and a destination without FILE SR', () => {
    const other = sr({ id: 'other-host', hostId: 'h3', seenByDestination: false });
    const p = plan({
      disks: [disk({ vdiId: 'a' }), disk({ vdiId: 'b' })],
      srs: [other],
      vdiMap: { a: 'other-host' },
    });
    expect(p.blockers.map((b) => [b.kind, b.resourceId])).toEqual([
      ['SR_NOT_VISIBLE', 'other-host'],
      ['SR_NOT_VISIBLE', 'b'],
    ]);
    expect(p.blockers[1].message).toMatch(/host h2 has no FILE SR/);
  });

  it('says INSUFFICIENT_STORAGE when the copies pass a target SR overprovision ceiling or its free space', () => {
    const tight = sr({ id: 'tight', space: { capacityBytes: 2 * GIB, overprovisionRatio: 1 } as never });
    const full = sr({ id: 'full', type: 'SHARED', hostId: null, space: { freeBytes: GIB / 8 } as never });
    const p = plan({
      disks: [disk({ vdiId: 'a' }), disk({ vdiId: 'b' }), disk({ vdiId: 'c' }), disk({ vdiId: 'd' })],
      srs: [tight, full],
      vdiMap: { a: 'tight', b: 'tight', c: 'tight', d: 'full' },
    });
    expect(p.blockers.map((b) => [b.kind, b.resourceId])).toEqual([
      ['INSUFFICIENT_STORAGE', 'tight'],
      ['INSUFFICIENT_STORAGE', 'full'],
    ]);
    expect(p.blockers[0].message).toMatch(/overprovision ceiling/);
    expect(p.blockers[1].message).toMatch(/free physical space/);
  });

  it('says INSUFFICIENT_STORAGE, not SR_NOT_VISIBLE, when the destination FILE SRs are all too full', () => {
    const p = plan({
      disks: [disk({ vdiId: 'a' })],
      srs: [sr({ id: 'f', space: { freeBytes: 1024 } as never })],
    });
    expect(p.blockers.map((b) => b.kind)).toEqual(['INSUFFICIENT_STORAGE']);
  });
});
