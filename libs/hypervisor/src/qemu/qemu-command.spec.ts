import { DriverError, DriverVmSpec } from '../driver';
import { buildQemuArgv, QemuLaunchSpec, qemuOptionValue, vmUuid } from './qemu-command';
import { diskFileNodeName, diskNodeName, diskToken, guestDiskName, nextGuestDiskName } from './qemu-disks';
import { validateDriverVmSpec } from './vm-spec-validation';

// Pure: spec in, argv out. No QEMU runs here (qemu-driver.spec.ts boots the result).

const vmId = '0b7c6f1e-3d2a-4c5b-9e8f-1a2b3c4d5e6f';
const paths = {
  pidFile: `/var/lib/flotilla/vms/${vmId}/qemu.pid`,
  qmpSocket: `/var/lib/flotilla/vms/${vmId}/qmp.sock`,
  consoleSocket: `/var/lib/flotilla/vms/${vmId}/console.sock`,
  serialLog: `/var/lib/flotilla/vms/${vmId}/serial.log`,
};
const spec: DriverVmSpec = {
  vmId,
  name: 'web-1',
  vcpus: 2,
  memoryMib: 256,
  boot: {
    kind: 'kernel',
    kernel: '/images/demo/vmlinuz',
    initrd: '/images/demo/initrd.img',
    cmdline: 'console=ttyS0 a,b',
  },
  disks: [{ path: '/disks/a.qcow2', format: 'qcow2' }],
  nics: [{ mac: '52:54:00:12:34:56', forwards: [{ guestPort: 80, hostPort: 18080 }] }],
};
const launch = (vm: DriverVmSpec = spec, accelerator: 'kvm' | 'tcg' = 'tcg'): QemuLaunchSpec => ({
  vm,
  uuid: vmUuid(vm.vmId),
  accelerator,
});

/** The value following `flag` each time it appears. */
const values = (argv: string[], flag: string) => argv.flatMap((a, i) => (a === flag ? [argv[i + 1]] : []));

function invalidField(mutate: (s: DriverVmSpec) => void): string {
  const s = structuredClone(spec);
  mutate(s);
  try {
    validateDriverVmSpec(s);
  } catch (e) {
    expect(e).toBeInstanceOf(DriverError);
    expect((e as DriverError).kind).toBe('invalid-spec');
    return (e as DriverError).message;
  }
  throw new Error('spec was accepted');
}

