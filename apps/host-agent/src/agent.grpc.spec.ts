import { Metadata } from '@grpc/grpc-js';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { computeV1, storageV1 } from '@flotilla/contracts';
import { ErrorCode } from '@flotilla/domain';
import { DriverCapabilities, DriverError, DriverVmSpec, SimDriver, SR_MARKER } from '@flotilla/hypervisor';
import { md, ServiceIdentity } from '@flotilla/platform';
import { AgentGrpc } from './agent.grpc';
import { HostRegistration } from './host-state';
import { HostImageCatalogue } from './image-catalogue';
import { SrPaths } from './sr-paths';

// Real: AgentGrpc with its SR path checks on real directories (roots, SR markers). Fake: the hypervisor, a
// sim driver that also records the disks it is asked to start, plug and unplug, and can claim hot-plug.

class RecordingDriver extends SimDriver {
  started: DriverVmSpec[] = [];
  plugged: { vmId: string; disk: unknown }[] = [];
  unplugged: { vmId: string; diskId: string; options: unknown }[] = [];
  hotplug = true;
  unplugError?: DriverError;

  override capabilities(): DriverCapabilities {
    return { ...super.capabilities(), hotplugDisks: this.hotplug };
  }
  override start(spec: DriverVmSpec) {
    this.started.push(spec);
    return super.start({ ...spec, disks: [] });
  }
  // Rest parameters: the sim driver declares these without any (it refuses them all).
  override async plugDisk(...[vmId, disk]: unknown[]) {
    this.plugged.push({ vmId: vmId as string, disk });
    return { device: 'vdb' };
  }
  override async unplugDisk(...[vmId, diskId, options]: unknown[]) {
    this.unplugged.push({ vmId: vmId as string, diskId: diskId as string, options });
    if (this.unplugError) throw this.unplugError;
  }
}

