/**
 * Disks of real VMs through the public API, as a user drives them: gateway → storage and compute → host
 * agent (qemu driver) → qemu-img and QEMU. The demo appliance's boot disk is uploaded as a VDI, registered
 * as a DISK image, and a VM boots from a copy-on-write clone of it (SeaBIOS → SYSLINUX on the disk); data
 * disks are hot-plugged into and out of the running guest, read-write and read-only. Every step is checked
 * from the guest's side — its console shell through AttachVmConsole, its HTTP server through the
 * forwarded port — and the bytes the guest wrote are read back with ExportVdi.
 * Real: everything (PGlite or PostgreSQL, qemu-img, QEMU under TCG or KVM). Fake: nothing.
 */
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as path from 'node:path';
import { ClientReadableStream, ClientWritableStream, Metadata, ServiceError, status } from '@grpc/grpc-js';
import { commonV1, computeV1, storageV1 } from '@flotilla/contracts';
import {
  DEMO_READY_MARKER,
  DemoImageManifest,
  demoImageForTests,
  demoImagePaths,
  describeWithRealQemu,
} from '@flotilla/hypervisor';
import {
  GiveUp,
  GrpcClient,
  isGrpcStatus,
  LocalCloud,
  operationDone,
  rejection,
  startLocalCloud,
  TestTenant,
  testDatabases,
  uniqueSchema,
  vmRequest,
  waitFor,
} from '@flotilla/platform';
import { GuestShell } from './guest-shell';

