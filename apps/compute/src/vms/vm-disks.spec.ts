import * as path from 'node:path';
import { Metadata } from '@grpc/grpc-js';
import { Client } from 'pg';
import { commonV1, computeV1, storageV1 } from '@flotilla/contracts';
import {
  GrpcClient,
  kernelImageRegistration,
  LocalCloud,
  md,
  operationDone,
  quoteIdent,
  rejection,
  startLocalCloud,
  TestTenant,
  testDatabase,
  uniqueSchema,
  vmRequest,
} from '@flotilla/platform';

// Real: gateway, compute, storage and two sim host agents on loopback with real gRPC, the database
// (PGlite and PostgreSQL), SRs and qcow2 VDIs made by the storage service and the agents (qemu-img), the
// DISK image and its linked-clone root disks, compute's calls to VmDiskService on create, start, shutdown
// and destroy. Fake: the hypervisor (sim: it checks the disks it is given and boots none).

const { OperationState: S } = commonV1;
const { PowerState: P } = computeV1;
const { VbdState: V } = storageV1;

describe.each(testDatabase('PGlite'))('VMs with disks on %s', (_db, url) => {
  let cloud: LocalCloud;
  let tenant: TestTenant;
  let hosts: computeV1.Host[];
  let pg: Client;
  let vbds: GrpcClient<storageV1.VbdServiceClient>;
  let sharedSr: string;
  let n = 0;

  const onBehalf = () => {
    const m = new Metadata();
    m.set(md.tenantId, tenant.id);
    m.set(md.role, 'vm-admin');
    return { metadata: m };
  };

  /** Storage clients as a service (pool-admin) or, with onBehalf(), as the tenant's vm-admin. */
  const storage = <C>(service: string) =>
    new GrpcClient<C>({
      address: cloud.storageAddress,
      service,
      staticMetadata: { [md.serviceToken]: cloud.serviceToken },
      defaultDeadlineMs: 60_000,
    });
  let srs: GrpcClient<storageV1.SrServiceClient>;
  let vdis: GrpcClient<storageV1.VdiServiceClient>;
  let storageOps: GrpcClient<commonV1.OperationServiceClient>;
  const succeeded = async (op?: commonV1.Operation) => {
    const finished = await operationDone(storageOps, op!.id, 60_000);
    expect(finished.error?.message ?? '').toBe('');
    return finished;
  };
  /** A real SR under the agents' SR root (both sim agents of a local cloud share it). */
  const sr = async (
    type: 'FILE' | 'SHARED',
    o: { hostId?: string; labels?: Record<string, string> } = {},
  ) => {
    const name = `sr-${++n}`;
    const { sr: made, operation } = await srs.call.createSr({
      requestId: '',
      name,
      description: '',
      labels: o.labels ?? {},
      type: type === 'FILE' ? storageV1.SrType.SR_TYPE_FILE : storageV1.SrType.SR_TYPE_SHARED,
      hostId: o.hostId ?? '',
      path: path.join(path.dirname(cloud.imageDir), 'sr', name),
      tenantId: '',
      overprovisionRatio: 0,
      adoptExisting: false,
    });
    await succeeded(operation);
    return made!.id;
  };
  /** A 16 MiB VDI of the tenant. */
  const vdi = async (srId: string) => {
    const { vdi: made, operation } = await vdis.call.createVdi(
      {
        requestId: '',
        srId,
        name: `disk-${++n}`,
        description: '',
        labels: {},
        virtualSizeBytes: 16 << 20,
        sharable: false,
        image: '',
      },
      onBehalf(),
    );
    await succeeded(operation);
    return made!.id;
  };
  const attachDisk = (vmId: string, vdiId: string) =>
    vbds.call.createVbd(
      {
        requestId: '',
        vmId,
        vdiId,
        type: storageV1.VbdType.VBD_TYPE_DISK,
        mode: storageV1.VbdMode.VBD_MODE_UNSPECIFIED,
        bootable: false,
        labels: {},
        name: '',
      },
      onBehalf(),
    );
  const vbdsOf = async (vmId: string) =>
    (await vbds.call.listVbds({ page: { pageSize: 16, pageToken: '', filter: `vm_id=${vmId}` } }, onBehalf()))
      .vbds;
  const halted = async () => {
    const { vm, operation } = await tenant.clients.vms.call.createVm(
      vmRequest({ name: `disk-vm-${++n}`, start: false }),
    );
    await operationDone(tenant.clients.operations, operation!.id);
    return vm!;
  };
  const run = async (call: Promise<{ operation?: commonV1.Operation }>) =>
    operationDone(tenant.clients.operations, (await call).operation!.id);
  const getVm = async (id: string) => (await tenant.clients.vms.call.getVm({ id })).vm!;

  beforeAll(async () => {
    cloud = await startLocalCloud({ databaseUrl: url, schemaPrefix: uniqueSchema('vmdisks'), agents: 2 });
    hosts = (await cloud.hostsReady()).sort((a, b) => a.name.localeCompare(b.name));
    tenant = await cloud.tenant('disks');
    pg = new Client({ connectionString: url });
    await pg.connect();
    vbds = new GrpcClient({
      address: cloud.storageAddress,
      service: 'flotilla.storage.v1.VbdService',
      staticMetadata: { [md.serviceToken]: cloud.serviceToken },
    });
    srs = storage('flotilla.storage.v1.SrService');
    vdis = storage('flotilla.storage.v1.VdiService');
    storageOps = storage('flotilla.common.v1.OperationService');
    sharedSr = await sr('SHARED', { labels: { 'flotilla.default': 'true' } });
    await cloud.admin.images.call.registerImage(
      kernelImageRegistration('k-disks', {
        minMemoryMib: 0,
        defaultCmdline: '',
        files: { kernel: { path: 'k/vmlinuz', sha256: '' }, initrd: { path: 'k/initrd', sha256: '' } },
      }),
    );
  });
  afterAll(async () => {
    for (const c of [vbds, srs, vdis, storageOps]) c?.close();
    await pg?.end();
    await cloud?.stop();
  });

  describe('CreateVm with root disk fields', () => {
    it.each<[string, { image: string; rootDiskSizeBytes?: number; rootDiskSr?: string }, string, RegExp]>([
      [
        'root_disk_size_bytes with a KERNEL image',
        { rootDiskSizeBytes: 1 << 30, image: 'k-disks' },
        'root_disk_size_bytes',
        /KERNEL image/,
      ],
      [
        'root_disk_sr with a KERNEL image',
        { rootDiskSr: 'sr-1', image: 'k-disks' },
        'root_disk_sr',
        /KERNEL image/,
      ],
      [
        'root_disk_size_bytes without an image',
        { rootDiskSizeBytes: 1 << 30, image: '' },
        'root_disk_size_bytes',
        /DISK image/,
      ],
      [
        'a negative root_disk_size_bytes',
        { rootDiskSizeBytes: -1, image: 'k-disks' },
        'root_disk_size_bytes',
        /out of range/,
      ],
    ])('answers INVALID_ARGUMENT naming the field for %s', async (_case, o, field, message) => {
      const refused = await rejection(
        tenant.clients.vms.call.createVm(
          vmRequest({
            name: `bad-${++n}`,
            boot: { image: o.image, kernel: '', initrd: '', cmdline: '' },
            rootDiskSizeBytes: o.rootDiskSizeBytes ?? 0,
            rootDiskSr: o.rootDiskSr ?? '',
          }),
        ),
      );
      expect(refused).toMatchObject({ code: 'INVALID_ARGUMENT', field });
      expect(refused.message).toMatch(message);
    });

    it('answers NOT_FOUND naming boot.image when root disk fields name an image that does not exist', async () => {
      const refused = await rejection(
        tenant.clients.vms.call.createVm(
          vmRequest({
            name: `bad-${++n}`,
            boot: { image: 'no-such-disk', kernel: '', initrd: '', cmdline: '' },
            rootDiskSizeBytes: 1 << 30,
          }),
        ),
      );
      expect(refused).toMatchObject({ code: 'NOT_FOUND', field: 'boot.image' });
    });
  });

  describe('VMs of a DISK image', () => {
    let image: string;

    beforeAll(async () => {
      const made = await vdis.call.createVdi({
        requestId: '',
        srId: sharedSr,
        name: 'base',
        description: '',
        labels: {},
        virtualSizeBytes: 64 << 20,
        sharable: false,
        image: '',
      });
      await succeeded(made.operation);
      const registered = await cloud.admin.images.call.registerImage({
        requestId: '',
        name: 'disk-demo',
        description: '',
        labels: {},
        visibility: storageV1.ImageVisibility.IMAGE_VISIBILITY_PUBLIC,
        osType: 'linux',
        architecture: 'x86_64',
        minDiskBytes: 0,
        minMemoryMib: 0,
        sha256: '',
        srId: '',
        vdiId: made.vdi!.id,
      });
      await succeeded(registered.operation);
      image = registered.image!.name;
    });

    it('gives the VM a root disk cloned from the image, boots it from that disk, and destroys the disk with the VM', async () => {
      const { vm, operation } = await tenant.clients.vms.call.createVm(
        vmRequest({
          name: `from-disk-${++n}`,
          boot: { image, kernel: '', initrd: '', cmdline: '' },
          rootDiskSizeBytes: 128 << 20,
        }),
      );
      const done = await operationDone(tenant.clients.operations, operation!.id, 60_000);
      expect([done.state, done.error?.message ?? '']).toEqual([S.OPERATION_STATE_SUCCEEDED, '']);
      const running = await getVm(vm!.id);
      expect([running.powerState, running.rootDiskGib]).toEqual([P.POWER_STATE_RUNNING, 1]);
      const [root] = await vbdsOf(vm!.id);
      expect(root).toMatchObject({
        devicePosition: 0,
        bootable: true,
        unpluggable: false,
        mode: storageV1.VbdMode.VBD_MODE_RW,
        state: V.VBD_STATE_ATTACHED,
        hostId: running.hostId,
      });
      const { rows } = await pg.query(
        `SELECT virtual_size_bytes::text AS size, parent_id IS NOT NULL AS linked FROM ${quoteIdent(cloud.schemas.storage)}.vdis WHERE id = $1`,
        [root.vdiId],
      );
      expect(rows).toEqual([{ size: String(128 << 20), linked: true }]);
      expect((await run(tenant.clients.vms.call.destroyVm({ id: vm!.id, requestId: '' }))).state).toBe(
        S.OPERATION_STATE_SUCCEEDED,
      );
      expect(await vbdsOf(vm!.id)).toEqual([]);
      const after = await pg.query(
        // Gone from the API at once (its file is removed by the SR's chain keeper).
        `SELECT id FROM ${quoteIdent(cloud.schemas.storage)}.vdis WHERE id = $1 AND managed`,
        [root.vdiId],
      );
      expect(after.rows).toEqual([]);
    });

    it('fails a create whose root disk cannot be made and leaves no VM behind', async () => {
      const { vm, operation } = await tenant.clients.vms.call.createVm(
        vmRequest({
          name: `no-sr-${++n}`,
          boot: { image, kernel: '', initrd: '', cmdline: '' },
          rootDiskSr: 'no-such-sr',
          start: false,
        }),
      );
      const done = await operationDone(tenant.clients.operations, operation!.id, 60_000);
      expect(done.state).toBe(S.OPERATION_STATE_FAILED);
      expect(done.error).toMatchObject({ code: 5 }); // NOT_FOUND
      expect(done.error!.message).toMatch(/sr "no-such-sr" not found/);
      expect(await rejection(tenant.clients.vms.call.getVm({ id: vm!.id }))).toMatchObject({
        code: 'NOT_FOUND',
      });
      expect(await vbdsOf(vm!.id)).toEqual([]);
    });

    it('answers INVALID_ARGUMENT naming root_disk_size_bytes below the image size', async () => {
      const refused = await rejection(
        tenant.clients.vms.call.createVm(
          vmRequest({
            name: `small-${++n}`,
            boot: { image, kernel: '', initrd: '', cmdline: '' },
            rootDiskSizeBytes: 1 << 20,
          }),
        ),
      );
      expect(refused).toMatchObject({ code: 'INVALID_ARGUMENT', field: 'root_disk_size_bytes' });
    });
  });

  describe('power operations', () => {
    it('attaches the disks on the start host, detaches them at shutdown and releases them at destroy', async () => {
      const vm = await halted();
      const vdiId = await vdi(sharedSr);
      await attachDisk(vm.id, vdiId);
      const started = await run(tenant.clients.vms.call.startVm({ id: vm.id, requestId: '', hostId: '' }));
      expect(started.error?.message ?? '').toBe('');
      const running = await getVm(vm.id);
      expect((await vbdsOf(vm.id)).map((b) => [b.state, b.hostId, b.device])).toEqual([
        [V.VBD_STATE_ATTACHED, running.hostId, 'vda'],
      ]);
      await run(
        tenant.clients.vms.call.shutdownVm({
          id: vm.id,
          requestId: '',
          mode: computeV1.ShutdownMode.SHUTDOWN_MODE_HARD,
          timeoutMs: 0,
        }),
      );
      expect((await vbdsOf(vm.id)).map((b) => [b.state, b.hostId])).toEqual([[V.VBD_STATE_DETACHED, '']]);
      expect((await run(tenant.clients.vms.call.destroyVm({ id: vm.id, requestId: '' }))).state).toBe(
        S.OPERATION_STATE_SUCCEEDED,
      );
      expect(await vbdsOf(vm.id)).toEqual([]);
      // The VDI was not provisioned with the VM: it stays.
      const { rows } = await pg.query(
        `SELECT state FROM ${quoteIdent(cloud.schemas.storage)}.vdis WHERE id = $1`,
        [vdiId],
      );
      expect(rows).toEqual([{ state: 'READY' }]);
    });

    it('runs a VM whose disk is on a FILE SR on that SR’s host, and refuses a start pinned elsewhere', async () => {
      const onSecond = await sr('FILE', { hostId: hosts[1].id });
      for (let i = 0; i < 3; i++) {
        const vm = await halted();
        await attachDisk(vm.id, await vdi(onSecond));
        expect(
          (await run(tenant.clients.vms.call.startVm({ id: vm.id, requestId: '', hostId: '' }))).state,
        ).toBe(S.OPERATION_STATE_SUCCEEDED);
        expect((await getVm(vm.id)).hostId).toBe(hosts[1].id);
      }
      const pinned = await halted();
      await attachDisk(pinned.id, await vdi(onSecond));
      const done = await operationDone(
        cloud.admin.operations,
        (await cloud.admin.vms.call.startVm({ id: pinned.id, requestId: '', hostId: hosts[0].id })).operation!
          .id,
      );
      expect(done.state).toBe(S.OPERATION_STATE_FAILED);
      expect(done.error).toMatchObject({ code: 9 }); // FAILED_PRECONDITION
      expect(done.error!.message).toMatch(/FILE SR/);
      expect((await getVm(pinned.id)).powerState).toBe(P.POWER_STATE_HALTED);
    });

    it('fails a start whose disk cannot be attached, leaving the VM HALTED on no host and its disks DETACHED', async () => {
      const vm = await halted();
      const vdiId = await vdi(sharedSr);
      await attachDisk(vm.id, vdiId);
      await pg.query(`UPDATE ${quoteIdent(cloud.schemas.storage)}.vdis SET state = 'MISSING' WHERE id = $1`, [
        vdiId,
      ]);
      const done = await run(tenant.clients.vms.call.startVm({ id: vm.id, requestId: '', hostId: '' }));
      expect(done.state).toBe(S.OPERATION_STATE_FAILED);
      expect(done.error!.message).toMatch(/attaching the disks: .*MISSING/);
      const after = await getVm(vm.id);
      expect([after.powerState, after.hostId, after.currentOperationId]).toEqual([
        P.POWER_STATE_HALTED,
        '',
        '',
      ]);
      expect((await vbdsOf(vm.id)).map((b) => b.state)).toEqual([V.VBD_STATE_DETACHED]);
      const hostsNow = await cloud.admin.hosts.call.listHosts({
        page: { pageSize: 10, pageToken: '', filter: '' },
      });
      expect(hostsNow.hosts.every((h) => h.vmCount >= 0)).toBe(true);
    });
  });
});