describe('host agent VM commands with disks', () => {
  let root: string;
  let srDir: string;
  let driver: RecordingDriver;
  let agent: AgentGrpc;
  const token = 'agent-test-token';
  const meta = () => {
    const m = new Metadata();
    m.set(md.serviceToken, token);
    return m;
  };
  const srId = 'sr-1';

  const vmDisk = (over: Partial<storageV1.VmDisk>): storageV1.VmDisk => ({
    vbdId: 'vbd-1',
    vdiId: 'vdi-1',
    devicePosition: 0,
    readOnly: false,
    bootable: false,
    srId,
    srPath: srDir,
    file: 'disk-1.qcow2',
    ...over,
  });
  const spec = (disks: storageV1.VmDisk[], kernel = ''): computeV1.VmSpec => ({
    vmId: 'vm-1',
    name: 'vm-1',
    vcpus: 1,
    memoryMib: 64,
    boot: { image: '', kernel, initrd: '', cmdline: '' },
    nics: [],
    kernelSha256: '',
    initrdSha256: '',
    disks,
  });

  beforeEach(async () => {
    root = fs.mkdtempSync(path.join(os.tmpdir(), 'flotilla-agent-sr-'));
    srDir = path.join(root, 'local');
    fs.mkdirSync(srDir);
    fs.writeFileSync(path.join(srDir, SR_MARKER), JSON.stringify({ sr_id: srId }));
    driver = new RecordingDriver({
      stateDir: path.join(root, 'sim'),
      capacity: { cpus: 4, memoryMib: 4096 },
    });
    await driver.recover();
    const registration = new HostRegistration();
    registration.epoch = 7;
    agent = new AgentGrpc(
      new ServiceIdentity(token),
      registration,
      driver,
      new HostImageCatalogue(path.join(root, 'images'), 'host-1'),
      new SrPaths([root]),
    );
  });
  afterEach(() => fs.rmSync(root, { recursive: true, force: true }));

  it('starts a VM with its disks in device order, the bootable one first for a disk boot, files inside the SR', async () => {
    await agent.startVm(
      {
        epoch: 7,
        spec: spec([
          vmDisk({ vbdId: 'data', devicePosition: 1, file: 'data.qcow2', readOnly: true }),
          vmDisk({ vbdId: 'scratch', devicePosition: 0, file: 'scratch.qcow2' }),
          vmDisk({ vbdId: 'root', devicePosition: 2, file: 'root.qcow2', bootable: true }),
        ]),
      },
      meta(),
    );
    const [started] = driver.started;
    expect(started.boot).toEqual({ kind: 'disk' });
    expect(started.disks).toEqual([
      { id: 'root', path: path.join(srDir, 'root.qcow2'), format: 'qcow2', bootable: true },
      { id: 'scratch', path: path.join(srDir, 'scratch.qcow2'), format: 'qcow2' },
      { id: 'data', path: path.join(srDir, 'data.qcow2'), format: 'qcow2', readOnly: true },
    ]);
  });

  it.each<[string, Partial<storageV1.VmDisk>, RegExp, ErrorCode]>([
    [
      'a file name with a path in it',
      { file: '../../etc/passwd' },
      /^spec\.disks\[0\]\.file:/,
      ErrorCode.InvalidArgument,
    ],
    [
      'an SR directory outside the SR roots',
      { srPath: '/etc' },
      /^spec\.disks\[0\]\.sr_path:/,
      ErrorCode.InvalidArgument,
    ],
    [
      'an SR directory holding another SR',
      { srId: 'sr-2' },
      /marker of SR sr-1/,
      ErrorCode.FailedPrecondition,
    ],
  ])('refuses a disk with %s and starts nothing', async (_, over, message, code) => {
    await expect(agent.startVm({ epoch: 7, spec: spec([vmDisk(over)]) }, meta())).rejects.toMatchObject({
      code,
      message: expect.stringMatching(message),
    });
    expect(driver.started).toEqual([]);
  });

  it('hot-plugs a disk by its VBD id and answers the guest device name', async () => {
    const answer = await agent.plugVmDisk(
      { epoch: 7, vmId: 'vm-1', disk: vmDisk({ readOnly: true }) },
      meta(),
    );
    expect(answer).toEqual({ device: 'vdb' });
    expect(driver.plugged).toEqual([
      {
        vmId: 'vm-1',
        disk: { id: 'vbd-1', path: path.join(srDir, 'disk-1.qcow2'), format: 'qcow2', readOnly: true },
      },
    ]);
  });

  it('refuses to hot-plug with a stale epoch, or where the driver cannot, with FAILED_PRECONDITION', async () => {
    await expect(
      agent.plugVmDisk({ epoch: 6, vmId: 'vm-1', disk: vmDisk({}) }, meta()),
    ).rejects.toMatchObject({
      code: ErrorCode.FailedPrecondition,
      message: expect.stringMatching(/stale host epoch/),
    });
    driver.hotplug = false;
    await expect(
      agent.plugVmDisk({ epoch: 7, vmId: 'vm-1', disk: vmDisk({}) }, meta()),
    ).rejects.toMatchObject({
      code: ErrorCode.FailedPrecondition,
      message: expect.stringMatching(/cannot hot-plug/),
    });
    expect(driver.plugged).toEqual([]);
  });

  it('unplugs with a 30 s default wait, and a guest that keeps the disk is DEADLINE_EXCEEDED', async () => {
    await agent.unplugVmDisk({ epoch: 7, vmId: 'vm-1', vbdId: 'vbd-1', timeoutMs: 0, force: false }, meta());
    expect(driver.unplugged).toEqual([
      { vmId: 'vm-1', diskId: 'vbd-1', options: { timeoutMs: 30_000, force: false } },
    ]);
    driver.unplugError = new DriverError('timeout', 'the guest did not release disk vbd-1');
    await expect(
      agent.unplugVmDisk({ epoch: 7, vmId: 'vm-1', vbdId: 'vbd-1', timeoutMs: 500, force: true }, meta()),
    ).rejects.toMatchObject({ code: ErrorCode.DeadlineExceeded });
  });
});
