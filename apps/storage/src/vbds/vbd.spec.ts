import { randomUUID } from 'node:crypto';
import { Metadata } from '@grpc/grpc-js';
import { Client } from 'pg';
import { commonV1, computeV1, storageV1 } from '@flotilla/contracts';
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
} from '@flotilla/platform';

// Real: compute, storage, gateway and two sim host agents on loopback with real gRPC, the database
// (PGlite and PostgreSQL), the VBD rules and their unique indexes. Fake: the hypervisor (sim: no disks, so
// hot-plug answers UNIMPLEMENTED) and the SR and VDI records, inserted directly as the VDI service would
// leave them (that service has its own suite); no disk file is opened.

const { VbdMode: Mode, VbdState: State, VbdType: Type } = storageV1;
const { OperationState: S } = commonV1;

interface Fixture {
  sr(o: { type: 'FILE' | 'SHARED'; hostId?: string; seenBy?: string[] }): Promise<string>;
  vdi(o: {
    srId: string;
    tenantId: string;
    readOnly?: boolean;
    sharable?: boolean;
    state?: string;
  }): Promise<string>;
  close(): Promise<void>;
}

async function fixture(url: string, schema: string): Promise<Fixture> {
  const pg = new Client({ connectionString: url });
  await pg.connect();
  const s = quoteIdent(schema);
  let n = 0;
  return {
    async sr({ type, hostId, seenBy = [] }) {
      const id = randomUUID();
      const hosts = (type === 'FILE' ? [hostId!] : seenBy).map((h) => ({
        hostId: h,
        attached: true,
        reason: '',
      }));
      await pg.query(
        `INSERT INTO ${s}.srs (id, name, tenant_id, labels, description, type, host_id, path, state, state_reason,
           capacity_bytes, free_bytes, physical_utilisation_bytes, overprovision_ratio, hosts, created_directory,
           request_tenant_id, version)
         VALUES ($1, $2, '', '{}', '', $3, $4, $5, 'AVAILABLE', '', 0, 0, 0, 0, $6, false, '', 1)`,
        [id, `sr-${++n}`, type, hostId ?? null, `/srv/flotilla/sr-${n}`, JSON.stringify(hosts)],
      );
      return id;
    },
    async vdi({ srId, tenantId, readOnly = false, sharable = false, state = 'READY' }) {
      const id = randomUUID();
      await pg.query(
        `INSERT INTO ${s}.vdis (id, name, tenant_id, labels, description, sr_id, state, state_reason,
           virtual_size_bytes, physical_utilisation_bytes, file, is_snapshot, read_only, sharable, managed,
           image_base, reserved_physical_bytes, request_tenant_id, version)
         VALUES ($1, $2, $3, '{}', '', $4, $5, '', 1073741824, 0, $6, false, $7, $8, true, false, 0, '', 1)`,
        [id, `disk-${++n}`, tenantId, srId, state, `${id}.qcow2`, readOnly, sharable],
      );
      return id;
    },
    close: () => pg.end(),
  };
}

