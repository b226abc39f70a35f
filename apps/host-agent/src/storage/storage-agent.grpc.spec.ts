import * as grpc from '@grpc/grpc-js';
import { INestMicroservice } from '@nestjs/common';
import { createHash } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { storageV1 } from '@flotilla/contracts';
import {
  describeWithQemuImg,
  DriverVmStatus,
  HypervisorDriver,
  qcow2WithDataFile,
  writeSecret,
} from '@flotilla/hypervisor';
import {
  createLogger,
  freePort,
  GrpcClient,
  md,
  rejection,
  ServiceIdentity,
  startGrpcService,
} from '@flotilla/platform';
import { HostImageCatalogue } from '../image-catalogue';
import { SrPaths } from '../sr-paths';
import { StorageAgentModule } from './storage-agent.module';

// Real: StorageAgentService served by startGrpcService on loopback and called over gRPC as the storage
// service calls it; qemu-img on real files under a temporary SR root. Fake: the hypervisor driver, a table
// of running VMs and the files each has open, which records the live operations asked of it.

const F = storageV1.DiskFormat;
const MIB = 1024 * 1024;
const TOKEN = 'storage-agent-test-token';

class FakeDriver {
  readonly vms = new Map<string, string[]>();
  readonly calls: string[] = [];
  async list(): Promise<DriverVmStatus[]> {
    return [...this.vms.keys()].map((vmId) => ({ vmId, powerState: 'RUNNING' }));
  }
  async status(vmId: string): Promise<DriverVmStatus | undefined> {
    return this.vms.has(vmId) ? { vmId, powerState: 'RUNNING' } : undefined;
  }
  async openDiskFiles(vmId: string): Promise<string[]> {
    return this.vms.get(vmId) ?? [];
  }
  async snapshotDisk(vmId: string, top: string, newTop: string): Promise<void> {
    this.calls.push(`snapshot ${vmId} ${path.basename(top)} -> ${path.basename(newTop)}`);
    this.vms.get(vmId)?.push(newTop);
  }
  async resizeDisk(vmId: string, top: string, size: number): Promise<void> {
    this.calls.push(`resize ${vmId} ${path.basename(top)} ${size}`);
  }
  async streamDisk(vmId: string, top: string, base: string | undefined): Promise<void> {
    this.calls.push(`stream ${vmId} ${path.basename(top)} ${base ?? '-'}`);
  }
}