describeWithRealQemu('disks of real VMs end to end', () => {
  const { OperationState: S } = commonV1;
  const { PowerState: P } = computeV1;
  const { VbdState: V, VbdMode: M } = storageV1;
  const GiB = 1024 ** 3;
  const MiB = 1024 ** 2;
  const bootWait = { timeoutMs: 120_000, intervalMs: 500 };
  jest.setTimeout(300_000);

  const [, databaseUrl] = testDatabases()[0];
  let cloud: LocalCloud;
  let tenant: TestTenant;
  let demo: DemoImageManifest & { catalogueDir: string };
  /** The storage services through the gateway, with the tenant's (vm-admin) or the admin's token. */
  let srs: GrpcClient<storageV1.SrServiceClient>;
  let vdis: GrpcClient<storageV1.VdiServiceClient>;
  let vbds: GrpcClient<storageV1.VbdServiceClient>;
  let adminVdis: GrpcClient<storageV1.VdiServiceClient>;

  // What the scenario builds, step after step.
  let srId: string;
  let image: storageV1.Image;
  let vm: computeV1.Vm;
  let rootVdi: storageV1.Vdi;
  let dataVdi: storageV1.Vdi;
  let dataVbd: storageV1.Vbd;
  let shell: GuestShell;

  const gatewayClient = <C>(service: string, token: string) =>
    new GrpcClient<C>({
      address: cloud.gatewayAddress,
      service: `flotilla.storage.v1.${service}`,
      staticMetadata: { authorization: `Bearer ${token}` },
      defaultDeadlineMs: 60_000,
    });
  const bearer = () => {
    const m = new Metadata();
    m.set('authorization', `Bearer ${tenant.token}`);
    return m;
  };

  const done = async (op: commonV1.Operation | undefined, operations = tenant.clients.operations) => {
    const finished = await operationDone(operations, op!.id, 180_000);
    expect({ state: finished.state, error: finished.error?.message }).toEqual({
      state: S.OPERATION_STATE_SUCCEEDED,
      error: undefined,
    });
    return finished;
  };
  const getVdi = async (id: string) => (await vdis.call.getVdi({ id })).vdi!;
  const getVbd = async (id: string) => (await vbds.call.getVbd({ id })).vbd!;
  const vbdsOf = async (vmId: string) =>
    (await vbds.call.listVbds({ page: { pageSize: 16, pageToken: '', filter: `vm_id=${vmId}` } })).vbds.sort(
      (a, b) => a.devicePosition - b.devicePosition,
    );
  const getVm = async (id: string) => (await tenant.clients.vms.call.getVm({ id })).vm!;
  const consoleLog = async (id: string) =>
    Buffer.from((await tenant.clients.vms.call.getVmConsoleLog({ id, maxBytes: 0 })).data).toString();

  /** An empty thin VDI of the tenant in the scenario's SR. */
  const emptyVdi = async (name: string, virtualSizeBytes: number) => {
    const { vdi, operation } = await vdis.call.createVdi({
      requestId: '',
      srId,
      name,
      description: '',
      labels: {},
      virtualSizeBytes,
      sharable: false,
      image: '',
    });
    await done(operation);
    return getVdi(vdi!.id);
  };
  const attach = async (vmId: string, vdiId: string, mode: storageV1.VbdMode) =>
    (
      await vbds.call.createVbd({
        requestId: '',
        vmId,
        vdiId,
        type: storageV1.VbdType.VBD_TYPE_DISK,
        mode,
        bootable: false,
        labels: {},
        name: '',
      })
    ).vbd!;
  const plug = async (vbd: storageV1.Vbd) => {
    await done((await vbds.call.plugVbd({ id: vbd.id, requestId: '', etag: '' })).operation);
    const plugged = await getVbd(vbd.id);
    expect({ state: plugged.state, hotPlugged: plugged.hotPlugged }).toEqual({
      state: V.VBD_STATE_ATTACHED,
      hotPlugged: true,
    });
    return plugged;
  };
  const unplug = async (vbd: storageV1.Vbd) => {
    await done(
      (await vbds.call.unplugVbd({ id: vbd.id, requestId: '', etag: '', timeoutMs: 60_000, force: false }))
        .operation,
    );
    expect((await getVbd(vbd.id)).state).toBe(V.VBD_STATE_DETACHED);
  };

  /** ImportVdi through the gateway: a header, then the file in 1 MiB messages (client stream). */
  const importVdi = async (file: string, header: Partial<storageV1.ImportVdiHeader>) => {
    const bytes = fs.readFileSync(file);
    type ImportCall = (
      metadata: Metadata,
      options: { deadline: Date },
      callback: (err: ServiceError | null, res?: storageV1.ImportVdiResponse) => void,
    ) => ClientWritableStream<storageV1.ImportVdiRequest>;
    const importCall = (vdis.raw as unknown as { ImportVdi: ImportCall }).ImportVdi.bind(vdis.raw);
    return new Promise<storageV1.ImportVdiResponse>((resolve, reject) => {
      const call = importCall(bearer(), { deadline: new Date(Date.now() + 120_000) }, (err, res) =>
        err ? reject(err) : resolve(res!),
      );
      call.write({
        header: {
          requestId: '',
          srId,
          name: '',
          description: '',
          labels: {},
          format: storageV1.DiskFormat.DISK_FORMAT_QCOW2,
          sizeBytes: bytes.length,
          sha256: '',
          sourceUrl: '',
          sharable: false,
          ...header,
        },
      });
      for (let at = 0; at < bytes.length; at += MiB) call.write({ chunk: bytes.subarray(at, at + MiB) });
      call.end();
    });
  };

  /** ExportVdi RAW through the gateway (server stream): the disk's bytes, checked against their count. */
  const exportRaw = async (id: string) => {
    const stream = vdis.stream<storageV1.ExportVdiResponse>(
      'ExportVdi',
      { id, format: storageV1.DiskFormat.DISK_FORMAT_RAW, compress: false },
      { deadlineMs: 120_000 },
    ) as ClientReadableStream<storageV1.ExportVdiResponse> & AsyncIterable<storageV1.ExportVdiResponse>;
    let header: storageV1.ExportVdiHeader | undefined;
    const chunks: Buffer[] = [];
    for await (const m of stream) {
      if (m.header) header = m.header;
      if (m.chunk?.length) chunks.push(Buffer.from(m.chunk));
    }
    const data = Buffer.concat(chunks);
    expect(data.length).toBe(Number(header!.sizeBytes));
    return data;
  };

  function httpGet(address: string): Promise<string> {
    const [host, port] = address.split(':');
    return new Promise((resolve, reject) => {
      const req = http.get({ host, port: Number(port), path: '/', timeout: 5000 }, (res) => {
        let body = '';
        res.on('data', (d: Buffer) => (body += d.toString()));
        res.on('end', () => resolve(body));
      });
      req.on('timeout', () => req.destroy(new Error(`GET ${address} timed out`)));
      req.on('error', reject);
    });
  }

  /**
   * The guest's busybox shell through AttachVmConsole. Each command ends by echoing a token the shell
   * computes (`$((n*1))`), so its answer is never the echo of what was typed; the answer is what the
   * console printed between the command and that token (TICK lines may be mixed in).
   */
  /** The guest's disks as `name=serial` pairs (the qemu driver sets serial= to the VBD id's first 20). */
  const guestDisks = async () => {
    const out = await shell.run('for d in /sys/block/vd*; do echo "DISK=${d##*/}=$(cat $d/serial)"; done');
    return Object.fromEntries([...out.matchAll(/^DISK=(vd[a-z]+)=(\S*)\r?$/gm)].map((m) => [m[1], m[2]]));
  };

  beforeAll(async () => {
    demo = await demoImageForTests();
    cloud = await startLocalCloud({
      databaseUrl,
      schemaPrefix: uniqueSchema('diskvm'),
      agents: [{ name: 'qemu-1', env: { FLOTILLA_DRIVER: 'qemu', FLOTILLA_IMAGE_DIR: demo.catalogueDir } }],
    });
    tenant = await cloud.tenant('diskvm');
    srs = gatewayClient('SrService', cloud.adminToken);
    adminVdis = gatewayClient('VdiService', cloud.adminToken);
    vdis = gatewayClient('VdiService', tenant.token);
    vbds = gatewayClient('VbdService', tenant.token);
    await cloud.hostsReady(1);
  });

  afterAll(async () => {
    shell?.close();
    if (cloud) {
      // No QEMU outlives the suite.
      const { vms } = await cloud.admin.vms.call.listVms({
        page: { pageSize: 100, pageToken: '', filter: '' },
      });
      await Promise.all(
        vms.map(async (v) => {
          const { operation } = await cloud.admin.vms.call.destroyVm({ id: v.id, requestId: '' });
          await operationDone(cloud.admin.operations, operation!.id, 60_000).catch(() => undefined);
        }),
      );
      for (const c of [srs, adminVdis, vdis, vbds]) c?.close();
      await cloud.stop();
    }
  });

  it('creates a shared SR labelled as the default under the agents’ SR root', async () => {
    const { sr, operation } = await srs.call.createSr({
      requestId: '',
      name: 'local',
      description: '',
      labels: { 'flotilla.default': 'true' },
      type: storageV1.SrType.SR_TYPE_SHARED,
      hostId: '',
      // FLOTILLA_SR_ROOTS defaults to <data dir>/sr.
      path: path.join(path.dirname(cloud.imageDir), 'sr', 'local'),
      tenantId: '',
      overprovisionRatio: 0,
      adoptExisting: false,
    });
    // The operator's operation: a tenant does not see it.
    await done(operation, cloud.admin.operations);
    srId = sr!.id;
    const made = (await srs.call.getSr({ id: srId })).sr!;
    expect(made.state).toBe(storageV1.SrState.SR_STATE_AVAILABLE);
    expect(made.hosts.map((h) => h.attached)).toEqual([true]);
  });

  it('imports the demo boot disk as a VDI and registers it as an AVAILABLE DISK image', async () => {
    const disk = demoImagePaths(demo.catalogueDir, demo).disk;
    const imported = await importVdi(disk, { name: 'demo-disk', sha256: demo.files.disk.sha256 });
    await done(imported.operation);
    const vdi = await getVdi(imported.vdi!.id);
    expect(vdi.state).toBe(storageV1.VdiState.VDI_STATE_READY);
    expect(Number(vdi.virtualSizeBytes)).toBe(demo.files.disk.virtualSizeBytes);

    const registered = await tenant.clients.images.call.registerImage({
      requestId: '',
      name: 'demo-disk',
      description: 'the demo guest, booting from its disk',
      labels: {},
      visibility: storageV1.ImageVisibility.IMAGE_VISIBILITY_PRIVATE,
      osType: 'linux',
      architecture: 'x86_64',
      minDiskBytes: 0,
      minMemoryMib: demo.minMemoryMib,
      sha256: '',
      srId: '',
      vdiId: vdi.id,
    });
    await done(registered.operation);
    image = (await tenant.clients.images.call.getImage({ id: 'demo-disk' })).image!;
    expect({ kind: image.kind, state: image.state, reason: image.stateReason }).toEqual({
      kind: storageV1.ImageKind.IMAGE_KIND_DISK,
      state: storageV1.ImageState.IMAGE_STATE_AVAILABLE,
      reason: '',
    });
    // The source VDI stays the tenant's own.
    expect((await getVdi(vdi.id)).state).toBe(storageV1.VdiState.VDI_STATE_READY);
  });

  it('boots a VM from a copy-on-write clone of the DISK image and serves HTTP through its forward', async () => {
    const created = await tenant.clients.vms.call.createVm(
      vmRequest({
        name: 'disk-1',
        vcpus: 1,
        memoryMib: 256,
        boot: { image: 'demo-disk', kernel: '', initrd: '', cmdline: '' },
        rootDiskSizeBytes: 2 * GiB,
        nics: [{ mac: '', forwards: [{ guestPort: 80, hostAddress: '' }] }],
      }),
    );
    await done(created.operation);
    vm = await getVm(created.vm!.id);
    expect(vm.powerState).toBe(P.POWER_STATE_RUNNING);
    // No kernel is handed to QEMU: the name comes from the disk's own SYSLINUX command line ("demo").
    await waitFor(
      `${DEMO_READY_MARKER} on the console of a VM booted from its disk`,
      async () => (await consoleLog(vm.id)).includes(`${DEMO_READY_MARKER} name=demo`),
      bootWait,
    );
    // SeaBIOS handed over to the bootloader on the disk.
    expect(await consoleLog(vm.id)).toContain('SYSLINUX');
    const address = vm.nics[0].forwards[0].hostAddress;
    expect(await waitFor('HTTP through the forward', () => httpGet(address), bootWait)).toContain(
      '<h1>demo</h1>',
    );

    const [root, ...others] = await vbdsOf(vm.id);
    expect(others).toEqual([]);
    expect({
      position: root.devicePosition,
      bootable: root.bootable,
      state: root.state,
      mode: root.mode,
      unpluggable: root.unpluggable,
    }).toEqual({
      position: 0,
      bootable: true,
      state: V.VBD_STATE_ATTACHED,
      mode: M.VBD_MODE_RW,
      unpluggable: false,
    });
    // The image's base is visible to operators only: read the chain as the admin.
    const base = (await cloud.admin.images.call.getImage({ id: image.id })).image!.vdiId;
    rootVdi = (await adminVdis.call.getVdi({ id: root.vdiId })).vdi!;
    expect({
      parent: rootVdi.parentId,
      size: Number(rootVdi.virtualSizeBytes),
      image: rootVdi.imageId,
    }).toEqual({
      parent: base,
      size: 2 * GiB,
      image: image.id,
    });
    // Copy-on-write: the clone holds only what the guest wrote, far less than the image's 33 MiB.
    expect(Number(rootVdi.physicalUtilisationBytes)).toBeLessThan(demo.files.disk.sizeBytes);

    shell = new GuestShell(tenant.clients.vms, vm.id);
    await shell.ready();
    // The guest sees the 2 GiB root disk (sizes in 512-byte sectors).
    expect(await shell.run('echo SIZE=$(cat /sys/block/vda/size)')).toContain(`SIZE=${(2 * GiB) / 512}\r`);
  });

  it('hot-plugs a read-write data disk: the guest sees it, writes to it, loses it on unplug, and the bytes stay', async () => {
    dataVdi = await emptyVdi('data-1', 64 * MiB);
    dataVbd = await attach(vm.id, dataVdi.id, M.VBD_MODE_RW);
    expect(dataVbd.state).toBe(V.VBD_STATE_DETACHED);
    dataVbd = await plug(dataVbd);
    const serial = dataVbd.id.slice(0, 20);
    const disks = await waitFor('the guest to see the new disk', async () => {
      const d = await guestDisks();
      return Object.values(d).includes(serial) && d;
    });
    const dev = Object.keys(disks).find((k) => disks[k] === serial)!;
    expect(dev).toBe(dataVbd.device);
    expect(await shell.run(`echo SIZE=$(cat /sys/block/${dev}/size)`)).toContain(
      `SIZE=${(64 * MiB) / 512}\r`,
    );

    const wrote = await shell.run(
      `printf 'FLOTILLA-MARK-%s\\n' $((40+2)) | dd of=/dev/${dev} bs=512 count=1 conv=sync,fsync; echo RC=$?`,
    );
    expect(wrote).toContain('RC=0');

    await unplug(dataVbd);
    await waitFor(
      'the disk to disappear from the guest',
      async () => !Object.values(await guestDisks()).includes(serial),
    );

    const bytes = await exportRaw(dataVdi.id);
    expect(bytes.length).toBe(64 * MiB);
    expect(bytes.subarray(0, 17).toString()).toBe('FLOTILLA-MARK-42\n');
    expect(bytes.subarray(17, 512).every((b) => b === 0)).toBe(true);
  });

  it('refuses a second VM read-write access to a data disk another VM holds read-write (not sharable)', async () => {
    const other = await tenant.clients.vms.call.createVm(
      vmRequest({
        name: 'disk-2',
        vcpus: 1,
        memoryMib: 256,
        boot: { image: 'demo-disk', kernel: '', initrd: '', cmdline: '' },
        start: false,
      }),
    );
    await done(other.operation);
    expect(await rejection(attach(other.vm!.id, dataVdi.id, M.VBD_MODE_RW))).toMatchObject({
      code: 'FAILED_PRECONDITION',
      message: expect.stringContaining('not sharable'),
    });
    expect((await vbdsOf(other.vm!.id)).map((v) => v.devicePosition)).toEqual([0]);
    await done((await tenant.clients.vms.call.destroyVm({ id: other.vm!.id, requestId: '' })).operation);
  });

  it('hot-plugs a read-only disk: the guest reads it but cannot write to it', async () => {
    const roVdi = await emptyVdi('ro-1', 16 * MiB);
    const roVbd = await plug(await attach(vm.id, roVdi.id, M.VBD_MODE_RO));
    const serial = roVbd.id.slice(0, 20);
    const disks = await waitFor('the guest to see the read-only disk', async () => {
      const d = await guestDisks();
      return Object.values(d).includes(serial) && d;
    });
    const dev = Object.keys(disks).find((k) => disks[k] === serial)!;
    expect(await shell.run(`echo RO=$(cat /sys/block/${dev}/ro)`)).toContain('RO=1\r');
    expect(await shell.run(`dd if=/dev/${dev} of=/dev/null bs=512 count=1; echo RC=$?`)).toContain('RC=0');
    const write = await shell.run(`echo NOPE | dd of=/dev/${dev} bs=512 count=1 conv=sync,fsync; echo RC=$?`);
    expect(write).toMatch(/RC=[1-9]/);
    await unplug(roVbd);
    expect((await exportRaw(roVdi.id)).every((b) => b === 0)).toBe(true);
  });

  it('snapshots a disk of the running VM live: the snapshot holds what the guest wrote before, not after', async () => {
    dataVbd = await plug(dataVbd);
    const serial = dataVbd.id.slice(0, 20);
    const disks = await waitFor('the guest to see the data disk again', async () => {
      const d = await guestDisks();
      return Object.values(d).includes(serial) && d;
    });
    const dev = Object.keys(disks).find((k) => disks[k] === serial)!;
    const writeSector1 = async (text: string) =>
      expect(
        await shell.run(`echo ${text} | dd of=/dev/${dev} bs=512 seek=1 count=1 conv=sync,fsync; echo RC=$?`),
      ).toContain('RC=0');

    await writeSector1('BEFORE-SNAPSHOT');
    // Snapshots need vm-power-admin (as in XAPI); the tenant's token is vm-admin: the pool admin takes them.
    const { snapshot, operation } = await adminVdis.call.snapshotVdi({
      id: dataVdi.id,
      requestId: '',
      name: 'data-1 live',
      labels: {},
    });
    await done(operation, cloud.admin.operations);
    await writeSector1('AFTER-SNAPSHOT');
    // The guest reads its own latest write: it kept writing to the disk's new top file.
    expect(await shell.run(`dd if=/dev/${dev} bs=512 skip=1 count=1 2>/dev/null | head -c 14`)).toContain(
      'AFTER-SNAPSHOT',
    );

    const frozen = await exportRaw(snapshot!.id);
    expect(frozen.subarray(0, 17).toString()).toBe('FLOTILLA-MARK-42\n');
    expect(frozen.subarray(512, 528).toString()).toBe('BEFORE-SNAPSHOT\n');
    expect((await getVdi(dataVdi.id)).parentId).toBe(snapshot!.id);

    // A VM snapshot takes every disk at once (the VM is paused for the moment) and the VM runs on; its
    // snapshot has a read-only VBD per disk of the VM (root, data-1, ro-1), plugged or not.
    const taken = await cloud.admin.vms.call.snapshotVm({
      id: vm.id,
      requestId: '',
      name: '',
      labels: {},
    });
    await done(taken.operation, cloud.admin.operations);
    expect((await getVm(vm.id)).powerState).toBe(P.POWER_STATE_RUNNING);
    expect(await shell.run('echo ALIVE-$((20+22))')).toContain('ALIVE-42');
    const snapVm = await getVm(taken.snapshot!.id);
    expect({ isSnapshot: snapVm.isSnapshot, of: snapVm.snapshotOf }).toEqual({ isSnapshot: true, of: vm.id });
    expect((await vbdsOf(snapVm.id)).map((v) => [v.devicePosition, v.mode])).toEqual([
      [0, M.VBD_MODE_RO],
      [1, M.VBD_MODE_RO],
      [2, M.VBD_MODE_RO],
    ]);
    await done((await tenant.clients.vms.call.destroyVm({ id: snapVm.id, requestId: '' })).operation);

    await unplug(dataVbd);
  });

  it('detaches the disks on shutdown; destroying the VM removes its root disk and keeps the data disk', async () => {
    shell.close();
    await done(
      (
        await tenant.clients.vms.call.shutdownVm({
          id: vm.id,
          requestId: '',
          mode: computeV1.ShutdownMode.SHUTDOWN_MODE_CLEAN,
          timeoutMs: 60_000,
        })
      ).operation,
    );
    expect((await getVm(vm.id)).powerState).toBe(P.POWER_STATE_HALTED);
    expect((await vbdsOf(vm.id)).map((v) => v.state)).toEqual([
      V.VBD_STATE_DETACHED,
      V.VBD_STATE_DETACHED,
      V.VBD_STATE_DETACHED,
    ]);

    await done((await tenant.clients.vms.call.destroyVm({ id: vm.id, requestId: '' })).operation);
    expect(await rejection(vdis.call.getVdi({ id: rootVdi.id }))).toMatchObject({ code: 'NOT_FOUND' });
    const kept = await getVdi(dataVdi.id);
    expect({ state: kept.state, vbds: kept.vbdIds }).toEqual({
      state: storageV1.VdiState.VDI_STATE_READY,
      vbds: [],
    });
    // The snapshots deleted above are coalesced in the background, one operation per step on this disk's
    // chain, each refusing an export meanwhile ("wait for it and retry"): retry, as a user would. A free
    // moment between two steps is no promise that the next has not begun.
    const exported = await waitFor(
      'an export of the data disk once its background coalesce is over',
      async () => {
        try {
          return await exportRaw(dataVdi.id);
        } catch (e) {
          if (isGrpcStatus(e, status.FAILED_PRECONDITION) && /is in progress/.test(e.details ?? ''))
            return undefined;
          throw new GiveUp(e instanceof Error ? e.message : String(e));
        }
      },
      { timeoutMs: 120_000, intervalMs: 200 },
    );
    expect(exported.subarray(0, 17).toString()).toBe('FLOTILLA-MARK-42\n');
  });
});