describe.each(testDatabase('PostgreSQL'))('VBDs on %s', (_db, url) => {
  let cloud: LocalCloud;
  let tenant: TestTenant;
  let other: TestTenant;
  let f: Fixture;
  let hosts: computeV1.Host[];
  let shared: string;
  let vbds: GrpcClient<storageV1.VbdServiceClient>;
  let vmDisks: GrpcClient<storageV1.VmDiskServiceClient>;
  let operations: GrpcClient<commonV1.OperationServiceClient>;
  let n = 0;

  /** What the gateway sends on behalf of a tenant's vm-admin. */
  const as = (t: TestTenant, role = 'vm-admin') => {
    const m = new Metadata();
    m.set(md.tenantId, t.id);
    m.set(md.role, role);
    return { metadata: m };
  };

  beforeAll(async () => {
    cloud = await startLocalCloud({
      databaseUrl: url,
      schemaPrefix: uniqueSchema('vbds'),
      agents: 2,
    });
    hosts = (await cloud.hostsReady()).sort((a, b) => a.name.localeCompare(b.name));
    tenant = await cloud.tenant('vbd-owner');
    other = await cloud.tenant('vbd-other');
    f = await fixture(url, cloud.schemas.storage);
    shared = await f.sr({ type: 'SHARED', seenBy: hosts.map((h) => h.id) });
    const client = <C>(service: string) =>
      new GrpcClient<C>({
        address: cloud.storageAddress,
        service: `flotilla.storage.v1.${service}`,
        staticMetadata: { [md.serviceToken]: cloud.serviceToken },
      });
    vbds = client('VbdService');
    vmDisks = client('VmDiskService');
    operations = new GrpcClient({
      address: cloud.storageAddress,
      service: 'flotilla.common.v1.OperationService',
      staticMetadata: { [md.serviceToken]: cloud.serviceToken },
    });
  });
  afterAll(async () => {
    for (const c of [vbds, vmDisks, operations]) c?.close();
    await f?.close();
    await cloud?.stop();
  });

  const vm = async (o: { start?: boolean; of?: TestTenant } = {}) => {
    const t = o.of ?? tenant;
    const { vm: created, operation } = await t.clients.vms.call.createVm(
      vmRequest({ name: `vbd-vm-${++n}`, start: o.start ?? false }),
    );
    expect((await operationDone(t.clients.operations, operation!.id)).state).toBe(
      S.OPERATION_STATE_SUCCEEDED,
    );
    return created!;
  };
  const disk = (o: { readOnly?: boolean; sharable?: boolean; state?: string; srId?: string } = {}) =>
    f.vdi({ srId: o.srId ?? shared, tenantId: tenant.id, ...o });
  const create = (fields: Partial<storageV1.CreateVbdRequest>, t: TestTenant = tenant) =>
    vbds.call.createVbd(
      {
        requestId: '',
        vmId: '',
        vdiId: '',
        type: Type.VBD_TYPE_UNSPECIFIED,
        mode: Mode.VBD_MODE_UNSPECIFIED,
        bootable: false,
        labels: {},
        name: '',
        ...fields,
      },
      as(t),
    );
  const list = async (filter: string, t: TestTenant = tenant) =>
    (await vbds.call.listVbds({ page: { pageSize: 100, pageToken: '', filter } }, as(t))).vbds;

  describe('CreateVbd', () => {
    it('puts a disk at the lowest free position, RW for a writable VDI, DETACHED and unpluggable except at 0', async () => {
      const v = await vm();
      const first = (await create({ vmId: v.id, vdiId: await disk() })).vbd!;
      const second = (await create({ vmId: v.id, vdiId: await disk(), devicePosition: 2 })).vbd!;
      const third = (await create({ vmId: v.id, vdiId: await disk() })).vbd!;
      expect([first, second, third].map((b) => [b.devicePosition, b.mode, b.state, b.unpluggable])).toEqual([
        [0, Mode.VBD_MODE_RW, State.VBD_STATE_DETACHED, false],
        [2, Mode.VBD_MODE_RW, State.VBD_STATE_DETACHED, true],
        [1, Mode.VBD_MODE_RW, State.VBD_STATE_DETACHED, true],
      ]);
      expect(first).toMatchObject({ tenantId: tenant.id, vmId: v.id, type: Type.VBD_TYPE_DISK, device: '' });
      expect(first.allowedOperations).toEqual([
        storageV1.VbdOperation.VBD_OPERATION_PLUG,
        storageV1.VbdOperation.VBD_OPERATION_DESTROY,
      ]);
      expect((await list(`vm_id=${v.id}`)).map((b) => b.devicePosition)).toEqual([0, 1, 2]);
      expect((await list(`vdi_id=${second.vdiId}`)).map((b) => b.id)).toEqual([second.id]);
      expect((await vbds.call.getVbd({ id: third.id }, as(tenant))).vbd!.id).toBe(third.id);
    });

    it('attaches a read-only VDI RO by default and refuses RW on it with FAILED_PRECONDITION', async () => {
      const v = await vm();
      const ro = await disk({ readOnly: true });
      expect((await create({ vmId: v.id, vdiId: ro })).vbd!.mode).toBe(Mode.VBD_MODE_RO);
      const refused = await rejection(create({ vmId: v.id, vdiId: ro, mode: Mode.VBD_MODE_RW }));
      expect(refused).toMatchObject({ code: 'FAILED_PRECONDITION', field: 'mode' });
      expect(refused.message).toMatch(/read-only/);
    });

    it('refuses a second RW writer of a VDI that is not sharable, and allows RO readers and sharable VDIs', async () => {
      const [a, b] = [await vm(), await vm()];
      const vdi = await disk();
      await create({ vmId: a.id, vdiId: vdi });
      const refused = await rejection(create({ vmId: b.id, vdiId: vdi, mode: Mode.VBD_MODE_RW }));
      expect(refused).toMatchObject({ code: 'FAILED_PRECONDITION' });
      expect(refused.message).toMatch(/already attached read-write to vm .* not sharable/);
      expect((await create({ vmId: b.id, vdiId: vdi, mode: Mode.VBD_MODE_RO })).vbd!.mode).toBe(
        Mode.VBD_MODE_RO,
      );
      const cluster = await disk({ sharable: true });
      await create({ vmId: a.id, vdiId: cluster });
      expect((await create({ vmId: b.id, vdiId: cluster })).vbd!.mode).toBe(Mode.VBD_MODE_RW);
    });

    it('lets exactly one of many concurrent RW creates on one VDI win (decided by the database)', async () => {
      const vms = await Promise.all(Array.from({ length: 6 }, () => vm()));
      const vdi = await disk();
      const results = await Promise.allSettled(vms.map((v) => create({ vmId: v.id, vdiId: vdi })));
      expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(1);
      expect(await list(`vdi_id=${vdi}`)).toHaveLength(1);
    });

    it('gives concurrent creates without a position distinct positions', async () => {
      const v = await vm();
      const made = await Promise.all(
        Array.from({ length: 5 }, async () => (await create({ vmId: v.id, vdiId: await disk() })).vbd!),
      );
      expect(made.map((b) => b.devicePosition).sort()).toEqual([0, 1, 2, 3, 4]);
    });

    it('answers ALREADY_EXISTS for a taken position and INVALID_ARGUMENT naming device_position out of 0..15', async () => {
      const v = await vm();
      await create({ vmId: v.id, vdiId: await disk(), devicePosition: 3 });
      expect(await rejection(create({ vmId: v.id, vdiId: await disk(), devicePosition: 3 }))).toMatchObject({
        code: 'ALREADY_EXISTS',
        field: 'device_position',
      });
      const out = await rejection(create({ vmId: v.id, vdiId: await disk(), devicePosition: 16 }));
      expect(out).toMatchObject({ code: 'INVALID_ARGUMENT', field: 'device_position' });
      expect(out.message).toMatch(/0\.\.15/);
    });

    it.each([
      ['vm_id missing', { vmId: '' }, 'vm_id'],
      ['vm_id not a UUID', { vmId: 'my-vm' }, 'vm_id'],
      ['vdi_id missing for a disk', { vdiId: '' }, 'vdi_id'],
      ['RW on a CD-ROM', { type: Type.VBD_TYPE_CDROM, mode: Mode.VBD_MODE_RW }, 'mode'],
      ['a name too long', { name: 'x'.repeat(256) }, 'name'],
    ])('answers INVALID_ARGUMENT naming the field for %s', async (_case, fields, field) => {
      const v = await vm();
      const vdiId = await disk();
      expect(await rejection(create({ vmId: v.id, vdiId, ...fields }))).toMatchObject({
        code: 'INVALID_ARGUMENT',
        field,
      });
    });

    it("answers NOT_FOUND for another tenant's VM and VDI, and for a VDI that does not exist", async () => {
      const theirs = await vm({ of: other });
      expect(await rejection(create({ vmId: theirs.id, vdiId: await disk() }))).toMatchObject({
        code: 'NOT_FOUND',
        field: 'vm_id',
      });
      const mine = await vm();
      const theirDisk = await f.vdi({ srId: shared, tenantId: other.id });
      expect(await rejection(create({ vmId: mine.id, vdiId: theirDisk }))).toMatchObject({
        code: 'NOT_FOUND',
        field: 'vdi_id',
      });
      expect(await rejection(create({ vmId: mine.id, vdiId: randomUUID() }))).toMatchObject({
        code: 'NOT_FOUND',
        field: 'vdi_id',
      });
    });

    it('refuses a VDI that is not READY with FAILED_PRECONDITION', async () => {
      const v = await vm();
      const refused = await rejection(create({ vmId: v.id, vdiId: await disk({ state: 'CREATING' }) }));
      expect(refused).toMatchObject({ code: 'FAILED_PRECONDITION', field: 'vdi_id' });
      expect(refused.message).toMatch(/CREATING/);
    });

    it('refuses a disk on a FILE SR of another host than the one the VM is bound to', async () => {
      const v = await vm();
      const [onFirst, onSecond] = [
        await f.sr({ type: 'FILE', hostId: hosts[0].id }),
        await f.sr({ type: 'FILE', hostId: hosts[1].id }),
      ];
      await create({ vmId: v.id, vdiId: await disk({ srId: onFirst }) });
      const refused = await rejection(create({ vmId: v.id, vdiId: await disk({ srId: onSecond }) }));
      expect(refused).toMatchObject({ code: 'FAILED_PRECONDITION', field: 'vdi_id' });
      expect(refused.message).toMatch(/FILE SR/);
    });

    it('returns the first VBD for a repeated request_id', async () => {
      const v = await vm();
      const vdiId = await disk();
      const first = (await create({ vmId: v.id, vdiId, requestId: 'vbd-once' })).vbd!;
      const again = (await create({ vmId: v.id, vdiId, requestId: 'vbd-once' })).vbd!;
      expect(again.id).toBe(first.id);
    });

    it('answers PERMISSION_DENIED to a read-only token', async () => {
      const v = await vm();
      const m = as(tenant, 'read-only');
      const req = {
        requestId: '',
        vmId: v.id,
        vdiId: await disk(),
        type: Type.VBD_TYPE_DISK,
        mode: Mode.VBD_MODE_RW,
        bootable: false,
        labels: {},
        name: '',
      };
      expect(await rejection(vbds.call.createVbd(req, m))).toMatchObject({ code: 'PERMISSION_DENIED' });
    });
  });

  describe('reads and DestroyVbd', () => {
    it("answers NOT_FOUND for another tenant's VBD and never lists it", async () => {
      const v = await vm();
      const mine = (await create({ vmId: v.id, vdiId: await disk() })).vbd!;
      expect(await rejection(vbds.call.getVbd({ id: mine.id }, as(other)))).toMatchObject({
        code: 'NOT_FOUND',
      });
      expect(await list(`vm_id=${v.id}`, other)).toEqual([]);
    });

    it('refuses to destroy an ATTACHED VBD, and destroys a DETACHED one (the VDI stays)', async () => {
      const v = await vm();
      const vdiId = await disk();
      const vbd = (await create({ vmId: v.id, vdiId })).vbd!;
      await vmDisks.call.attachVmDisks({ vmId: v.id, hostId: hosts[0].id });
      const refused = await rejection(vbds.call.destroyVbd({ id: vbd.id, etag: '' }, as(tenant)));
      expect(refused).toMatchObject({ code: 'FAILED_PRECONDITION' });
      expect(refused.message).toMatch(/ATTACHED/);
      await vmDisks.call.detachVmDisks({ vmId: v.id, hostId: hosts[0].id });
      expect(await rejection(vbds.call.destroyVbd({ id: vbd.id, etag: '999' }, as(tenant)))).toMatchObject({
        code: 'ABORTED',
      });
      await vbds.call.destroyVbd({ id: vbd.id, etag: '' }, as(tenant));
      expect(await rejection(vbds.call.getVbd({ id: vbd.id }, as(tenant)))).toMatchObject({
        code: 'NOT_FOUND',
      });
      // The VDI is free for a new writer.
      expect((await create({ vmId: v.id, vdiId })).vbd!.mode).toBe(Mode.VBD_MODE_RW);
    });
  });

  describe('PlugVbd and UnplugVbd', () => {
    it('fails the plug operation with FAILED_PRECONDITION on a sim host and leaves the VBD DETACHED', async () => {
      const v = await vm({ start: true });
      const vbd = (await create({ vmId: v.id, vdiId: await disk() })).vbd!;
      const { operation } = await vbds.call.plugVbd({ id: vbd.id, requestId: '', etag: '' }, as(tenant));
      expect(operation!.kind).toBe('vbd.plug');
      const done = await operationDone(operations, operation!.id);
      expect(done.state).toBe(S.OPERATION_STATE_FAILED);
      // The contract's FAILED_PRECONDITION "the VM's driver cannot hot-plug disks", said by the agent.
      expect(done.error!.code).toBe(9);
      expect(done.error!.message).toMatch(/^host host-\d: .*cannot hot-plug/);
      const after = (await vbds.call.getVbd({ id: vbd.id }, as(tenant))).vbd!;
      expect(after).toMatchObject({ state: State.VBD_STATE_DETACHED, currentOperationId: '' });
    });

    it('refuses to plug into a HALTED VM with FAILED_PRECONDITION naming its power state', async () => {
      const v = await vm();
      const vbd = (await create({ vmId: v.id, vdiId: await disk() })).vbd!;
      const refused = await rejection(vbds.call.plugVbd({ id: vbd.id, requestId: '', etag: '' }, as(tenant)));
      expect(refused).toMatchObject({ code: 'FAILED_PRECONDITION' });
      expect(refused.message).toMatch(/HALTED/);
    });

    it('succeeds at once when unplugging a DETACHED VBD', async () => {
      const v = await vm({ start: true });
      const vbd = (await create({ vmId: v.id, vdiId: await disk() })).vbd!;
      const { operation } = await vbds.call.unplugVbd(
        { id: vbd.id, requestId: '', etag: '', timeoutMs: 0, force: false },
        as(tenant),
      );
      expect(operation!.state).toBe(S.OPERATION_STATE_SUCCEEDED);
    });

    it('refuses to unplug a VBD that is not unpluggable, and validates timeout_ms', async () => {
      const v = await vm({ start: true });
      const vbd = (await create({ vmId: v.id, vdiId: await disk(), unpluggable: false })).vbd!;
      await vmDisks.call.attachVmDisks({
        vmId: v.id,
        hostId: (await tenant.clients.vms.call.getVm({ id: v.id })).vm!.hostId,
      });
      const unplug = (fields: Partial<storageV1.UnplugVbdRequest>) =>
        rejection(
          vbds.call.unplugVbd(
            { id: vbd.id, requestId: '', etag: '', timeoutMs: 0, force: false, ...fields },
            as(tenant),
          ),
        );
      expect(await unplug({ timeoutMs: 600_001 })).toMatchObject({
        code: 'INVALID_ARGUMENT',
        field: 'timeout_ms',
      });
      const refused = await unplug({});
      expect(refused).toMatchObject({ code: 'FAILED_PRECONDITION' });
      expect(refused.message).toMatch(/not unpluggable/);
    });
  });

  describe('VmDiskService', () => {
    it('attaches every VBD of a VM on the host in device order, and detaches them', async () => {
      const v = await vm();
      const ro = await disk({ readOnly: true });
      await create({ vmId: v.id, vdiId: await disk(), devicePosition: 1 });
      await create({ vmId: v.id, vdiId: ro, devicePosition: 0, bootable: true });
      const { disks } = await vmDisks.call.attachVmDisks({ vmId: v.id, hostId: hosts[1].id });
      expect(disks.map((d) => [d.devicePosition, d.readOnly, d.bootable, d.srId])).toEqual([
        [0, true, true, shared],
        [1, false, false, shared],
      ]);
      expect(disks[0].file).toBe(`${ro}.qcow2`);
      const attached = await list(`vm_id=${v.id}`);
      expect(attached.map((b) => [b.state, b.device, b.hostId, b.currentlyAttached])).toEqual([
        [State.VBD_STATE_ATTACHED, 'vda', hosts[1].id, true],
        [State.VBD_STATE_ATTACHED, 'vdb', hosts[1].id, true],
      ]);
      await vmDisks.call.detachVmDisks({ vmId: v.id, hostId: '' });
      expect((await list(`vm_id=${v.id}`)).map((b) => [b.state, b.device, b.hostId])).toEqual([
        [State.VBD_STATE_DETACHED, '', ''],
        [State.VBD_STATE_DETACHED, '', ''],
      ]);
    });

    it('refuses to attach on a host that does not see the SR, and changes nothing', async () => {
      const v = await vm();
      await create({ vmId: v.id, vdiId: await disk() });
      await create({
        vmId: v.id,
        vdiId: await disk({ srId: await f.sr({ type: 'FILE', hostId: hosts[0].id }) }),
      });
      const refused = await rejection(vmDisks.call.attachVmDisks({ vmId: v.id, hostId: hosts[1].id }));
      expect(refused).toMatchObject({ code: 'FAILED_PRECONDITION' });
      expect(refused.message).toMatch(/FILE SR .* of another host/);
      expect((await list(`vm_id=${v.id}`)).map((b) => b.state)).toEqual([
        State.VBD_STATE_DETACHED,
        State.VBD_STATE_DETACHED,
      ]);
    });

    it('releases a VM: its VBDs go, VDIs it did not provision stay', async () => {
      const v = await vm();
      const vdiId = await disk();
      await create({ vmId: v.id, vdiId });
      await vmDisks.call.releaseVmDisks({ vmId: v.id });
      await vmDisks.call.releaseVmDisks({ vmId: v.id });
      expect(await list(`vm_id=${v.id}`)).toEqual([]);
      expect(await list(`vdi_id=${vdiId}`)).toEqual([]);
    });

    it('is internal: a tenant role is PERMISSION_DENIED, a call without the service token UNAUTHENTICATED', async () => {
      const v = await vm();
      expect(
        await rejection(vmDisks.call.detachVmDisks({ vmId: v.id, hostId: '' }, as(tenant))),
      ).toMatchObject({
        code: 'PERMISSION_DENIED',
      });
      const stranger = new GrpcClient<storageV1.VmDiskServiceClient>({
        address: cloud.storageAddress,
        service: 'flotilla.storage.v1.VmDiskService',
      });
      expect(await rejection(stranger.call.detachVmDisks({ vmId: v.id, hostId: '' }))).toMatchObject({
        code: 'UNAUTHENTICATED',
      });
      stranger.close();
    });

    it('answers INVALID_ARGUMENT naming vm_id and host_id', async () => {
      expect(await rejection(vmDisks.call.attachVmDisks({ vmId: 'x', hostId: hosts[0].id }))).toMatchObject({
        code: 'INVALID_ARGUMENT',
        field: 'vm_id',
      });
      expect(await rejection(vmDisks.call.attachVmDisks({ vmId: randomUUID(), hostId: '' }))).toMatchObject({
        code: 'INVALID_ARGUMENT',
        field: 'host_id',
      });
    });
  });
});