describeWithQemuImg('host agent StorageAgentService', () => {
  let root: string;
  let srRoot: string;
  let catalogueDir: string;
  let app: INestMicroservice;
  let address: string;
  let client: GrpcClient<storageV1.StorageAgentServiceClient>;
  let call: GrpcClient<storageV1.StorageAgentServiceClient>['call'];
  const driver = new FakeDriver();
  let srCount = 0;

  beforeAll(async () => {
    root = fs.mkdtempSync(path.join(os.tmpdir(), 'flotilla-agent-storage-'));
    srRoot = path.join(root, 'srs');
    catalogueDir = path.join(root, 'images');
    fs.mkdirSync(srRoot);
    fs.mkdirSync(catalogueDir);
    address = `127.0.0.1:${await freePort()}`;
    app = await startGrpcService({
      module: StorageAgentModule.with({
        identity: new ServiceIdentity(TOKEN),
        driver: driver as unknown as HypervisorDriver,
        catalogue: new HostImageCatalogue(catalogueDir, 'host-1'),
        srPaths: new SrPaths([srRoot]),
      }),
      address,
      areas: ['storage'],
      healthServices: ['flotilla.storage.v1.StorageAgentService'],
      logger: createLogger('agent-storage-test', 'silent'),
    });
    client = new GrpcClient({
      address,
      service: 'flotilla.storage.v1.StorageAgentService',
      staticMetadata: { [md.serviceToken]: TOKEN },
      defaultDeadlineMs: 60_000,
    });
    call = client.call;
  });
  afterAll(async () => {
    client?.close();
    await app?.close();
    fs.rmSync(root, { recursive: true, force: true });
  });

  /** A fresh attached SR. */
  const newSr = async () => {
    const srId = `sr-${++srCount}`;
    const srPath = path.join(srRoot, srId);
    await call.attachSr({ srId, srPath, createDirectory: true, adoptExisting: false });
    return { srId, srPath, at: (file: string) => ({ srId, srPath, file }) };
  };
  const collect = async <T>(stream: AsyncIterable<T>) => {
    const out: T[] = [];
    for await (const m of stream) out.push(m);
    return out;
  };
  /** ImportDisk as a client stream: the header, then the bytes in 256 KiB chunks. */
  const upload = (header: storageV1.ImportDiskHeader, bytes: Buffer) =>
    new Promise<storageV1.ImportDiskResponse>((resolve, reject) => {
      const metadata = new grpc.Metadata();
      metadata.set(md.serviceToken, TOKEN);
      const raw = client.raw as unknown as {
        importDisk: (
          m: grpc.Metadata,
          o: grpc.CallOptions,
          cb: (e: grpc.ServiceError | null, r: storageV1.ImportDiskResponse) => void,
        ) => grpc.ClientWritableStream<storageV1.ImportDiskRequest>;
      };
      const stream = raw.importDisk(metadata, { deadline: Date.now() + 60_000 }, (e, r) =>
        e ? reject(e) : resolve(r),
      );
      stream.write({ header });
      for (let at = 0; at < bytes.length; at += 256 * 1024)
        stream.write({ chunk: bytes.subarray(at, at + 256 * 1024) });
      stream.end();
    });
  const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

  it('refuses a call without the service identity with UNAUTHENTICATED', async () => {
    const anonymous = new GrpcClient<storageV1.StorageAgentServiceClient>({
      address,
      service: 'flotilla.storage.v1.StorageAgentService',
    });
    try {
      expect(
        await rejection(anonymous.call.statSr({ srId: 'x', srPath: path.join(srRoot, 'x') })),
      ).toMatchObject({
        code: 'UNAUTHENTICATED',
      });
    } finally {
      anonymous.close();
    }
  });

  it('attaches an SR directory under a root, reporting its space; a repeat is success', async () => {
    const srPath = path.join(srRoot, 'attach-me');
    const first = await call.attachSr({ srId: 'sr-a', srPath, createDirectory: true, adoptExisting: false });
    expect(first).toMatchObject({ srId: 'sr-a', createdDirectory: true });
    expect(first.capacityBytes).toBeGreaterThan(0);
    const again = await call.attachSr({ srId: 'sr-a', srPath, createDirectory: true, adoptExisting: false });
    expect(again.createdDirectory).toBe(false);
    expect(
      await rejection(call.attachSr({ srId: 'sr-b', srPath, createDirectory: false, adoptExisting: false })),
    ).toMatchObject({
      code: 'ALREADY_EXISTS',
    });
  });

  it.each([
    ['outside the SR roots', () => path.join(root, 'elsewhere'), 'outside this host'],
    ['with ..', () => `${srRoot}/a/../../escape`, 'must not contain ".."'],
    ['relative', () => 'relative/sr', 'must be an absolute directory'],
    ['that is a root itself', () => srRoot, 'outside this host'],
  ])('refuses an sr_path %s with INVALID_ARGUMENT naming the field', async (_what, srPath, message) => {
    const refused = await rejection(
      call.attachSr({ srId: 'x', srPath: srPath(), createDirectory: true, adoptExisting: false }),
    );
    expect(refused).toMatchObject({ code: 'INVALID_ARGUMENT', field: 'sr_path' });
    expect(refused.message).toContain(message);
  });

  it('refuses a symlinked SR directory', async () => {
    fs.mkdirSync(path.join(root, 'real-dir'));
    fs.symlinkSync(path.join(root, 'real-dir'), path.join(srRoot, 'linked'));
    const refused = await rejection(
      call.attachSr({
        srId: 'x',
        srPath: path.join(srRoot, 'linked'),
        createDirectory: true,
        adoptExisting: false,
      }),
    );
    expect(refused).toMatchObject({ code: 'INVALID_ARGUMENT', field: 'sr_path' });
    expect(refused.message).toContain('symbolic link');
  });

  it('refuses a disk call on a directory without the marker of the SR with FAILED_PRECONDITION', async () => {
    const sr = await newSr();
    const wrong = await rejection(call.statSr({ srId: 'another-sr', srPath: sr.srPath }));
    expect(wrong.code).toBe('FAILED_PRECONDITION');
    expect(wrong.message).toContain(`holds the marker of SR ${sr.srId}`);
    fs.mkdirSync(path.join(srRoot, 'unmarked'));
    const unmarked = await rejection(
      call.createDisk({
        disk: { srId: 'x', srPath: path.join(srRoot, 'unmarked'), file: 'a.qcow2' },
        virtualSizeBytes: MIB,
        backingFile: '',
      }),
    );
    expect(unmarked.code).toBe('FAILED_PRECONDITION');
    expect(unmarked.message).toContain('no Flotilla SR marker');
  });

  it.each([['../a.qcow2'], ['a/b.qcow2'], ['.hidden']])(
    'refuses the file name %s naming disk.file',
    async (file) => {
      const sr = await newSr();
      const refused = await rejection(
        call.createDisk({ disk: sr.at(file), virtualSizeBytes: MIB, backingFile: '' }),
      );
      expect(refused).toMatchObject({ code: 'INVALID_ARGUMENT', field: 'disk.file' });
    },
  );

  it('creates, describes, grows, snapshots and deletes disks, each call repeatable', async () => {
    const sr = await newSr();
    const created = await call.createDisk({
      disk: sr.at('d.qcow2'),
      virtualSizeBytes: 10 * MIB,
      backingFile: '',
    });
    expect(created.info).toMatchObject({
      file: 'd.qcow2',
      format: F.DISK_FORMAT_QCOW2,
      virtualSizeBytes: 10 * MIB,
      backingFile: '',
    });
    expect(
      (await call.createDisk({ disk: sr.at('d.qcow2'), virtualSizeBytes: 10 * MIB, backingFile: '' })).info,
    ).toEqual(created.info);
    expect((await call.getDiskInfo({ disk: sr.at('d.qcow2') })).info?.virtualSizeBytes).toBe(10 * MIB);
    expect(
      (await call.resizeDisk({ disk: sr.at('d.qcow2'), virtualSizeBytes: 20 * MIB, vmId: '' })).info
        ?.virtualSizeBytes,
    ).toBe(20 * MIB);
    expect(
      await rejection(call.resizeDisk({ disk: sr.at('d.qcow2'), virtualSizeBytes: 5 * MIB, vmId: '' })),
    ).toMatchObject({
      code: 'INVALID_ARGUMENT',
      field: 'virtual_size_bytes',
    });
    const snap = await call.snapshotDisk({ disk: sr.at('d.qcow2'), newTopFile: 'd-1.qcow2', vmId: '' });
    expect(snap.newTop).toMatchObject({ file: 'd-1.qcow2', backingFile: 'd.qcow2' });
    expect(await rejection(call.deleteDisk({ disk: sr.at('d.qcow2') }))).toMatchObject({
      code: 'FAILED_PRECONDITION',
    });
    await call.deleteDisk({ disk: sr.at('d-1.qcow2') });
    await call.deleteDisk({ disk: sr.at('d-1.qcow2') });
    await call.deleteDisk({ disk: sr.at('d.qcow2') });
    expect((await call.scanSrFiles({ srId: sr.srId, srPath: sr.srPath })).files).toEqual([]);
  });

  it('refuses to delete a file a running VM has open, and snapshots it live through the driver', async () => {
    const sr = await newSr();
    await call.createDisk({ disk: sr.at('root.qcow2'), virtualSizeBytes: 8 * MIB, backingFile: '' });
    driver.vms.set('vm-1', [path.join(sr.srPath, 'root.qcow2')]);
    try {
      const refused = await rejection(call.deleteDisk({ disk: sr.at('root.qcow2') }));
      expect(refused.code).toBe('FAILED_PRECONDITION');
      expect(refused.message).toContain('open by running VM vm-1');
      const offline = await rejection(
        call.snapshotDisk({ disk: sr.at('root.qcow2'), newTopFile: 'root-1.qcow2', vmId: '' }),
      );
      expect(offline).toMatchObject({ code: 'FAILED_PRECONDITION', field: 'vm_id' });
      const live = await call.snapshotDisk({
        disk: sr.at('root.qcow2'),
        newTopFile: 'root-1.qcow2',
        vmId: 'vm-1',
      });
      expect(live.newTop).toMatchObject({ file: 'root-1.qcow2', backingFile: 'root.qcow2' });
      await call.snapshotDisk({ disk: sr.at('root.qcow2'), newTopFile: 'root-1.qcow2', vmId: 'vm-1' });
      expect(driver.calls).toEqual(['snapshot vm-1 root.qcow2 -> root-1.qcow2']);
      await call.resizeDisk({ disk: sr.at('root-1.qcow2'), virtualSizeBytes: 16 * MIB, vmId: 'vm-1' });
      expect(driver.calls).toContain(`resize vm-1 root-1.qcow2 ${16 * MIB}`);
      expect(
        await rejection(
          call.resizeDisk({ disk: sr.at('root-1.qcow2'), virtualSizeBytes: 32 * MIB, vmId: 'vm-9' }),
        ),
      ).toMatchObject({
        code: 'FAILED_PRECONDITION',
        field: 'vm_id',
      });
    } finally {
      driver.vms.clear();
    }
  });

  it('copies a disk to another SR with progress, the last message describing the finished target', async () => {
    const a = await newSr();
    const b = await newSr();
    await call.createDisk({ disk: a.at('src.qcow2'), virtualSizeBytes: 64 * MIB, backingFile: '' });
    execFileSync('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x42 0 64M', path.join(a.srPath, 'src.qcow2')]);
    const messages = await collect(
      client.stream<storageV1.CopyDiskResponse>('copyDisk', {
        sourceDisk: a.at('src.qcow2'),
        sourceFormat: F.DISK_FORMAT_UNSPECIFIED,
        target: b.at('copy.qcow2'),
        targetFormat: F.DISK_FORMAT_UNSPECIFIED,
        targetBackingFile: '',
      }),
    );
    expect(messages.length).toBeGreaterThan(1);
    const last = messages[messages.length - 1];
    expect(last.fraction).toBe(1);
    expect(last.done).toMatchObject({
      file: 'copy.qcow2',
      virtualSizeBytes: 64 * MIB,
      format: F.DISK_FORMAT_QCOW2,
    });
    expect(fs.readdirSync(b.srPath).filter((n) => !n.startsWith('.'))).toEqual(['copy.qcow2']);
  });

  it('copies a catalogue image given with its format, and refuses a catalogue path that leaves the catalogue', async () => {
    const sr = await newSr();
    fs.mkdirSync(path.join(catalogueDir, 'demo'), { recursive: true });
    execFileSync('qemu-img', [
      'create',
      '-q',
      '-f',
      'qcow2',
      path.join(catalogueDir, 'demo', 'disk.qcow2'),
      '16M',
    ]);
    const messages = await collect(
      client.stream<storageV1.CopyDiskResponse>('copyDisk', {
        catalogueFile: 'demo/disk.qcow2',
        sourceFormat: F.DISK_FORMAT_QCOW2,
        target: sr.at('root.qcow2'),
        targetFormat: F.DISK_FORMAT_QCOW2,
        targetBackingFile: '',
      }),
    );
    expect(messages[messages.length - 1].done?.virtualSizeBytes).toBe(16 * MIB);
    const escape = await rejection(
      collect(
        client.stream('copyDisk', {
          catalogueFile: '../srs/secret.qcow2',
          sourceFormat: F.DISK_FORMAT_QCOW2,
          target: sr.at('x.qcow2'),
          targetFormat: F.DISK_FORMAT_QCOW2,
          targetBackingFile: '',
        }),
      ),
    );
    expect(escape).toMatchObject({ code: 'INVALID_ARGUMENT', field: 'catalogue_file' });
    const unspecified = await rejection(
      collect(
        client.stream('copyDisk', {
          catalogueFile: 'demo/disk.qcow2',
          sourceFormat: F.DISK_FORMAT_UNSPECIFIED,
          target: sr.at('y.qcow2'),
          targetFormat: F.DISK_FORMAT_QCOW2,
          targetBackingFile: '',
        }),
      ),
    );
    expect(unspecified).toMatchObject({ code: 'INVALID_ARGUMENT', field: 'source_format' });
  });

  it('imports an upload after checking its size and SHA-256, and exports it back byte for byte as raw', async () => {
    const sr = await newSr();
    const data = Buffer.alloc(3 * MIB);
    for (let i = 0; i < data.length; i += 512) data.writeUInt32BE(i, i);
    const imported = await upload(
      { target: sr.at('up.qcow2'), format: F.DISK_FORMAT_RAW, sizeBytes: data.length, sha256: sha256(data) },
      data,
    );
    expect(imported.sha256).toBe(sha256(data));
    expect(imported.info).toMatchObject({
      file: 'up.qcow2',
      format: F.DISK_FORMAT_QCOW2,
      virtualSizeBytes: 3 * MIB,
    });
    const exported = await collect(
      client.stream<storageV1.ExportDiskResponse>('exportDisk', {
        disk: sr.at('up.qcow2'),
        format: F.DISK_FORMAT_RAW,
        compress: false,
        stagingFile: 'up-export',
      }),
    );
    const header = exported.find((m) => m.header)?.header;
    const chunks = exported.filter((m) => m.chunk).map((m) => Buffer.from(m.chunk!));
    expect(header).toMatchObject({
      format: F.DISK_FORMAT_RAW,
      sizeBytes: data.length,
      virtualSizeBytes: 3 * MIB,
    });
    expect(chunks.every((c) => c.length <= MIB)).toBe(true);
    expect(Buffer.concat(chunks).equals(data)).toBe(true);
    expect(exported[exported.length - 1].sha256).toBe(sha256(data));
    expect(fs.readdirSync(sr.srPath).filter((n) => n !== '.flotilla-sr.json')).toEqual(['up.qcow2']);
  });

  it('exports a streamOptimized VMDK with staging progress first, and leaves no staging file', async () => {
    const sr = await newSr();
    await call.createDisk({ disk: sr.at('v.qcow2'), virtualSizeBytes: 8 * MIB, backingFile: '' });
    const exported = await collect(
      client.stream<storageV1.ExportDiskResponse>('exportDisk', {
        disk: sr.at('v.qcow2'),
        format: F.DISK_FORMAT_VMDK,
        compress: false,
        stagingFile: '',
      }),
    );
    expect(exported[0].stagingProgress).toBeDefined();
    const bytes = Buffer.concat(exported.filter((m) => m.chunk).map((m) => Buffer.from(m.chunk!)));
    expect(bytes.subarray(0, 4).toString('latin1')).toBe('KDMV');
    expect(fs.readdirSync(sr.srPath).filter((n) => n !== '.flotilla-sr.json')).toEqual(['v.qcow2']);
  });

  it('refuses an upload whose size or SHA-256 does not match, leaving nothing', async () => {
    const sr = await newSr();
    const data = Buffer.alloc(MIB, 1);
    const short = await rejection(
      upload({ target: sr.at('a.qcow2'), format: F.DISK_FORMAT_RAW, sizeBytes: 2 * MIB, sha256: '' }, data),
    );
    expect(short).toMatchObject({ code: 'INVALID_ARGUMENT', field: 'header.size_bytes' });
    const corrupt = await rejection(
      upload(
        { target: sr.at('a.qcow2'), format: F.DISK_FORMAT_RAW, sizeBytes: MIB, sha256: '0'.repeat(64) },
        data,
      ),
    );
    expect(corrupt).toMatchObject({ code: 'INVALID_ARGUMENT', field: 'header.sha256' });
    expect(fs.readdirSync(sr.srPath)).toEqual(['.flotilla-sr.json']);
  });

  it('refuses an upload naming a host file as its data file, and the secret reaches no file of the SR', async () => {
    const sr = await newSr();
    const secretFile = path.join(root, 'host-secret');
    const crafted = path.join(root, 'crafted.qcow2');
    qcow2WithDataFile(crafted, secretFile);
    writeSecret(secretFile, 'AGENT-SECRET-0042');
    const bytes = fs.readFileSync(crafted);
    const refused = await rejection(
      upload(
        { target: sr.at('evil.qcow2'), format: F.DISK_FORMAT_QCOW2, sizeBytes: bytes.length, sha256: '' },
        bytes,
      ),
    );
    expect(refused.code).toBe('FAILED_PRECONDITION');
    expect(refused.message).toContain('external data file');
    expect(fs.readdirSync(sr.srPath)).toEqual(['.flotilla-sr.json']);
  });

  it('reports scanned files with the reason the inspector refused some', async () => {
    const sr = await newSr();
    await call.createDisk({ disk: sr.at('ok.qcow2'), virtualSizeBytes: MIB, backingFile: '' });
    fs.writeFileSync(path.join(sr.srPath, 'junk.bin'), 'junk');
    const { files } = await call.scanSrFiles({ srId: sr.srId, srPath: sr.srPath });
    expect(files.map((f) => [f.info?.file, f.refusedReason ? 'refused' : 'ok'])).toEqual([
      ['junk.bin', 'refused'],
      ['ok.qcow2', 'ok'],
    ]);
    const stat = await call.statSr({ srId: sr.srId, srPath: sr.srPath });
    expect(stat.physicalUtilisationBytes).toBeGreaterThan(0);
  });

  it('detaches an SR, removing the directory only when empty', async () => {
    const sr = await newSr();
    expect(await call.detachSr({ srId: sr.srId, srPath: sr.srPath, removeDirectory: true })).toEqual({
      removedDirectory: true,
    });
    expect(fs.existsSync(sr.srPath)).toBe(false);
    expect(await call.detachSr({ srId: sr.srId, srPath: sr.srPath, removeDirectory: true })).toEqual({
      removedDirectory: false,
    });
  });
});