describe('QEMU command line', () => {
  it('builds a TCG VM with a stable CPU model, pvpanic, -no-shutdown, pidfile, QMP and a logged serial socket', () => {
    const argv = buildQemuArgv(launch(), paths);
    expect(values(argv, '-uuid')).toEqual([vmId]);
    expect(values(argv, '-machine')).toEqual(['q35']);
    expect(values(argv, '-accel')).toEqual(['tcg']);
    expect(values(argv, '-cpu')).toEqual(['qemu64']);
    expect(values(argv, '-smp')).toEqual(['2']);
    expect(values(argv, '-m')).toEqual(['256']);
    expect(argv).toEqual(expect.arrayContaining(['-nodefaults', '-no-shutdown', '-no-user-config']));
    expect(values(argv, '-action')).toEqual(['panic=pause']);
    expect(values(argv, '-device')).toContain('pvpanic');
    expect(values(argv, '-pidfile')).toEqual([paths.pidFile]);
    expect(values(argv, '-chardev')).toContain(`socket,id=qmp,path=${paths.qmpSocket},server=on,wait=off`);
    expect(values(argv, '-chardev')).toContain(
      `socket,id=serial0,path=${paths.consoleSocket},server=on,wait=off,logfile=${paths.serialLog},logappend=on`,
    );
    expect(values(argv, '-serial')).toEqual(['chardev:serial0']);
    expect(argv).not.toContain('-incoming');
  });

  it('uses the host CPU only under KVM', () => {
    expect(values(buildQemuArgv(launch(spec, 'kvm'), paths), '-cpu')).toEqual(['host']);
  });

  it('boots a kernel directly with the command line as one argument', () => {
    const argv = buildQemuArgv(launch(), paths);
    expect(values(argv, '-kernel')).toEqual(['/images/demo/vmlinuz']);
    expect(values(argv, '-initrd')).toEqual(['/images/demo/initrd.img']);
    expect(values(argv, '-append')).toEqual(['console=ttyS0 a,b']);
  });

  it('boots from the first disk through the firmware with a bootindex', () => {
    const argv = buildQemuArgv(launch({ ...spec, boot: { kind: 'disk' } }), paths);
    expect(argv).not.toContain('-kernel');
    const node = diskNodeName('disk0', '/disks/a.qcow2');
    expect(values(argv, '-device')).toContain(
      `virtio-blk-pci,id=virtio-disk0,drive=${node},bus=rp0,serial=disk0,bootindex=1`,
    );
  });

  it('boots from the disk marked bootable, wherever it is in the list', () => {
    const disks = [
      { path: '/disks/data.qcow2', format: 'qcow2' as const, id: 'data' },
      { path: '/disks/root.qcow2', format: 'qcow2' as const, id: 'root', bootable: true },
    ];
    const devices = values(
      buildQemuArgv(launch({ ...spec, boot: { kind: 'disk' }, disks }), paths),
      '-device',
    );
    expect(devices.filter((d) => d.includes('bootindex'))).toEqual([
      expect.stringMatching(/^virtio-blk-pci,id=virtio-root,.*bus=rp1,.*bootindex=1$/),
    ]);
  });

  it('puts every disk on its own PCIe root port and keeps spare ports for hot-plug', () => {
    const devices = values(buildQemuArgv(launch(), paths), '-device');
    expect(devices.filter((d) => d.startsWith('pcie-root-port'))).toEqual([
      'pcie-root-port,id=rp0,chassis=1,io-reserve=0',
      'pcie-root-port,id=rp1,chassis=2,io-reserve=0',
      'pcie-root-port,id=rp2,chassis=3,io-reserve=0',
      'pcie-root-port,id=rp3,chassis=4,io-reserve=0',
      'pcie-root-port,id=rp4,chassis=5,io-reserve=0',
    ]);
    expect(devices.filter((d) => d.startsWith('virtio-blk-pci'))).toEqual([
      expect.stringContaining(',bus=rp0,'),
    ]);
  });

  it('spells out the backing chain layer by layer, each with an explicit format and read-only below the top', () => {
    const vm = { ...spec, disks: [{ path: '/sr/top.qcow2', format: 'qcow2' as const, id: 'vbd-1' }] };
    const argv = buildQemuArgv(
      {
        ...launch(vm),
        rootPorts: 2,
        disks: [
          {
            id: 'vbd-1',
            port: 1,
            guestName: 'vda',
            backing: ['/sr/mid.qcow2', '/sr/base.qcow2'],
            cacheDirect: true,
          },
        ],
      },
      paths,
    );
    const [blockdev] = values(argv, '-blockdev');
    const top = JSON.parse(blockdev);
    expect(top).toMatchObject({
      driver: 'qcow2',
      'node-name': diskNodeName('vbd-1', '/sr/top.qcow2'),
      'read-only': false,
      file: { driver: 'file', filename: '/sr/top.qcow2', cache: { direct: true }, aio: 'native' },
      backing: {
        driver: 'qcow2',
        'read-only': true,
        file: { driver: 'file', filename: '/sr/mid.qcow2', 'read-only': true },
        backing: {
          driver: 'qcow2',
          'node-name': diskNodeName('vbd-1', '/sr/base.qcow2'),
          file: { filename: '/sr/base.qcow2' },
          backing: null,
        },
      },
    });
    expect(values(argv, '-device')).toContain(
      `virtio-blk-pci,id=virtio-vbd-1,drive=${top['node-name']},bus=rp1,serial=vbd-1`,
    );
  });

  it('gives a raw disk an explicit raw format over its file node, read-only when asked', () => {
    const argv = buildQemuArgv(
      launch({ ...spec, disks: [...spec.disks, { path: '/disks/b.img', format: 'raw', readOnly: true }] }),
      paths,
    );
    const raw = JSON.parse(values(argv, '-blockdev')[1]);
    expect(raw).toEqual({
      driver: 'raw',
      'node-name': diskNodeName('disk1', '/disks/b.img'),
      'read-only': true,
      file: {
        driver: 'file',
        'node-name': diskFileNodeName('disk1', '/disks/b.img'),
        filename: '/disks/b.img',
        'read-only': true,
        cache: { direct: false, 'no-flush': false },
        aio: 'threads',
      },
    });
  });

  it('names block nodes within QEMU rules (letter first, at most 31 characters) whatever the disk id', () => {
    for (const id of ['0b7c6f1e-3d2a-4c5b-9e8f-1a2b3c4d5e6f', 'a', 'x'.repeat(128), 'a:b.c']) {
      const node = diskNodeName(id, '/sr/some/long/path/to/an/image.qcow2');
      expect(diskFileNodeName(id, '/x')).toMatch(/^[A-Za-z][A-Za-z0-9_.-]{0,30}$/);
      expect(node).toMatch(/^[A-Za-z][A-Za-z0-9_.-]{0,30}$/);
      expect(diskToken(id)).toBe(diskToken(id));
    }
    expect(diskToken('0b7c6f1e-3d2a-4c5b-9e8f-1a2b3c4d5e6f')).not.toBe(
      diskToken('0b7c6f1e-3d2a-4c5b-9e8f-1a2b3c4d5e60'),
    );
  });

  it('names guest disks the way Linux virtio_blk does', () => {
    expect([0, 1, 25, 26, 27, 701, 702].map(guestDiskName)).toEqual([
      'vda',
      'vdb',
      'vdz',
      'vdaa',
      'vdab',
      'vdzz',
      'vdaaa',
    ]);
    expect(nextGuestDiskName(['vda', 'vdc'])).toBe('vdb');
  });

  it('forwards guest ports on loopback only, through a restricted user-mode NIC', () => {
    const argv = buildQemuArgv(launch(), paths);
    expect(values(argv, '-netdev')).toEqual(['user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:18080-:80']);
    expect(values(argv, '-device')).toContain('virtio-net-pci,id=nic0,netdev=net0,mac=52:54:00:12:34:56');
  });

  it('escapes commas in option values the QEMU way', () => {
    const argv = buildQemuArgv(
      launch({ ...spec, name: 'a,b', disks: [{ path: '/disks/x,y.qcow2', format: 'qcow2' }] }),
      paths,
    );
    expect(values(argv, '-name')).toEqual(['guest=a,,b']);
    // -blockdev is JSON: a comma in a path needs no escaping there.
    expect(JSON.parse(values(argv, '-blockdev')[0]).file.filename).toBe('/disks/x,y.qcow2');
    expect(qemuOptionValue('x', ',,')).toBe(',,,,');
  });

  it('waits for an incoming state only when resuming', () => {
    expect(values(buildQemuArgv(launch(), paths, { incoming: true }), '-incoming')).toEqual(['defer']);
  });

  it('refuses to launch a forward whose host port was never resolved', () => {
    const unresolved = { ...spec, nics: [{ mac: '52:54:00:12:34:56', forwards: [{ guestPort: 80 }] }] };
    expect(() => buildQemuArgv(launch(unresolved), paths)).toThrow(/host port must be resolved/);
  });

  it('derives a stable UUID from a vmId that is not one', () => {
    expect(vmUuid('web-1')).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    expect(vmUuid('web-1')).toBe(vmUuid('web-1'));
    expect(vmUuid('web-1')).not.toBe(vmUuid('web-2'));
  });
});

