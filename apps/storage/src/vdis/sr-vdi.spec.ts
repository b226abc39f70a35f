import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { commonV1, storageV1 } from '@flotilla/contracts';
import {
  GrpcClient,
  LocalCloud,
  md,
  parseConfig,
  rejection,
  startLocalCloud,
  testDatabase,
  uniqueSchema,
  waitFor,
} from '@flotilla/platform';
import { storageConfigSpec } from '../config';
import { startStorage, StorageApp } from '../storage.app';
import { createLogger, freePort } from '@flotilla/platform';

// Real: storage (SRs, VDIs, chains, accounting, operations), compute, two host agents serving
// StorageAgentService with real qemu-img on real files under <workDir>/sr, gRPC on loopback, the database
// (PGlite, and PostgreSQL when TEST_DATABASE_URL is set). Fake: the hypervisor (sim driver; no VM runs).
// Storage is called directly with the service identity (as the gateway relays it), as a pool-admin unless
// a test says otherwise.

const MIB = 1024 * 1024;
const { SrType, SrState, VdiState, DiskFormat } = storageV1;

interface Clients {
  srs: GrpcClient<storageV1.SrServiceClient>;
  vdis: GrpcClient<storageV1.VdiServiceClient>;
  ops: GrpcClient<commonV1.OperationServiceClient>;
  images: GrpcClient<storageV1.ImageServiceClient>;
  close(): void;
}

function clients(address: string, serviceToken: string, as: Record<string, string> = {}): Clients {
  const staticMetadata = { [md.serviceToken]: serviceToken, ...as };
  const make = <C>(service: string) =>
    new GrpcClient<C>({ address, service, staticMetadata, defaultDeadlineMs: 60_000 });
  const c = {
    srs: make<storageV1.SrServiceClient>('flotilla.storage.v1.SrService'),
    vdis: make<storageV1.VdiServiceClient>('flotilla.storage.v1.VdiService'),
    ops: make<commonV1.OperationServiceClient>('flotilla.common.v1.OperationService'),
    images: make<storageV1.ImageServiceClient>('flotilla.storage.v1.ImageService'),
  };
  return { ...c, close: () => Object.values(c).forEach((x) => x.close()) };
}

async function done(c: Clients, id: string): Promise<commonV1.Operation> {
  for (;;) {
    const { operation } = await c.ops.call.waitOperation({ id, timeoutMs: 30_000 });
    if (!['OPERATION_STATE_PENDING', 'OPERATION_STATE_RUNNING'].includes(String(operation!.state)))
      return operation!;
  }
}

async function succeeded(c: Clients, op: commonV1.Operation | undefined): Promise<commonV1.Operation> {
  const end = await done(c, op!.id);
  if (end.state !== 'OPERATION_STATE_SUCCEEDED')
    throw new Error(`${end.kind} ${end.state}: ${end.error?.message}`);
  return end;
}

const qemuInfo = (file: string) =>
  JSON.parse(execFileSync('qemu-img', ['info', '--output=json', '-U', file], { encoding: 'utf8' })) as {
    'virtual-size': number;
    'backing-filename'?: string;
    format: string;
  };

