import { execFileSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Metadata } from '@grpc/grpc-js';
import { Client } from 'pg';
import { commonV1, storageV1 } from '@flotilla/contracts';
import { describeWithQemuImg } from '@flotilla/hypervisor';
import {
  createLogger,
  freePort,
  GrpcClient,
  LocalCloud,
  md,
  operationDone,
  parseConfig,
  quoteIdent,
  rejection,
  startLocalCloud,
  TestTenant,
  testDatabase,
  uniqueSchema,
  vmRequest,
} from '@flotilla/platform';
import { storageConfigSpec } from '../config';
import { startStorage, StorageApp, StorageConfig } from '../storage.app';

// Real: a storage service of its own (stopped and started again like a crash), compute and the gateway,
// two host agents serving StorageAgentService with real qemu-img on real SR directories, gRPC on loopback,
// the database (PGlite, and PostgreSQL when TEST_DATABASE_URL is set). Host h-dst's SR roots leave out
// SR a-only, so that SHARED SR is really not visible from it. Fake: the hypervisor (sim driver: no VM runs),
// so the QEMU mirror that fills a target file is stood in for by `qemu-img convert -n` of the VDI's chain.

const MIB = 1024 * 1024;
const { VbdType, VbdMode, VbdState, SrType } = storageV1;

interface Clients {
  srs: GrpcClient<storageV1.SrServiceClient>;
  vdis: GrpcClient<storageV1.VdiServiceClient>;
  vbds: GrpcClient<storageV1.VbdServiceClient>;
  disks: GrpcClient<storageV1.VmDiskServiceClient>;
  ops: GrpcClient<commonV1.OperationServiceClient>;
  close(): void;
}

function clients(address: string, serviceToken: string): Clients {
  const make = <C>(service: string) =>
    new GrpcClient<C>({
      address,
      service,
      staticMetadata: { [md.serviceToken]: serviceToken },
      defaultDeadlineMs: 60_000,
    });
  const c = {
    srs: make<storageV1.SrServiceClient>('flotilla.storage.v1.SrService'),
    vdis: make<storageV1.VdiServiceClient>('flotilla.storage.v1.VdiService'),
    vbds: make<storageV1.VbdServiceClient>('flotilla.storage.v1.VbdService'),
    disks: make<storageV1.VmDiskServiceClient>('flotilla.storage.v1.VmDiskService'),
    ops: make<commonV1.OperationServiceClient>('flotilla.common.v1.OperationService'),
  };
  return { ...c, close: () => Object.values(c).forEach((x) => x.close()) };
}

interface VdiRecord {
  id: string;
  sr_id: string;
  file: string;
  parent_id: string | null;
  managed: boolean;
  state: string;
  current_operation_id: string | null;
  reserved_physical_bytes: string;
}

const qemuImg = (...args: string[]) => execFileSync('qemu-img', args, { encoding: 'utf8' });
const qemuIo = (file: string, cmd: string) =>
  execFileSync('qemu-io', ['-f', 'qcow2', '-c', cmd, file], { encoding: 'utf8' });
const info = (file: string) =>
  JSON.parse(qemuImg('info', '--output=json', '-U', file)) as {
    'virtual-size': number;
    'backing-filename'?: string;
  };