describe('VM spec validation', () => {
  it('accepts a good spec and drops fields it does not know', () => {
    const extra = { ...spec, evil: '-device foo' } as DriverVmSpec;
    expect(validateDriverVmSpec(extra)).not.toHaveProperty('evil');
  });

  it.each<[string, (s: DriverVmSpec) => void, RegExp]>([
    ['vmId with a path', (s) => (s.vmId = '../etc'), /^vmId:/],
    ['vmId with a comma', (s) => (s.vmId = 'a,b'), /^vmId:/],
    ['empty name', (s) => (s.name = ''), /^name:/],
    ['name with a newline', (s) => (s.name = 'a\nb'), /^name:/],
    ['zero vCPUs', (s) => (s.vcpus = 0), /^vcpus:/],
    ['fractional vCPUs', (s) => (s.vcpus = 1.5), /^vcpus:/],
    ['too much memory', (s) => (s.memoryMib = 10 ** 9), /^memoryMib:/],
    ['memory as a string', (s) => ((s as unknown as { memoryMib: string }).memoryMib = '256'), /^memoryMib:/],
    ['relative kernel', (s) => ((s.boot as { kernel: string }).kernel = 'vmlinuz'), /^boot\.kernel:/],
    [
      'kernel with ..',
      (s) => ((s.boot as { kernel: string }).kernel = '/images/../etc/shadow'),
      /^boot\.kernel:/,
    ],
    [
      'initrd not normalised',
      (s) => ((s.boot as { initrd: string }).initrd = '/images//initrd'),
      /^boot\.initrd:/,
    ],
    ['cmdline with a newline', (s) => ((s.boot as { cmdline: string }).cmdline = 'a\nb'), /^boot\.cmdline:/],
    [
      'unknown boot kind',
      (s) => (s.boot = { kind: 'pxe' } as unknown as DriverVmSpec['boot']),
      /^boot\.kind:/,
    ],
    ['disk boot without disks', (s) => ((s.boot = { kind: 'disk' }), (s.disks = [])), /^disks:/],
    [
      'disk without format',
      (s) => delete (s.disks[0] as Partial<DriverVmSpec['disks'][0]>).format,
      /^disks\[0\]\.format:/,
    ],
    ['disk format vmdk', (s) => ((s.disks[0] as { format: string }).format = 'vmdk'), /^disks\[0\]\.format:/],
    ['disk path with trailing slash', (s) => (s.disks[0].path = '/disks/'), /^disks\[0\]\.path:/],
    ['disk id with a slash', (s) => (s.disks[0].id = 'a/b'), /^disks\[0\]\.id:/],
    [
      'the same disk id twice',
      (s) => s.disks.push({ path: '/disks/b.qcow2', format: 'qcow2', id: 'disk0' }),
      /^disks\[1\]\.id:/,
    ],
    [
      'the same file twice',
      (s) => s.disks.push({ path: '/disks/a.qcow2', format: 'qcow2' }),
      /^disks\[1\]\.path:/,
    ],
    ['MAC with dashes', (s) => (s.nics[0].mac = '52-54-00-12-34-56'), /^nics\[0\]\.mac:/],
    ['multicast MAC', (s) => (s.nics[0].mac = '53:54:00:12:34:56'), /^nics\[0\]\.mac:/],
    ['guest port 0', (s) => (s.nics[0].forwards[0].guestPort = 0), /^nics\[0\]\.forwards\[0\]\.guestPort:/],
    [
      'host port 65536',
      (s) => (s.nics[0].forwards[0].hostPort = 65536),
      /^nics\[0\]\.forwards\[0\]\.hostPort:/,
    ],
    [
      'the same host port twice',
      (s) => s.nics[0].forwards.push({ guestPort: 22, hostPort: 18080 }),
      /^nics\[0\]\.forwards\[1\]\.hostPort:/,
    ],
  ])('refuses %s, naming the field', (_, mutate, field) => {
    expect(invalidField(mutate)).toMatch(field);
  });
});