describe.each(testDatabase('PGlite'))('SRs and VDIs with real agents and qemu-img on %s', (_db, url) => {
  let cloud: LocalCloud;
  let c: Clients;
  let srRoot: string;
  let hosts: Array<{ id: string; name: string }>;
  let fileSr: storageV1.Sr;
  let sharedSr: storageV1.Sr;

  beforeAll(async () => {
    cloud = await startLocalCloud({
      databaseUrl: url,
      schemaPrefix: uniqueSchema('srvdi'),
      agents: 2,
      // No SR monitoring rounds: the unreachable-agent test needs an SR still recorded AVAILABLE when its host
      // has gone (a round would mark it UNAVAILABLE first, and creates would then be refused up front).
      storageEnv: { FLOTILLA_SR_MONITOR_INTERVAL_MS: '3600000' },
      // Stopped agents' hosts go DOWN after five missed heartbeats instead of twelve (the default 6 s).
      computeEnv: { FLOTILLA_HOST_DOWN_AFTER_MS: '2500' },
    });
    c = clients(cloud.storageAddress, cloud.serviceToken);
    hosts = (await cloud.hostsReady(2)).map((h) => ({ id: h.id, name: h.name }));
    srRoot = path.join(path.dirname(cloud.imageDir), 'sr');
    const file = await c.srs.call.createSr(
      srRequest('local1', SrType.SR_TYPE_FILE, path.join(srRoot, 'local1'), hosts[0].id),
    );
    await succeeded(c, file.operation);
    fileSr = (await c.srs.call.getSr({ id: 'local1' })).sr!;
    const shared = await c.srs.call.createSr(
      srRequest('shared1', SrType.SR_TYPE_SHARED, path.join(srRoot, 'shared1')),
    );
    await succeeded(c, shared.operation);
    sharedSr = (await c.srs.call.getSr({ id: 'shared1' })).sr!;
  }, 120_000);
  afterAll(async () => {
    c?.close();
    await cloud?.stop();
  });

  function srRequest(
    name: string,
    type: storageV1.SrType,
    dir: string,
    hostId = '',
    over: Partial<storageV1.CreateSrRequest> = {},
  ): storageV1.CreateSrRequest {
    return {
      requestId: '',
      name,
      description: '',
      labels: {},
      type,
      hostId,
      path: dir,
      tenantId: '',
      overprovisionRatio: 0,
      adoptExisting: false,
      ...over,
    };
  }

  const vdiRequest = (
    name: string,
    size: number,
    sr = fileSr.id,
    over: Partial<storageV1.CreateVdiRequest> = {},
  ): storageV1.CreateVdiRequest => ({
    requestId: '',
    srId: sr,
    name,
    description: '',
    labels: {},
    virtualSizeBytes: size,
    sharable: false,
    image: '',
    ...over,
  });

  async function newVdi(name: string, size = 64 * MIB, sr = fileSr.id): Promise<storageV1.Vdi> {
    const { vdi, operation } = await c.vdis.call.createVdi(vdiRequest(name, size, sr));
    await succeeded(c, operation);
    return (await c.vdis.call.getVdi({ id: vdi!.id })).vdi!;
  }

  const fileOf = (sr: storageV1.Sr, name: string) => path.join(sr.path, name);
  const vdiFile = async (id: string) => {
    const { vdis } = await c.vdis.call.listVdis({ page: { pageSize: 1000, pageToken: '', filter: '' } });
    void vdis;
    return (await c.vdis.call.getVdi({ id })).vdi!;
  };
  void vdiFile;

  describe('SRs', () => {
    it('creates a FILE SR on one host AVAILABLE, with capacity measured by the agent and the host attached', () => {
      expect(fileSr).toMatchObject({
        state: SrState.SR_STATE_AVAILABLE,
        type: SrType.SR_TYPE_FILE,
        hostId: hosts[0].id,
      });
      expect(fileSr.capacityBytes).toBeGreaterThan(0);
      expect(fileSr.hosts).toEqual([{ hostId: hosts[0].id, attached: true, reason: '' }]);
      expect(fs.existsSync(path.join(srRoot, 'local1', '.flotilla-sr.json'))).toBe(true);
    });

    it('creates a SHARED SR seen by every ENABLED host', () => {
      expect(sharedSr.state).toBe(SrState.SR_STATE_AVAILABLE);
      expect(sharedSr.hosts.map((h) => h.attached)).toEqual([true, true]);
    });

    it.each([
      ['a relative path', { path: 'sr/x' }, 'path'],
      ['a path with ..', { path: '/tmp/../etc' }, 'path'],
      ['a FILE SR without host_id', { hostId: '' }, 'host_id'],
      ['no type', { type: SrType.SR_TYPE_UNSPECIFIED }, 'type'],
      ['a negative overprovision ratio', { overprovisionRatio: -1 }, 'overprovision_ratio'],
    ])('answers INVALID_ARGUMENT naming the field for %s', async (_what, over, field) => {
      const req = srRequest(
        'bad',
        SrType.SR_TYPE_FILE,
        path.join(srRoot, 'bad'),
        hosts[0].id,
        over as Partial<storageV1.CreateSrRequest>,
      );
      expect(await rejection(c.srs.call.createSr(req))).toMatchObject({ code: 'INVALID_ARGUMENT', field });
    });

    it('answers ALREADY_EXISTS for a taken name and for a path another SR uses', async () => {
      expect(
        await rejection(
          c.srs.call.createSr(
            srRequest('local1', SrType.SR_TYPE_FILE, path.join(srRoot, 'other'), hosts[0].id),
          ),
        ),
      ).toMatchObject({
        code: 'ALREADY_EXISTS',
        field: 'name',
      });
      expect(
        await rejection(
          c.srs.call.createSr(srRequest('again', SrType.SR_TYPE_SHARED, path.join(srRoot, 'local1'))),
        ),
      ).toMatchObject({
        code: 'ALREADY_EXISTS',
        field: 'path',
      });
    });

    it("fails the create of an SR outside the agents' SR roots with INVALID_ARGUMENT and removes it", async () => {
      const { operation } = await c.srs.call.createSr(
        srRequest('outside', SrType.SR_TYPE_FILE, '/var/tmp/flotilla-outside', hosts[0].id),
      );
      const end = await done(c, operation!.id);
      expect(end.state).toBe('OPERATION_STATE_FAILED');
      expect(end.error!.message).toMatch(/SR roots/);
      expect(await rejection(c.srs.call.getSr({ id: 'outside' }))).toMatchObject({ code: 'NOT_FOUND' });
    });
  });

  describe('VDIs', () => {
    it("creates a thin qcow2 VDI READY, its file made by qemu-img, counted in the SR's virtual allocation", async () => {
      const vdi = await newVdi('thin', 100 * MIB + 1);
      expect(vdi).toMatchObject({
        state: VdiState.VDI_STATE_READY,
        virtualSizeBytes: 101 * MIB,
        format: DiskFormat.DISK_FORMAT_QCOW2,
      });
      const info = qemuInfo(fileOf(fileSr, `${vdi.id}.qcow2`));
      expect(info).toMatchObject({ format: 'qcow2', 'virtual-size': 101 * MIB });
      expect((await c.srs.call.getSr({ id: fileSr.id })).sr!.virtualAllocationBytes).toBeGreaterThanOrEqual(
        101 * MIB,
      );
    });

    it('grows a VDI and refuses to shrink it with INVALID_ARGUMENT', async () => {
      const vdi = await newVdi('grow');
      await succeeded(
        c,
        (await c.vdis.call.resizeVdi({ id: vdi.id, requestId: '', etag: '', virtualSizeBytes: 128 * MIB }))
          .operation,
      );
      expect(qemuInfo(fileOf(fileSr, `${vdi.id}.qcow2`))['virtual-size']).toBe(128 * MIB);
      const refused = await rejection(
        c.vdis.call.resizeVdi({ id: vdi.id, requestId: '', etag: '', virtualSizeBytes: 64 * MIB }),
      );
      expect(refused).toMatchObject({ code: 'INVALID_ARGUMENT', field: 'virtual_size_bytes' });
      expect(refused.message).toMatch(/only grow/);
    });

    it('answers RESOURCE_EXHAUSTED naming the overprovision ceiling before any file is written', async () => {
      const op = await c.srs.call.createSr(
        srRequest('tight', SrType.SR_TYPE_SHARED, path.join(srRoot, 'tight'), '', {
          overprovisionRatio: 0.000001,
        }),
      );
      await succeeded(c, op.operation);
      const before = fs.readdirSync(path.join(srRoot, 'tight'));
      const refused = await rejection(c.vdis.call.createVdi(vdiRequest('huge', 64 * 1024 * MIB, 'tight')));
      expect(refused.code).toBe('RESOURCE_EXHAUSTED');
      expect(refused.message).toMatch(/overprovision ceiling/);
      expect(fs.readdirSync(path.join(srRoot, 'tight'))).toEqual(before);
    });

    it('snapshots, clones the snapshot, reverts to it, then deletes it and coalesces the chain', async () => {
      const vdi = await newVdi('chain');
      const file = (name: string) => fileOf(fileSr, name);
      const before = `${vdi.id}.qcow2`;
      const { snapshot, operation } = await c.vdis.call.snapshotVdi({
        id: vdi.id,
        requestId: '',
        name: 'snap1',
        labels: {},
      });
      await succeeded(c, operation);
      const snap = (await c.vdis.call.getVdi({ id: snapshot!.id })).vdi!;
      const after = (await c.vdis.call.getVdi({ id: vdi.id })).vdi!;
      expect(snap).toMatchObject({
        isSnapshot: true,
        snapshotOf: vdi.id,
        readOnly: true,
        state: VdiState.VDI_STATE_READY,
      });
      expect(after.parentId).toBe(snap.id);
      expect(after.snapshotIds).toEqual([snap.id]);
      // The VDI's new top is backed by its old file, which the snapshot now owns.
      const tops = fs.readdirSync(fileSr.path).filter((f) => f.endsWith('.qcow2') && f !== before);
      const top = tops.find((f) => qemuInfo(file(f))['backing-filename'] === before);
      expect(top).toBeDefined();

      const clone = await c.vdis.call.cloneVdi({
        id: snap.id,
        requestId: '',
        name: 'from-snap',
        labels: {},
        sharable: false,
      });
      await succeeded(c, clone.operation);
      expect((await c.vdis.call.getVdi({ id: clone.vdi!.id })).vdi!).toMatchObject({
        parentId: snap.id,
        readOnly: false,
      });

      await succeeded(
        c,
        (await c.vdis.call.revertVdi({ id: vdi.id, requestId: '', etag: '', snapshotId: snap.id })).operation,
      );
      expect((await c.vdis.call.getVdi({ id: vdi.id })).vdi!.parentId).toBe(snap.id);
      expect(
        await rejection(
          c.vdis.call.revertVdi({ id: vdi.id, requestId: '', etag: '', snapshotId: clone.vdi!.id }),
        ),
      ).toMatchObject({ code: 'INVALID_ARGUMENT', field: 'snapshot_id' });

      // Destroying the clone leaves the snapshot with one child: deleting the snapshot then coalesces it.
      await succeeded(
        c,
        (await c.vdis.call.destroyVdi({ id: clone.vdi!.id, requestId: '', etag: '' })).operation,
      );
      await succeeded(c, (await c.vdis.call.destroyVdi({ id: snap.id, requestId: '', etag: '' })).operation);
      await waitFor(
        'the snapshot coalesced into the VDI and its file deleted',
        async () => {
          const v = (await c.vdis.call.getVdi({ id: vdi.id })).vdi!;
          return v.parentId === '' && !fs.existsSync(file(before)) && v;
        },
        { timeoutMs: 30_000 },
      );
      const final = (await c.vdis.call.getVdi({ id: vdi.id })).vdi!;
      expect(final.snapshotIds).toEqual([]);
      const remaining = fs.readdirSync(fileSr.path).filter((f) => f.endsWith('.qcow2'));
      expect(remaining.some((f) => qemuInfo(file(f))['backing-filename'])).toBe(false);
    }, 60_000);

    it('copies a VDI to the SHARED SR with progress, a standalone flattened file', async () => {
      const vdi = await newVdi('to-copy');
      const { vdi: copy, operation } = await c.vdis.call.copyVdi({
        id: vdi.id,
        requestId: '',
        srId: sharedSr.id,
        name: '',
        labels: {},
      });
      const end = await succeeded(c, operation);
      expect(end.result).toEqual({ vdi_id: copy!.id });
      const got = (await c.vdis.call.getVdi({ id: copy!.id })).vdi!;
      expect(got).toMatchObject({
        name: 'to-copy (copy)',
        srId: sharedSr.id,
        state: VdiState.VDI_STATE_READY,
        parentId: '',
      });
      expect(qemuInfo(fileOf(sharedSr, `${copy!.id}.qcow2`))['backing-filename']).toBeUndefined();
    });

    it("copies a VDI from one host's FILE SR to another host's, streamed between the agents, bytes intact", async () => {
      const other = await c.srs.call.createSr(
        srRequest('local2', SrType.SR_TYPE_FILE, path.join(srRoot, 'local2'), hosts[1].id),
      );
      await succeeded(c, other.operation);
      const data = Buffer.alloc(3 * MIB);
      for (let i = 0; i < data.length; i += 512) data.writeUInt32LE(i ^ 0x13572468, i);
      const source = await importRaw('cross-host', data, fileSr.id);
      const { vdi: copy, operation } = await c.vdis.call.copyVdi({
        id: source.id,
        requestId: '',
        srId: other.sr!.id,
        name: '',
        labels: {},
      });
      await succeeded(c, operation);
      const got = (await c.vdis.call.getVdi({ id: copy!.id })).vdi!;
      expect(got).toMatchObject({ srId: other.sr!.id, state: VdiState.VDI_STATE_READY, parentId: '' });
      expect((await exportRaw(got.id)).equals(data)).toBe(true);
      // No staging file is left on either side.
      for (const sr of [fileSr, other.sr!])
        expect(fs.readdirSync(sr.path).filter((f) => f.startsWith('.tmp-'))).toEqual([]);
    });

    it('imports raw bytes as a qcow2 VDI and exports them back unchanged', async () => {
      const data = Buffer.alloc(2 * MIB);
      for (let i = 0; i < data.length; i += 4096) data.writeUInt32LE(i, i);
      const vdi = await importRaw('imported', data);
      expect(vdi).toMatchObject({ state: VdiState.VDI_STATE_READY, virtualSizeBytes: 2 * MIB });
      expect((await exportRaw(vdi.id)).equals(data)).toBe(true);
    });

    it.each([
      ['VMDK monolithicSparse', DiskFormat.DISK_FORMAT_VMDK, ['-O', 'vmdk']],
      [
        'VMDK streamOptimized',
        DiskFormat.DISK_FORMAT_VMDK,
        ['-O', 'vmdk', '-o', 'subformat=streamOptimized'],
      ],
      ['VHD dynamic', DiskFormat.DISK_FORMAT_VHD, ['-O', 'vpc']],
      ['VHD fixed', DiskFormat.DISK_FORMAT_VHD, ['-O', 'vpc', '-o', 'subformat=fixed']],
    ] as const)(
      'imports a %s image written by qemu-img: the disk reads back the same bytes',
      async (_kind, format, out) => {
        const data = Buffer.alloc(4 * MIB);
        for (let i = 0; i < data.length; i += 512) data.writeUInt32LE(i ^ 0x5a5a5a5a, i);
        const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'flotilla-import-'));
        try {
          fs.writeFileSync(path.join(dir, 'src.raw'), data);
          execFileSync('qemu-img', [
            'convert',
            '-f',
            'raw',
            ...out,
            path.join(dir, 'src.raw'),
            path.join(dir, 'img'),
          ]);
          const vdi = await importRaw(
            `imported-${format}`,
            fs.readFileSync(path.join(dir, 'img')),
            sharedSr.id,
            format,
          );
          expect(vdi.state).toBe(VdiState.VDI_STATE_READY);
          // VHD sizes are rounded to its CHS geometry: at least the source's size.
          expect(vdi.virtualSizeBytes).toBeGreaterThanOrEqual(4 * MIB);
          expect((await exportRaw(vdi.id)).subarray(0, data.length).equals(data)).toBe(true);
        } finally {
          fs.rmSync(dir, { recursive: true, force: true });
        }
      },
    );

    it('destroys a VDI and returns its space: the file is deleted and the allocation drops', async () => {
      const vdi = await newVdi('doomed', 32 * MIB);
      const before = (await c.srs.call.getSr({ id: fileSr.id })).sr!.virtualAllocationBytes;
      await succeeded(c, (await c.vdis.call.destroyVdi({ id: vdi.id, requestId: '', etag: '' })).operation);
      expect((await c.srs.call.getSr({ id: fileSr.id })).sr!.virtualAllocationBytes).toBe(before - 32 * MIB);
      await waitFor('the file deleted', () => !fs.existsSync(fileOf(fileSr, `${vdi.id}.qcow2`)), {
        timeoutMs: 20_000,
      });
      // The keeper deletes the file, then the record.
      await waitFor(
        'the record gone',
        async () =>
          (await c.vdis.call.getVdi({ id: vdi.id }).catch((e: { code: number }) => e)) instanceof Error,
        { timeoutMs: 20_000 },
      );
      expect(await rejection(c.vdis.call.getVdi({ id: vdi.id }))).toMatchObject({ code: 'NOT_FOUND' });
    });

    it('scans an SR: introduces a qcow2 file made outside, marks a VDI whose file vanished MISSING', async () => {
      const gone = await newVdi('vanishing', 8 * MIB, sharedSr.id);
      fs.rmSync(fileOf(sharedSr, `${gone.id}.qcow2`));
      execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', fileOf(sharedSr, 'outside.qcow2'), '16M']);
      const { operation } = await c.srs.call.scanSr({ id: sharedSr.id, requestId: '' });
      const end = await succeeded(c, operation);
      expect(end.result).toMatchObject({ introduced: '1', missing: '1' });
      expect((await c.vdis.call.getVdi({ id: gone.id })).vdi!.state).toBe(VdiState.VDI_STATE_MISSING);
      const { vdis } = await c.vdis.call.listVdis({
        page: { pageSize: 100, pageToken: '', filter: 'name=outside.qcow2' },
      });
      expect(vdis).toHaveLength(1);
      expect(vdis[0]).toMatchObject({ virtualSizeBytes: 16 * MIB, state: VdiState.VDI_STATE_READY });
    });

    it('registers a DISK image from a VDI and creates linked clones of it in another SR', async () => {
      const source = await newVdi('golden', 32 * MIB);
      const { image, operation } = await c.images.call.registerImage({
        requestId: '',
        name: 'golden',
        description: '',
        labels: {},
        visibility: storageV1.ImageVisibility.IMAGE_VISIBILITY_PUBLIC,
        osType: 'linux',
        architecture: 'x86_64',
        minDiskBytes: 0,
        minMemoryMib: 0,
        sha256: '',
        srId: '',
        vdiId: source.id,
      });
      await succeeded(c, operation);
      expect((await c.images.call.getImage({ id: image!.id })).image!.state).toBe(
        storageV1.ImageState.IMAGE_STATE_AVAILABLE,
      );
      const a = await c.vdis.call.createVdi(vdiRequest('from-image-a', 0, sharedSr.id, { image: 'golden' }));
      await succeeded(c, a.operation);
      const b = await c.vdis.call.createVdi(
        vdiRequest('from-image-b', 64 * MIB, sharedSr.id, { image: 'golden' }),
      );
      await succeeded(c, b.operation);
      const [va, vb] = [
        (await c.vdis.call.getVdi({ id: a.vdi!.id })).vdi!,
        (await c.vdis.call.getVdi({ id: b.vdi!.id })).vdi!,
      ];
      expect(va.parentId).toBe(vb.parentId);
      expect(va.virtualSizeBytes).toBe(32 * MIB);
      expect(vb.virtualSizeBytes).toBe(64 * MIB);
      expect(
        await rejection(
          c.vdis.call.createVdi(vdiRequest('too-small', 16 * MIB, sharedSr.id, { image: 'golden' })),
        ),
      ).toMatchObject({ code: 'INVALID_ARGUMENT', field: 'virtual_size_bytes' });
    });
  });

  /** ExportVdi RAW: the disk's bytes. */
  async function exportRaw(id: string): Promise<Buffer> {
    const chunks: Buffer[] = [];
    for await (const msg of c.vdis.stream<storageV1.ExportVdiResponse>('ExportVdi', {
      id,
      format: DiskFormat.DISK_FORMAT_RAW,
      compress: false,
    }))
      if (msg.chunk) chunks.push(Buffer.from(msg.chunk));
    return Buffer.concat(chunks);
  }

  async function importRaw(
    name: string,
    data: Buffer,
    srId = sharedSr.id,
    format = DiskFormat.DISK_FORMAT_RAW,
  ): Promise<storageV1.Vdi> {
    const res = await new Promise<storageV1.ImportVdiResponse>((resolve, reject) => {
      const raw = c.vdis.raw as unknown as Record<
        string,
        (
          m: import('@grpc/grpc-js').Metadata,
          cb: (e: Error | null, r: storageV1.ImportVdiResponse) => void,
        ) => import('@grpc/grpc-js').ClientWritableStream<storageV1.ImportVdiRequest>
      >;
      const m = new (require('@grpc/grpc-js').Metadata)();
      m.set(md.serviceToken, cloud.serviceToken);
      const s = raw.ImportVdi.call(c.vdis.raw, m, (e, r) => (e ? reject(e) : resolve(r)));
      s.write({
        header: {
          requestId: '',
          srId,
          name,
          description: '',
          labels: {},
          format,
          sizeBytes: data.length,
          sha256: '',
          sourceUrl: '',
          sharable: false,
        },
      });
      for (let i = 0; i < data.length; i += MIB) s.write({ chunk: data.subarray(i, i + MIB) });
      s.end();
    });
    await succeeded(c, res.operation);
    return (await c.vdis.call.getVdi({ id: res.vdi!.id })).vdi!;
  }

  describe('faults', () => {
    /** A host of its own with a FILE SR `sr` on it, whose agent is then stopped and the host seen DOWN. */
    async function srOnLostHost(hostName: string, sr: string): Promise<{ stateDir: string }> {
      const agent = await cloud.startAgent({ name: hostName });
      const host = await waitFor(`${hostName} ENABLED`, async () => {
        const { hosts } = await cloud.admin.hosts.call.listHosts({
          page: { pageSize: 100, pageToken: '', filter: 'state=ENABLED' },
        });
        return hosts.find((h) => h.name === hostName);
      });
      await succeeded(
        c,
        (await c.srs.call.createSr(srRequest(sr, SrType.SR_TYPE_FILE, path.join(srRoot, sr), host.id)))
          .operation,
      );
      await agent.stop();
      // The stopped agent still answers on connections it had open; compute marks its host DOWN soon.
      await waitFor(
        `${hostName} DOWN`,
        async () => {
          const { host: now } = await cloud.admin.hosts.call.getHost({ id: host.id });
          return String(now!.state) === 'HOST_STATE_DOWN';
        },
        { timeoutMs: 30_000 },
      );
      return agent;
    }

    it("answers UNAVAILABLE naming the host when the SR's agent is unreachable", async () => {
      const extra = await srOnLostHost('host-x', 'on-x');
      // Storage's view of the hosts is up to a second old (ComputeHostDirectory's cache): until it sees the
      // host DOWN it would still call the stopped agent, which answers on the connection it kept open.
      await new Promise((resolve) => setTimeout(resolve, 1500));
      const { operation } = await c.vdis.call.createVdi(vdiRequest('unreachable', 8 * MIB, 'on-x'));
      const end = await done(c, operation!.id);
      expect(end.state).toBe('OPERATION_STATE_FAILED');
      expect(end.error!.code).toBe(14);
      expect(end.error!.message).toMatch(/host host-x/);
      // Whether a file was made is unknown while the host is away: the record waits, then goes.
      await cloud.startAgent({ name: 'host-x', stateDir: extra.stateDir });
      await waitFor(
        'the failed create rolled back once host-x is back',
        () =>
          c.vdis.call.getVdi({ id: operation!.target!.id }).then(
            () => false,
            (e: { code?: number }) => e.code === 5,
          ),
        { timeoutMs: 60_000 },
      );
    }, 120_000);

    it('an SR whose host came back is usable again within seconds, without a scan', async () => {
      const extra = await srOnLostHost('host-w', 'on-w');
      // A scan while the host is away looks at the SR and finds nobody who sees it (storage's view of the
      // hosts is up to a second old: asked until it says so).
      await waitFor(
        'on-w UNAVAILABLE',
        async () => {
          await done(c, (await c.srs.call.scanSr({ id: 'on-w', requestId: '' })).operation!.id);
          return (await c.srs.call.getSr({ id: 'on-w' })).sr!.state === SrState.SR_STATE_UNAVAILABLE;
        },
        { timeoutMs: 20_000 },
      );
      // This cloud's full monitoring rounds are an hour apart: only the quick look at unwell SRs sees it back.
      await cloud.startAgent({ name: 'host-w', stateDir: extra.stateDir });
      await waitFor(
        'on-w AVAILABLE again',
        async () => (await c.srs.call.getSr({ id: 'on-w' })).sr!.state === SrState.SR_STATE_AVAILABLE,
        { timeoutMs: 20_000 },
      );
      const { operation } = await c.vdis.call.createVdi(vdiRequest('after-return', 8 * MIB, 'on-w'));
      expect((await done(c, operation!.id)).state).toBe('OPERATION_STATE_SUCCEEDED');
    }, 120_000);

    it('resumes a copy after the storage service is stopped mid-copy, and leaves no stray file', async () => {
      // A second storage service over its own schema, stopped and restarted like a crash.
      const schema = uniqueSchema('srvdi_restart');
      const address = `127.0.0.1:${await freePort()}`;
      const config = parseConfig(storageConfigSpec, {
        FLOTILLA_SERVICE_TOKEN: cloud.serviceToken,
        DATABASE_URL: url,
        FLOTILLA_DATA_DIR: path.dirname(cloud.imageDir),
        FLOTILLA_STORAGE_ADDRESS: address,
        FLOTILLA_COMPUTE_URL: cloud.compute.address,
        FLOTILLA_DB_SCHEMA: schema,
      });
      const logger = createLogger('storage', 'silent');
      let app: StorageApp = await startStorage(config, logger, { schema });
      let s = clients(address, cloud.serviceToken);
      try {
        await succeeded(
          s,
          (await s.srs.call.createSr(srRequest('r1', SrType.SR_TYPE_SHARED, path.join(srRoot, 'r1'))))
            .operation,
        );
        await succeeded(
          s,
          (await s.srs.call.createSr(srRequest('r2', SrType.SR_TYPE_SHARED, path.join(srRoot, 'r2'))))
            .operation,
        );
        const r1 = (await s.srs.call.getSr({ id: 'r1' })).sr!;
        // 256 MiB of data that qemu-img must really copy, introduced by a scan.
        const raw = path.join(srRoot, 'big.raw');
        execFileSync('dd', ['if=/dev/urandom', `of=${raw}`, 'bs=1M', 'count=256', 'status=none']);
        execFileSync('qemu-img', [
          'convert',
          '-q',
          '-f',
          'raw',
          '-O',
          'qcow2',
          raw,
          path.join(r1.path, 'big.qcow2'),
        ]);
        fs.rmSync(raw);
        await succeeded(s, (await s.srs.call.scanSr({ id: 'r1', requestId: '' })).operation);
        const big = (
          await s.vdis.call.listVdis({ page: { pageSize: 10, pageToken: '', filter: 'name=big.qcow2' } })
        ).vdis[0];
        const { vdi: copy, operation } = await s.vdis.call.copyVdi({
          id: big.id,
          requestId: '',
          srId: 'r2',
          name: 'big copy',
          labels: {},
        });
        await waitFor(
          'the copy to be running',
          async () =>
            (await s.ops.call.getOperation({ id: operation!.id })).operation!.state ===
            'OPERATION_STATE_RUNNING',
          {
            timeoutMs: 20_000,
            intervalMs: 20,
          },
        );
        await app.stop();
        s.close();
        app = await startStorage(config, logger, { schema });
        s = clients(address, cloud.serviceToken);
        const end = await done(s, operation!.id);
        expect(end.state).toBe('OPERATION_STATE_SUCCEEDED');
        const got = (await s.vdis.call.getVdi({ id: copy!.id })).vdi!;
        expect(got.state).toBe(VdiState.VDI_STATE_READY);
        const r2 = (await s.srs.call.getSr({ id: 'r2' })).sr!;
        expect(fs.readdirSync(r2.path).filter((f) => !f.startsWith('.'))).toEqual([`${copy!.id}.qcow2`]);
        execFileSync('qemu-img', [
          'compare',
          '-q',
          path.join(r1.path, 'big.qcow2'),
          path.join(r2.path, `${copy!.id}.qcow2`),
        ]);

        // A cancelled copy is rolled back: its VDI and its partial file are gone.
        const second = await s.vdis.call.copyVdi({
          id: big.id,
          requestId: '',
          srId: 'r2',
          name: 'cancelled',
          labels: {},
        });
        await s.ops.call.cancelOperation({ id: second.operation!.id });
        await waitFor(
          'the cancelled copy rolled back',
          async () => {
            const left = fs.readdirSync(r2.path).filter((f) => !f.startsWith('.'));
            const gone = (await rejection(s.vdis.call.getVdi({ id: second.vdi!.id })).catch(() => ({
              code: 'OK',
            }))) as { code: string };
            return left.length === 1 && gone.code === 'NOT_FOUND';
          },
          { timeoutMs: 30_000 },
        );
      } finally {
        s.close();
        await app.stop();
      }
    }, 120_000);
  });
});