describeWithQemuImg('storage side of VM migration', () => {
  describe.each(testDatabase('PostgreSQL'))('with real agents and qemu-img on %s', (_db, url) => {
    let cloud: LocalCloud;
    let tenant: TestTenant;
    let app: StorageApp;
    let c: Clients;
    let pg: Client;
    let schema: string;
    let config: StorageConfig;
    const logger = createLogger('storage', process.env.FLOTILLA_TEST_LOG_LEVEL || 'silent');
    const hosts: Record<'src' | 'dst', { id: string; name: string }> = {} as never;
    const srs: Record<string, storageV1.Sr> = {};
    let n = 0;

    const asTenant = () => {
      const m = new Metadata();
      m.set(md.tenantId, tenant.id);
      m.set(md.role, 'vm-power-admin');
      return { metadata: m };
    };
    const succeeded = async (op?: commonV1.Operation) => {
      const end = await operationDone(c.ops, op!.id, 60_000);
      expect(end.error?.message ?? '').toBe('');
    };

    beforeAll(async () => {
      cloud = await startLocalCloud({ databaseUrl: url, schemaPrefix: uniqueSchema('diskmig'), agents: 0 });
      tenant = await cloud.tenant('diskmig');
      const workDir = path.dirname(cloud.imageDir);
      const srRoot = path.join(workDir, 'sr');
      schema = uniqueSchema('diskmig_storage');
      config = parseConfig(storageConfigSpec, {
        FLOTILLA_SERVICE_TOKEN: cloud.serviceToken,
        DATABASE_URL: url,
        FLOTILLA_DATA_DIR: workDir,
        FLOTILLA_STORAGE_ADDRESS: `127.0.0.1:${await freePort()}`,
        FLOTILLA_COMPUTE_URL: cloud.compute.address,
        FLOTILLA_DB_SCHEMA: schema,
      });
      app = await startStorage(config, logger, { schema });
      c = clients(app.address, cloud.serviceToken);
      pg = new Client({ connectionString: url });
      await pg.connect();

      const sr = async (name: string, type: storageV1.SrType, dir: string, hostId = '', ratio = 0) => {
        const { operation } = await c.srs.call.createSr({
          requestId: '',
          name,
          description: '',
          labels: {},
          type,
          hostId,
          path: path.join(srRoot, dir),
          tenantId: '',
          overprovisionRatio: ratio,
          adoptExisting: false,
        });
        await succeeded(operation);
        srs[name] = (await c.srs.call.getSr({ id: name })).sr!;
      };
      // The source host first: SR a-only is made while it is the only host.
      await cloud.startAgent({ name: 'h-src' });
      const [src] = await cloud.hostsReady(1);
      hosts.src = { id: src.id, name: src.name };
      await sr('a-local', SrType.SR_TYPE_FILE, 'a-local', src.id);
      await sr('a-only', SrType.SR_TYPE_SHARED, 'a-only');
      await cloud.startAgent({
        name: 'h-dst',
        env: { FLOTILLA_SR_ROOTS: `${path.join(srRoot, 'common')}:${path.join(srRoot, 'b')}` },
      });
      const dst = (await cloud.hostsReady(2)).find((h) => h.name === 'h-dst')!;
      hosts.dst = { id: dst.id, name: dst.name };
      await sr('b-local', SrType.SR_TYPE_FILE, 'b/b-local', dst.id);
      // A ceiling of a few KiB of virtual allocation: no disk fits.
      await sr('b-tight', SrType.SR_TYPE_FILE, 'b/b-tight', dst.id, 1e-7);
      await sr('both', SrType.SR_TYPE_SHARED, 'common/both');
    }, 180_000);
    afterAll(async () => {
      c?.close();
      await pg?.end();
      await app?.stop();
      await cloud?.stop();
    });

    const vm = async () => {
      const { vm: created, operation } = await tenant.clients.vms.call.createVm(
        vmRequest({ name: `mig-vm-${++n}`, start: false }),
      );
      await operationDone(tenant.clients.operations, operation!.id);
      return created!.id;
    };
    const disk = async (vmId: string, sr: string, o: { size?: number; position?: number } = {}) => {
      const { vdi, operation } = await c.vdis.call.createVdi(
        {
          requestId: '',
          srId: srs[sr].id,
          name: `disk-${++n}`,
          description: '',
          labels: {},
          virtualSizeBytes: o.size ?? 32 * MIB,
          sharable: false,
          image: '',
        },
        asTenant(),
      );
      await succeeded(operation);
      const { vbd } = await c.vbds.call.createVbd(
        {
          requestId: '',
          vmId,
          vdiId: vdi!.id,
          type: VbdType.VBD_TYPE_DISK,
          mode: VbdMode.VBD_MODE_RW,
          bootable: o.position === 0,
          labels: {},
          name: '',
          devicePosition: o.position,
        },
        asTenant(),
      );
      return { vdiId: vdi!.id, vbdId: vbd!.id };
    };
    const record = async (id: string): Promise<VdiRecord | undefined> =>
      (await pg.query(`SELECT * FROM ${quoteIdent(schema)}.vdis WHERE id = $1`, [id])).rows[0];
    const fileOf = async (vdiId: string) => {
      const r = (await record(vdiId))!;
      return path.join(Object.values(srs).find((s) => s.id === r.sr_id)!.path, r.file);
    };
    const request = (vmId: string, o: Partial<storageV1.CheckVmDiskMigrationRequest> = {}) => ({
      vmId,
      sourceHostId: hosts.src.id,
      destinationHostId: hosts.dst.id,
      withStorage: true,
      vdiMap: {},
      ...o,
    });
    const allocation = async (sr: string) => (await c.srs.call.getSr({ id: sr })).sr!.virtualAllocationBytes;
    /** What QEMU's mirror does before the commit: the VDI's whole chain, flattened into the target file. */
    const mirror = async (vdiId: string, target: storageV1.VmDisk) =>
      qemuImg(
        'convert',
        '-n',
        '-f',
        'qcow2',
        '-O',
        'qcow2',
        await fileOf(vdiId),
        path.join(target.srPath, target.file),
      );

    describe('CheckVmDiskMigration', () => {
      let vmId: string;
      let local: { vdiId: string };
      let unseen: { vdiId: string };
      let shared: { vdiId: string; vbdId: string };

      beforeAll(async () => {
        vmId = await vm();
        local = await disk(vmId, 'a-local', { position: 0 });
        unseen = await disk(vmId, 'a-only');
        shared = await disk(vmId, 'both');
      }, 60_000);

      it('lists every blocker at once: a local disk without storage migration and a SHARED SR the destination does not see', async () => {
        const res = await c.disks.call.checkVmDiskMigration(request(vmId, { withStorage: false }));
        expect(res.blockers.map((b) => [b.reason, b.metadata])).toEqual([
          ['LOCAL_STORAGE', { resource_kind: 'vdi', resource_id: local.vdiId }],
          ['SR_NOT_VISIBLE', { resource_kind: 'sr', resource_id: srs['a-only'].id }],
        ]);
        expect(res.storageBytesToCopy).toBe(0);
        expect(res.disks.find((d) => d.vdiId === unseen.vdiId)).toMatchObject({
          srId: srs['a-only'].id,
          targetSrId: '',
        });
        expect(res.disks.find((d) => d.vdiId === shared.vdiId)).toMatchObject({
          srId: srs.both.id,
          targetSrId: '',
          sizeBytes: 0,
        });
      });

      it("plans the local disk's copy to the destination's FILE SR with the most free space", async () => {
        const res = await c.disks.call.checkVmDiskMigration(request(vmId));
        expect(res.disks.find((d) => d.vdiId === local.vdiId)).toMatchObject({
          srId: srs['a-local'].id,
          targetSrId: srs['b-local'].id,
          sizeBytes: 32 * MIB,
        });
        expect(res.storageBytesToCopy).toBe(32 * MIB);
        expect(res.blockers.map((b) => b.reason)).toEqual(['SR_NOT_VISIBLE']);
      });

      it('says SR_NOT_VISIBLE for a vdi_map SR of the source and INSUFFICIENT_STORAGE for an SR past its ceiling', async () => {
        const notSeen = await c.disks.call.checkVmDiskMigration(
          request(vmId, { vdiMap: { [local.vdiId]: 'a-local' } }),
        );
        expect(notSeen.blockers.map((b) => [b.reason, b.metadata.resource_id])).toEqual([
          ['SR_NOT_VISIBLE', srs['a-local'].id],
          ['SR_NOT_VISIBLE', srs['a-only'].id],
        ]);
        const full = await c.disks.call.checkVmDiskMigration(
          request(vmId, { vdiMap: { [local.vdiId]: srs['b-tight'].id } }),
        );
        expect(full.blockers.map((b) => [b.reason, b.metadata.resource_id])).toEqual([
          ['SR_NOT_VISIBLE', srs['a-only'].id],
          ['INSUFFICIENT_STORAGE', srs['b-tight'].id],
        ]);
        expect(full.blockers[1].description).toMatch(/overprovision ceiling/);
      });

      it('refuses a vdi_map key that is not a disk of the VM, naming the entry, and an unknown SR', async () => {
        const stranger = randomUUID();
        expect(
          await rejection(
            c.disks.call.checkVmDiskMigration(request(vmId, { vdiMap: { [stranger]: srs['b-local'].id } })),
          ),
        ).toMatchObject({ code: 'INVALID_ARGUMENT', field: `spec.vdi_map[${stranger}]` });
        expect(
          await rejection(
            c.disks.call.checkVmDiskMigration(request(vmId, { vdiMap: { [local.vdiId]: 'no-such-sr' } })),
          ),
        ).toMatchObject({ code: 'NOT_FOUND', field: `spec.vdi_map[${local.vdiId}]` });
      });

      it('refuses to prepare while a blocker stands, and records nothing', async () => {
        const migrationId = randomUUID();
        const refused = await rejection(
          c.disks.call.prepareVmDiskMigration({ ...request(vmId), migrationId }),
        );
        expect(refused.code).toBe('FAILED_PRECONDITION');
        expect(refused.message).toMatch(/SR_NOT_VISIBLE/);
        expect(await allocation('b-local')).toBe(0);
        expect((await rejection(c.disks.call.commitVmDiskMigration({ vmId, migrationId }))).code).toBe(
          'NOT_FOUND',
        );
      });
    });

    describe('prepare, commit and clean-up', () => {
      it('moves a FILE-SR disk with a snapshot to the destination: files, records and space', async () => {
        const vmId = await vm();
        const root = await disk(vmId, 'a-local', { position: 0, size: 16 * MIB });
        const data = await disk(vmId, 'both', { position: 1 });
        qemuIo(await fileOf(root.vdiId), 'write -P 0x11 0 1M');
        const { snapshot: snap, operation } = await c.vdis.call.snapshotVdi(
          { id: root.vdiId, requestId: '', name: 'before', labels: {} },
          asTenant(),
        );
        await succeeded(operation);
        const snapFile = await fileOf(snap!.id);
        const oldTop = await fileOf(root.vdiId);
        qemuIo(oldTop, 'write -P 0x22 1M 1M');
        const migrationId = randomUUID();
        const [aBefore, bBefore] = [await allocation('a-local'), await allocation('b-local')];

        const prepared = await c.disks.call.prepareVmDiskMigration({ ...request(vmId), migrationId });
        expect(prepared.plan.map((p) => [p.vdiId, p.targetSrId, p.sizeBytes])).toEqual([
          [root.vdiId, srs['b-local'].id, 16 * MIB],
          [data.vdiId, '', 0],
        ]);
        const [target, stays] = prepared.disks;
        expect(target).toMatchObject({
          vbdId: root.vbdId,
          srId: srs['b-local'].id,
          srPath: srs['b-local'].path,
        });
        expect(stays).toMatchObject({ vdiId: data.vdiId, srId: srs.both.id, file: `${data.vdiId}.qcow2` });
        const targetFile = path.join(target.srPath, target.file);
        expect(info(targetFile)).toMatchObject({ 'virtual-size': 16 * MIB });
        expect(info(targetFile)['backing-filename']).toBeUndefined();
        expect(await allocation('b-local')).toBe(bBefore + 16 * MIB);
        // The disk is the migration's until it commits or aborts.
        expect(
          (
            await rejection(
              c.vdis.call.snapshotVdi({ id: root.vdiId, requestId: '', name: 'x', labels: {} }, asTenant()),
            )
          ).code,
        ).toBe('FAILED_PRECONDITION');
        const again = await c.disks.call.prepareVmDiskMigration({ ...request(vmId), migrationId });
        expect(again).toEqual(prepared);

        await mirror(root.vdiId, target);
        const committed = await c.disks.call.commitVmDiskMigration({ vmId, migrationId });
        expect(committed.disks).toEqual(prepared.disks);
        expect(await record(root.vdiId)).toMatchObject({
          sr_id: srs['b-local'].id,
          file: target.file,
          parent_id: null,
          current_operation_id: null,
        });
        // The snapshot stays on the source with its file; the VDI's old top waits for the clean-up.
        expect(await record(snap!.id)).toMatchObject({ sr_id: srs['a-local'].id, managed: true });
        expect(fs.existsSync(snapFile) && fs.existsSync(oldTop)).toBe(true);
        expect(await allocation('b-local')).toBe(bBefore + 16 * MIB);
        expect(await allocation('a-local')).toBe(aBefore - 16 * MIB);
        const vbds = (
          await c.vbds.call.listVbds({ page: { pageSize: 10, pageToken: '', filter: `vm_id=${vmId}` } })
        ).vbds;
        expect(vbds.map((b) => [b.state, b.hostId])).toEqual([
          [VbdState.VBD_STATE_ATTACHED, hosts.dst.id],
          [VbdState.VBD_STATE_ATTACHED, hosts.dst.id],
        ]);
        // A scan of the source SR neither introduces the old top as a new VDI nor marks anything MISSING.
        const before = (
          await c.vdis.call.listVdis({
            page: { pageSize: 100, pageToken: '', filter: `sr_id=${srs['a-local'].id}` },
          })
        ).vdis.length;
        await succeeded((await c.srs.call.scanSr({ id: 'a-local', requestId: '' })).operation);
        const after = (
          await c.vdis.call.listVdis({
            page: { pageSize: 100, pageToken: '', filter: `sr_id=${srs['a-local'].id}` },
          })
        ).vdis;
        expect(after.length).toBe(before);
        expect(await c.disks.call.commitVmDiskMigration({ vmId, migrationId })).toEqual(committed);
        expect((await rejection(c.disks.call.abortVmDiskMigration({ vmId, migrationId }))).code).toBe(
          'FAILED_PRECONDITION',
        );

        await c.disks.call.cleanUpVmDiskMigration({ vmId, migrationId });
        expect(fs.existsSync(oldTop)).toBe(false);
        expect(info(snapFile)['virtual-size']).toBe(16 * MIB);
        await c.disks.call.cleanUpVmDiskMigration({ vmId, migrationId });
        // The disk holds what the VM wrote before and after the snapshot, standalone on the destination.
        qemuIo(targetFile, 'read -P 0x11 0 1M');
        qemuIo(targetFile, 'read -P 0x22 1M 1M');
        // Its snapshot stayed behind: reverting to it would put a new top across SRs, so it is refused.
        await c.disks.call.detachVmDisks({ vmId, hostId: hosts.dst.id });
        const revert = await rejection(
          c.vdis.call.revertVdi(
            { id: root.vdiId, snapshotId: snap!.id, requestId: '', etag: '' },
            asTenant(),
          ),
        );
        expect(revert).toMatchObject({ code: 'FAILED_PRECONDITION' });
        expect(revert.message).toMatch(/another SR/);
        expect(
          (
            await pg.query(
              `SELECT count(*)::int AS n FROM ${quoteIdent(schema)}.vdis WHERE sr_id = $1 AND NOT managed`,
              [srs['a-local'].id],
            )
          ).rows[0].n,
        ).toBe(0);
      }, 120_000);

      it('aborts: the target file goes, the space and the disk are given back; repeats and unknown ids are fine', async () => {
        const vmId = await vm();
        const root = await disk(vmId, 'a-local', { position: 0 });
        const migrationId = randomUUID();
        const before = await allocation('b-local');
        const prepared = await c.disks.call.prepareVmDiskMigration({ ...request(vmId), migrationId });
        const targetFile = path.join(prepared.disks[0].srPath, prepared.disks[0].file);
        expect(fs.existsSync(targetFile)).toBe(true);
        expect(await allocation('b-local')).toBe(before + 32 * MIB);

        await c.disks.call.abortVmDiskMigration({ vmId, migrationId });
        expect(fs.existsSync(targetFile)).toBe(false);
        expect(await allocation('b-local')).toBe(before);
        expect(await record(root.vdiId)).toMatchObject({
          sr_id: srs['a-local'].id,
          current_operation_id: null,
        });
        await c.disks.call.abortVmDiskMigration({ vmId, migrationId });
        await c.disks.call.abortVmDiskMigration({ vmId, migrationId: randomUUID() });
        expect((await rejection(c.disks.call.commitVmDiskMigration({ vmId, migrationId }))).code).toBe(
          'FAILED_PRECONDITION',
        );
        expect(
          (await rejection(c.disks.call.prepareVmDiskMigration({ ...request(vmId), migrationId }))).code,
        ).toBe('FAILED_PRECONDITION');
        // The disk can move again under a new id.
        const next = randomUUID();
        await c.disks.call.prepareVmDiskMigration({ ...request(vmId), migrationId: next });
        await c.disks.call.abortVmDiskMigration({ vmId, migrationId: next });
      }, 120_000);

      it('finishes a migration across a storage restart between prepare and commit, making a lost target file again', async () => {
        const vmId = await vm();
        const root = await disk(vmId, 'a-local', { position: 0 });
        qemuIo(await fileOf(root.vdiId), 'write -P 0x33 0 1M');
        const migrationId = randomUUID();
        const prepared = await c.disks.call.prepareVmDiskMigration({ ...request(vmId), migrationId });
        const target = prepared.disks[0];
        const targetFile = path.join(target.srPath, target.file);

        await app.stop();
        c.close();
        fs.rmSync(targetFile);
        app = await startStorage(config, logger, { schema });
        c = clients(app.address, cloud.serviceToken);

        expect(await c.disks.call.prepareVmDiskMigration({ ...request(vmId), migrationId })).toEqual(
          prepared,
        );
        expect(fs.existsSync(targetFile)).toBe(true);
        await mirror(root.vdiId, target);
        const oldTop = await fileOf(root.vdiId);
        expect((await c.disks.call.commitVmDiskMigration({ vmId, migrationId })).disks).toEqual(
          prepared.disks,
        );
        await c.disks.call.cleanUpVmDiskMigration({ vmId, migrationId });
        expect(fs.existsSync(oldTop)).toBe(false);
        qemuIo(targetFile, 'read -P 0x33 0 1M');
      }, 120_000);
    });
  });
});
