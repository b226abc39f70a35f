import { DriverError } from '../driver';
import { describeLayout, withSourceLayout } from './device-layout';
import { QemuLaunchSpec } from './qemu-command';

const disk = (id: string, port: number, guestName: string) => ({
  id,
  port,
  guestName,
  backing: [],
  cacheDirect: false,
});

/** A first launch of the destination: disks placed as a fresh start places them. */
const freshLaunch = (ids: string[]): QemuLaunchSpec => ({
  vm: {
    vmId: 'vm-1',
    name: 'vm-1',
    vcpus: 1,
    memoryMib: 256,
    boot: { kind: 'disk' },
    disks: ids.map((id) => ({ id, path: `/sr/${id}.qcow2`, format: 'qcow2' as const })),
    nics: [],
  },
  uuid: '00000000-0000-4000-8000-000000000001',
  accelerator: 'tcg',
  rootPorts: ids.length + 4,
  disks: ids.map((id, i) => disk(id, i, `vd${'abcd'[i]}`)),
});

describe('the source device layout a migration destination is built from', () => {
  it('puts each disk on the port the source has it on, with the source port count', () => {
    // Booted with no disk (4 spare ports), then a data disk hot-plugged onto port 0 and a second onto 2.
    const source = describeLayout(4, [disk('vbd-b', 2, 'vdb'), disk('vbd-a', 0, 'vda')]);
    const launch = withSourceLayout(freshLaunch(['vbd-a', 'vbd-b']), source);
    expect(launch.rootPorts).toBe(4);
    expect(launch.disks?.map((d) => [d.id, d.port, d.guestName])).toEqual([
      ['vbd-a', 0, 'vda'],
      ['vbd-b', 2, 'vdb'],
    ]);
    // Files stay the destination's.
    expect(launch.vm.disks.map((d) => d.path)).toEqual(['/sr/vbd-a.qcow2', '/sr/vbd-b.qcow2']);
  });

  it('leaves a launch as it is without a layout', () => {
    const launch = freshLaunch(['vbd-a']);
    expect(withSourceLayout(launch, '')).toBe(launch);
  });

  it.each([
    ['a disk the source does not have', describeLayout(4, []), /disk vbd-a of the spec is not plugged/],
    [
      'a disk the spec lacks',
      describeLayout(4, [disk('vbd-a', 0, 'vda'), disk('vbd-x', 1, 'vdb')]),
      /vbd-x that the spec lacks/,
    ],
    ['not JSON', '{', /not JSON/],
    [
      'a port beyond the root ports',
      describeLayout(2, [disk('vbd-a', 2, 'vda')]),
      /port must be one of the 2 root ports/,
    ],
    [
      'two disks on one port',
      describeLayout(4, [disk('vbd-a', 1, 'vda'), disk('vbd-a', 1, 'vdb')]),
      /taken by another disk/,
    ],
    ['absurd root ports', JSON.stringify({ rootPorts: 1e6, disks: [] }), /rootPorts must be an integer/],
    ['a guest name that is not a disk', describeLayout(4, [disk('vbd-a', 0, '../x')]), /guestName/],
  ])('refuses %s, naming what is wrong', (_, layout, message) => {
    const attempt = () => withSourceLayout(freshLaunch(['vbd-a']), layout);
    expect(attempt).toThrow(DriverError);
    expect(attempt).toThrow(message);
  });
});
