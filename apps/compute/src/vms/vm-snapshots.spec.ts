import { execFileSync, spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { Metadata } from '@grpc/grpc-js';
import { Client } from 'pg';
import { commonV1, computeV1, gatewayV1, storageV1 } from '@flotilla/contracts';
import {
  GrpcClient,
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
  waitFor,
} from '@flotilla/platform';

// Real: gateway, compute, storage and a sim host agent on loopback with real gRPC, the database (PGlite and
// PostgreSQL), a SHARED SR and qcow2 VDIs made by storage and the agent (qemu-img), the disk snapshots,
// linked clones, reverts and chain coalescing behind VM snapshots; the bytes are written and read with
// qemu-io on the VDIs' files. Fake: the hypervisor (sim: it boots nothing and has no live snapshots).

const { OperationState: S } = commonV1;
const { PowerState: P, VmOperation: O } = computeV1;

describe.each(testDatabase('PGlite'))('VM snapshots on %s', (_db, url) => {
  jest.setTimeout(120_000);
  let cloud: LocalCloud;
  let tenant: TestTenant;
  let pg: Client;
  let srs: GrpcClient<storageV1.SrServiceClient>;
  let vdis: GrpcClient<storageV1.VdiServiceClient>;
  let vbds: GrpcClient<storageV1.VbdServiceClient>;
  let storageOps: GrpcClient<commonV1.OperationServiceClient>;
  let srId: string;
  let n = 0;

  const onBehalf = () => {
    const m = new Metadata();
    m.set(md.tenantId, tenant.id);
    m.set(md.role, 'vm-admin');
    return { metadata: m };
  };
  const storage = <C>(service: string) =>
    new GrpcClient<C>({
      address: cloud.storageAddress,
      service,
      staticMetadata: { [md.serviceToken]: cloud.serviceToken },
      defaultDeadlineMs: 60_000,
    });
  const storageDone = async (op?: commonV1.Operation) => {
    const finished = await operationDone(storageOps, op!.id, 60_000);
    expect(finished.error?.message ?? '').toBe('');
  };
  const vms = () => tenant.clients.vms.call;
  const done = (op?: commonV1.Operation) => operationDone(tenant.clients.operations, op!.id, 60_000);
  const succeeded = async (op?: commonV1.Operation) => {
    const finished = await done(op);
    expect([finished.state, finished.error?.message ?? '']).toEqual([S.OPERATION_STATE_SUCCEEDED, '']);
    return finished;
  };
  const getVm = async (id: string) => (await vms().getVm({ id })).vm!;
  const list = async (filter: string) =>
    (await vms().listVms({ page: { pageSize: 100, pageToken: '', filter } })).vms.map((v) => v.name).sort();
  const vbdsOf = async (vmId: string) =>
    (await vbds.call.listVbds({ page: { pageSize: 16, pageToken: '', filter: `vm_id=${vmId}` } }, onBehalf()))
      .vbds;
  const table = (t: string) => `${quoteIdent(cloud.schemas.storage)}.${t}`;
  const vdiRow = async (id: string) =>
    (
      await pg.query(
        `SELECT d.id, d.parent_id, d.is_snapshot, d.snapshot_of, d.managed, d.state, s.path, d.file
           FROM ${table('vdis')} d JOIN ${table('srs')} s ON s.id = d.sr_id WHERE d.id = $1`,
        [id],
      )
    ).rows[0] as
      | {
          id: string;
          parent_id: string | null;
          is_snapshot: boolean;
          snapshot_of: string | null;
          managed: boolean;
          path: string;
          file: string;
        }
      | undefined;
  const fileOf = async (vdiId: string) => {
    const row = await vdiRow(vdiId);
    return path.join(row!.path, row!.file);
  };
  /** Writes `pattern` over the first 64 KiB of the VDI's current top (the guest's view of the disk). */
  const write = async (vdiId: string, pattern: number) =>
    execFileSync('qemu-io', ['-f', 'qcow2', '-c', `write -P ${pattern} 0 64k`, await fileOf(vdiId)]);
  /** Whether the disk reads `pattern` over its first 64 KiB, through its whole backing chain. */
  const reads = async (vdiId: string, pattern: number) => {
    const file = await fileOf(vdiId);
    const r = spawnSync('qemu-io', ['-r', '-f', 'qcow2', '-c', `read -P ${pattern} 0 64k`, file]);
    if (r.error) throw r.error;
    return r.status === 0 && !String(r.stdout).includes('Pattern verification failed');
  };

  const disk = async () => {
    const { vdi, operation } = await vdis.call.createVdi(
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
    await storageDone(operation);
    return vdi!.id;
  };
  /** A HALTED VM with `disks` fresh VDIs at positions 0.. (the first bootable). */
  const haltedVm = async (disks: number) => {
    const { vm, operation } = await vms().createVm(vmRequest({ name: `snap-vm-${++n}`, start: false }));
    await succeeded(operation);
    const vdiIds: string[] = [];
    for (let i = 0; i < disks; i++) {
      const vdiId = await disk();
      await vbds.call.createVbd(
        {
          requestId: '',
          vmId: vm!.id,
          vdiId,
          type: storageV1.VbdType.VBD_TYPE_DISK,
          mode: storageV1.VbdMode.VBD_MODE_UNSPECIFIED,
          bootable: i === 0,
          labels: {},
          name: `d${i}`,
        },
        onBehalf(),
      );
      vdiIds.push(vdiId);
    }
    return { vm: vm!, vdiIds };
  };
  const snapshot = async (vmId: string, name = '') => {
    const res = await vms().snapshotVm({ id: vmId, requestId: '', name, labels: {} });
    const finished = await succeeded(res.operation);
    expect(finished.result.snapshot_id).toBe(res.snapshot!.id);
    return getVm(res.snapshot!.id);
  };
  const clone = async (snapshotId: string) => {
    const res = await vms().cloneVm({ snapshotId, requestId: '', name: `clone-${++n}`, labels: {} });
    await succeeded(res.operation);
    return getVm(res.vm!.id);
  };
  const destroy = async (id: string) => succeeded((await vms().destroyVm({ id, requestId: '' })).operation);

  beforeAll(async () => {
    cloud = await startLocalCloud({ databaseUrl: url, schemaPrefix: uniqueSchema('vmsnaps'), agents: 1 });
    await cloud.hostsReady();
    tenant = await cloud.tenant('snaps', gatewayV1.Role.ROLE_VM_POWER_ADMIN);
    pg = new Client({ connectionString: url });
    await pg.connect();
    srs = storage('flotilla.storage.v1.SrService');
    vdis = storage('flotilla.storage.v1.VdiService');
    vbds = storage('flotilla.storage.v1.VbdService');
    storageOps = storage('flotilla.common.v1.OperationService');
    const { sr, operation } = await srs.call.createSr({
      requestId: '',
      name: 'snap-sr',
      description: '',
      labels: { 'flotilla.default': 'true' },
      type: storageV1.SrType.SR_TYPE_SHARED,
      hostId: '',
      path: path.join(path.dirname(cloud.imageDir), 'sr', 'snap-sr'),
      tenantId: '',
      overprovisionRatio: 0,
      adoptExisting: false,
    });
    await storageDone(operation);
    srId = sr!.id;
  });
  afterAll(async () => {
    for (const c of [srs, vdis, vbds, storageOps]) c?.close();
    await pg?.end();
    await cloud?.stop();
  });

  it('snapshots a halted VM with two disks into a snapshot VM whose VBDs point at snapshots of each disk', async () => {
    const { vm, vdiIds } = await haltedVm(2);
    const snap = await snapshot(vm.id, `${vm.name}.before`);
    expect(snap).toMatchObject({
      name: `${vm.name}.before`,
      isSnapshot: true,
      snapshotOf: vm.id,
      powerState: P.POWER_STATE_HALTED,
      vcpus: vm.vcpus,
      memoryMib: vm.memoryMib,
      allowedOperations: [O.VM_OPERATION_CLONE, O.VM_OPERATION_DESTROY],
      currentOperationId: '',
    });
    expect(snap.snapshotTime!.getTime()).toBeGreaterThan(vm.createdAt!.getTime());
    expect(snap.nics.map((x) => x.mac)).toEqual(vm.nics.map((x) => x.mac));
    const taken = await vbdsOf(snap.id);
    expect(taken.map((b) => [b.devicePosition, b.mode, b.bootable])).toEqual([
      [0, storageV1.VbdMode.VBD_MODE_RO, true],
      [1, storageV1.VbdMode.VBD_MODE_RO, false],
    ]);
    const rows = await Promise.all(taken.map((b) => vdiRow(b.vdiId)));
    expect(rows.map((r) => [r!.is_snapshot, r!.snapshot_of])).toEqual(vdiIds.map((id) => [true, id]));
    // The VM is free again and keeps its own disks.
    expect((await getVm(vm.id)).currentOperationId).toBe('');
    expect((await vbdsOf(vm.id)).map((b) => b.vdiId)).toEqual(vdiIds);
  });

  it('lists snapshots only when asked for (is_snapshot=true or snapshot_of)', async () => {
    const { vm } = await haltedVm(0);
    const snap = await snapshot(vm.id);
    expect(snap.name).toMatch(new RegExp(`^${vm.name}\\.snap-\\d{8}T\\d{9}Z$`));
    expect(await list('')).not.toContain(snap.name);
    expect(await list('')).toContain(vm.name);
    expect(await list(`snapshot_of=${vm.id}`)).toEqual([snap.name]);
    expect(await list('is_snapshot=true')).toContain(snap.name);
  });

  it('clones a snapshot into a halted VM whose disks hold the bytes from before the snapshot, and reverts the VM to them', async () => {
    const { vm, vdiIds } = await haltedVm(2);
    for (const id of vdiIds) await write(id, 0x11);
    const snap = await snapshot(vm.id);
    for (const id of vdiIds) await write(id, 0x22);

    const copy = await clone(snap.id);
    expect(copy).toMatchObject({ isSnapshot: false, snapshotOf: '', powerState: P.POWER_STATE_HALTED });
    expect(copy.allowedOperations).toContain(O.VM_OPERATION_START);
    expect(copy.nics[0].mac).not.toBe(vm.nics[0].mac);
    const cloned = await vbdsOf(copy.id);
    expect(cloned.map((b) => [b.devicePosition, b.mode, b.bootable])).toEqual([
      [0, storageV1.VbdMode.VBD_MODE_RW, true],
      [1, storageV1.VbdMode.VBD_MODE_RW, false],
    ]);
    for (const b of cloned)
      expect([await reads(b.vdiId, 0x11), await reads(b.vdiId, 0x22)]).toEqual([true, false]);
    for (const id of vdiIds) expect([await reads(id, 0x22), await reads(id, 0x11)]).toEqual([true, false]);

    // The VM's sizing changed since (as an operator would have): the revert restores it.
    await pg.query(`UPDATE ${quoteIdent(cloud.schemas.compute)}.vms SET vcpus = 2 WHERE id = $1`, [vm.id]);
    await succeeded((await vms().revertVm({ id: vm.id, requestId: '', snapshotId: snap.id })).operation);
    for (const id of vdiIds) expect([await reads(id, 0x11), await reads(id, 0x22)]).toEqual([true, false]);
    const reverted = await getVm(vm.id);
    expect([reverted.vcpus, reverted.powerState, reverted.currentOperationId]).toEqual([
      vm.vcpus,
      P.POWER_STATE_HALTED,
      '',
    ]);
    // The clone is its own disk: the revert did not touch it.
    await write(cloned[0].vdiId, 0x33);
    expect(await reads(vdiIds[0], 0x11)).toBe(true);
  });

  it('destroys the disk snapshots with the VM snapshot and coalesces the chains back to one file per disk', async () => {
    const { vm, vdiIds } = await haltedVm(2);
    await write(vdiIds[0], 0x44);
    const snap = await snapshot(vm.id);
    const snapVdis = (await vbdsOf(snap.id)).map((b) => b.vdiId);
    await write(vdiIds[0], 0x55);
    expect((await vdiRow(vdiIds[0]))!.parent_id).toBe(snapVdis[0]);
    await destroy(snap.id);
    expect(await rejection(vms().getVm({ id: snap.id }))).toMatchObject({ code: 'NOT_FOUND' });
    expect(await vbdsOf(snap.id)).toEqual([]);
    // The chain keeper merges each hidden snapshot into its one child: no chain grows with snapshots.
    await waitFor(
      'the chains of both disks coalesced',
      async () => {
        const rows = await Promise.all(vdiIds.map(vdiRow));
        return (
          rows.every((r) => r!.parent_id === null) &&
          (await Promise.all(snapVdis.map(vdiRow))).every((r) => !r)
        );
      },
      { timeoutMs: 60_000, intervalMs: 250 },
    );
    expect(await reads(vdiIds[0], 0x55)).toBe(true);
    expect((await getVm(vm.id)).powerState).toBe(P.POWER_STATE_HALTED);
  });

  describe('refusals', () => {
    it('refuses a snapshot of a snapshot with FAILED_PRECONDITION saying it is a snapshot', async () => {
      const { vm } = await haltedVm(0);
      const snap = await snapshot(vm.id);
      const refused = await rejection(vms().snapshotVm({ id: snap.id, requestId: '', name: '', labels: {} }));
      expect(refused).toMatchObject({ code: 'FAILED_PRECONDITION' });
      expect(refused.message).toMatch(/is a snapshot: SNAPSHOT is not allowed/);
    });

    it('refuses to start a snapshot', async () => {
      const { vm } = await haltedVm(0);
      const snap = await snapshot(vm.id);
      const refused = await rejection(vms().startVm({ id: snap.id, requestId: '', hostId: '' }));
      expect(refused).toMatchObject({ code: 'FAILED_PRECONDITION' });
      expect(refused.message).toMatch(/is a snapshot: START is not allowed/);
    });

    it('refuses a revert to a snapshot of another VM with INVALID_ARGUMENT naming snapshot_id', async () => {
      const a = await haltedVm(0);
      const b = await haltedVm(0);
      const snapOfB = await snapshot(b.vm.id);
      const refused = await rejection(vms().revertVm({ id: a.vm.id, requestId: '', snapshotId: snapOfB.id }));
      expect(refused).toMatchObject({ code: 'INVALID_ARGUMENT', field: 'snapshot_id' });
      expect(refused.message).toMatch(/is not a snapshot of vm/);
    });

    it('refuses a revert of a running VM with FAILED_PRECONDITION naming its power state', async () => {
      const { vm } = await haltedVm(0);
      const snap = await snapshot(vm.id);
      await succeeded((await vms().startVm({ id: vm.id, requestId: '', hostId: '' })).operation);
      const refused = await rejection(vms().revertVm({ id: vm.id, requestId: '', snapshotId: snap.id }));
      expect(refused).toMatchObject({ code: 'FAILED_PRECONDITION' });
      expect(refused.message).toMatch(/is RUNNING: REVERT is not allowed/);
    });

    it('refuses to clone a VM that is not a snapshot, and a clone name already taken', async () => {
      const { vm } = await haltedVm(0);
      const notSnap = await rejection(
        vms().cloneVm({ snapshotId: vm.id, requestId: '', name: `c-${++n}`, labels: {} }),
      );
      expect(notSnap).toMatchObject({ code: 'FAILED_PRECONDITION', field: 'snapshot_id' });
      const snap = await snapshot(vm.id);
      const taken = await rejection(
        vms().cloneVm({ snapshotId: snap.id, requestId: '', name: vm.name, labels: {} }),
      );
      expect(taken).toMatchObject({ code: 'ALREADY_EXISTS', field: 'name' });
    });

    it('rolls a failed snapshot back: no snapshot VM, no disk snapshot, the running VM unpaused', async () => {
      // The sim driver has no live disk snapshots: the snapshot of a running VM with a disk fails there.
      const { vm, vdiIds } = await haltedVm(1);
      await succeeded((await vms().startVm({ id: vm.id, requestId: '', hostId: '' })).operation);
      const res = await vms().snapshotVm({ id: vm.id, requestId: '', name: '', labels: {} });
      const failed = await done(res.operation);
      expect(failed.state).toBe(S.OPERATION_STATE_FAILED);
      expect(failed.error!.message).toMatch(/snapshotting the disks/);
      expect(await rejection(vms().getVm({ id: res.snapshot!.id }))).toMatchObject({ code: 'NOT_FOUND' });
      expect(await list(`snapshot_of=${vm.id}`)).toEqual([]);
      // The disk snapshot the failed operation recorded is rolled back by storage's chain keeper.
      await waitFor(
        'the disk snapshot rolled back',
        async () =>
          (await pg.query(`SELECT id FROM ${table('vdis')} WHERE snapshot_of = $1`, [vdiIds[0]])).rows
            .length === 0,
        { timeoutMs: 30_000, intervalMs: 250 },
      );
      expect((await vdiRow(vdiIds[0]))!.parent_id).toBeNull();
      const after = await getVm(vm.id);
      expect([after.powerState, after.currentOperationId]).toEqual([P.POWER_STATE_RUNNING, '']);
    });
  });
});
