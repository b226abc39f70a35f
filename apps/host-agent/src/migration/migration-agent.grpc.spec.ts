import { INestMicroservice } from '@nestjs/common';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { computeV1, migrationV1, storageV1 } from '@flotilla/contracts';
import {
  DriverCapabilities,
  DriverError,
  DriverIncoming,
  DriverIncomingOptions,
  DriverOutgoingState,
  DriverOutgoingStatus,
  DriverVmSpec,
  SimDriver,
  SR_MARKER,
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
import { HostRegistration, PerVmQueue } from '../host-state';
import { HostImageCatalogue } from '../image-catalogue';
import { SrPaths } from '../sr-paths';
import { MigrationAgentModule } from './migration-agent.module';

// Real: MigrationAgentService served by startGrpcService on loopback and called over gRPC as the migration
// service calls it, with the SR path checks on real directories. Fake: the hypervisor, a sim driver whose
// migration methods record what they are asked and answer from a table of migrations that outlives the
// driver object, as the real drivers' state directories outlive an agent.

const TOKEN = 'migration-agent-test-token';
const EPOCH = 4;
const LISTEN_HOST = '127.0.0.1';

type Call = { method: string; args: unknown[] };

/** What a driver keeps on disk: the migrations it knows, across agent restarts. */
class MigrationTable {
  readonly outgoing = new Map<string, DriverOutgoingStatus>();
}

class RecordingDriver extends SimDriver {
  readonly calls: Call[] = [];
  liveMigration = true;
  postCopy = false;
  /** Thrown by the next migration call. */
  failNext?: DriverError;
  /** Held open until released: a status long poll that has not answered yet. */
  holdStatus?: Promise<void>;

  constructor(
    stateDir: string,
    private readonly table: MigrationTable,
  ) {
    super({ stateDir, capacity: { cpus: 4, memoryMib: 4096 } });
  }

  override capabilities(): DriverCapabilities {
    return { ...super.capabilities(), liveMigration: this.liveMigration, postCopy: this.postCopy };
  }
  // Rest parameters: the sim driver may declare these with fewer parameters.
  override async prepareIncoming(...args: unknown[]): Promise<DriverIncoming> {
    this.record('prepareIncoming', args);
    const [spec, options] = args as [DriverVmSpec, DriverIncomingOptions];
    return {
      migrationAddress: `${options.listenHost}:49152`,
      ...(options.receiveDiskIds.length ? { nbdAddress: `${options.listenHost}:49153` } : {}),
      nbdExports: Object.fromEntries(options.receiveDiskIds.map((id) => [id, `disk-${id}`])),
      status: {
        vmId: spec.vmId,
        powerState: 'PAUSED',
        forwards: [{ guestPort: 80, hostAddress: '127.0.0.1:40080' }],
      },
    };
  }
  override async startDiskMirror(...args: unknown[]): Promise<void> {
    this.record('startDiskMirror', args);
  }
  override async startOutgoing(...args: unknown[]): Promise<void> {
    this.record('startOutgoing', args);
    this.table.outgoing.set(args[1] as string, status('setup'));
  }
  override async outgoingStatus(...args: unknown[]): Promise<DriverOutgoingStatus> {
    this.record('outgoingStatus', args);
    await this.holdStatus;
    const s = this.table.outgoing.get(args[1] as string);
    if (!s) throw new DriverError('not-found', `no migration ${String(args[1])} on this host`);
    return s;
  }
  override async tuneOutgoing(...args: unknown[]): Promise<void> {
    this.record('tuneOutgoing', args);
  }
  override async switchOver(...args: unknown[]): Promise<void> {
    this.record('switchOver', args);
    this.table.outgoing.set(args[1] as string, status('completed'));
  }
  override async cancelOutgoing(...args: unknown[]): Promise<void> {
    this.record('cancelOutgoing', args);
  }
  override async finishIncoming(...args: unknown[]): Promise<{ vmId: string; powerState: 'RUNNING' }> {
    this.record('finishIncoming', args);
    return { vmId: args[0] as string, powerState: 'RUNNING' };
  }
  override async abortIncoming(...args: unknown[]): Promise<void> {
    this.record('abortIncoming', args);
  }
  override async finishOutgoing(...args: unknown[]): Promise<void> {
    this.record('finishOutgoing', args);
  }

  private record(method: string, args: unknown[]): void {
    this.calls.push({ method, args });
    const fail = this.failNext;
    this.failNext = undefined;
    if (fail) throw fail;
  }
}

const status = (
  state: DriverOutgoingState,
  over: Partial<DriverOutgoingStatus> = {},
): DriverOutgoingStatus => ({
  state,
  totalTimeMs: 0,
  downtimeMs: 0,
  setupTimeMs: 0,
  expectedDowntimeMs: 0,
  memoryTotalBytes: 0,
  memoryTransferredBytes: 0,
  memoryRemainingBytes: 0,
  bytesTransferred: 0,
  rounds: 0,
  dirtyRateBytesPerSec: 0,
  transferRateBytesPerSec: 0,
  cpuThrottlePercent: 0,
  postCopyRequests: 0,
  disks: [],
  ...over,
});

describe('host agent MigrationAgentService', () => {
  let root: string;
  let srDir: string;
  let table: MigrationTable;
  let driver: RecordingDriver;
  let app: INestMicroservice;
  let address: string;
  const clients: Array<GrpcClient<migrationV1.MigrationAgentServiceClient>> = [];
  const srId = 'sr-local';

  /** An agent as agent.app starts one: a fresh driver re-attached to what the table holds. */
  const startAgent = async () => {
    driver = new RecordingDriver(path.join(root, 'sim'), table);
    await driver.recover();
    const registration = new HostRegistration();
    registration.epoch = EPOCH;
    app = await startGrpcService({
      module: MigrationAgentModule.with({
        identity: new ServiceIdentity(TOKEN),
        registration,
        driver,
        catalogue: new HostImageCatalogue(path.join(root, 'images'), 'host-1'),
        srPaths: new SrPaths([root]),
        queue: new PerVmQueue(),
        migrationHost: LISTEN_HOST,
      }),
      address,
      areas: ['migration'],
      healthServices: ['flotilla.migration.v1.MigrationAgentService'],
      logger: createLogger('migration-agent-test', 'silent'),
    });
  };
  const agent = (serviceToken = TOKEN) => {
    const c = new GrpcClient<migrationV1.MigrationAgentServiceClient>({
      address,
      service: 'flotilla.migration.v1.MigrationAgentService',
      staticMetadata: serviceToken ? { [md.serviceToken]: serviceToken } : {},
    });
    clients.push(c);
    return c.call;
  };
  const ids = { epoch: EPOCH, migrationId: 'mig-1', vmId: 'vm-1' };
  const vmDisk = (over: Partial<storageV1.VmDisk>): storageV1.VmDisk => ({
    vbdId: 'vbd-root',
    vdiId: 'vdi-1',
    devicePosition: 0,
    readOnly: false,
    bootable: false,
    srId,
    srPath: srDir,
    file: 'root.qcow2',
    ...over,
  });
  const spec = (disks: storageV1.VmDisk[]): computeV1.VmSpec => ({
    vmId: 'vm-1',
    name: 'web-1',
    vcpus: 1,
    memoryMib: 256,
    boot: { image: '', kernel: '', initrd: '', cmdline: '' },
    nics: [{ mac: '52:54:00:00:00:01', forwards: [{ guestPort: 80, hostAddress: '' }] }],
    kernelSha256: '',
    initrdSha256: '',
    disks,
  });
  const parameters: migrationV1.MigrationParameters = {
    downtimeLimitMs: 300,
    bandwidthBytesPerSec: 1024 ** 3,
    autoConverge: true,
    postCopy: false,
    switchWhenReady: false,
  };

  beforeEach(async () => {
    root = fs.mkdtempSync(path.join(os.tmpdir(), 'flotilla-agent-migration-'));
    srDir = path.join(root, 'local');
    fs.mkdirSync(srDir);
    fs.writeFileSync(path.join(srDir, SR_MARKER), JSON.stringify({ sr_id: srId }));
    table = new MigrationTable();
    address = `127.0.0.1:${await freePort()}`;
    await startAgent();
  });
  afterEach(async () => {
    for (const c of clients.splice(0)) c.close();
    await app?.close();
    fs.rmSync(root, { recursive: true, force: true });
  });

  it('refuses a call without the service identity with UNAUTHENTICATED, before the driver sees it', async () => {
    const refused = await rejection(agent('').switchOver(ids));
    expect(refused.code).toBe('UNAUTHENTICATED');
    expect(driver.calls).toEqual([]);
  });

  it('refuses a call carrying a stale epoch with FAILED_PRECONDITION naming the current one', async () => {
    const refused = await rejection(agent().getOutgoingStatus({ ...ids, epoch: EPOCH - 1, waitMs: 0 }));
    expect(refused.code).toBe('FAILED_PRECONDITION');
    expect(refused.message).toContain(`this host is at epoch ${EPOCH}`);
    expect(driver.calls).toEqual([]);
  });

  it('prepares the incoming VM from its spec as StartVm would, listening on the migration host', async () => {
    const answer = await agent().prepareIncoming({
      epoch: EPOCH,
      migrationId: 'mig-1',
      spec: spec([
        vmDisk({ vbdId: 'vbd-data', devicePosition: 1, file: 'data.qcow2' }),
        vmDisk({ vbdId: 'vbd-root', devicePosition: 0, bootable: true }),
      ]),
      receiveVbdIds: ['vbd-root', 'vbd-data'],
      postCopy: false,
      sourceDeviceLayout: '',
    });
    const [call] = driver.calls;
    expect(call.method).toBe('prepareIncoming');
    expect(call.args).toEqual([
      {
        vmId: 'vm-1',
        name: 'web-1',
        vcpus: 1,
        memoryMib: 256,
        boot: { kind: 'disk' },
        disks: [
          { id: 'vbd-root', path: path.join(srDir, 'root.qcow2'), format: 'qcow2', bootable: true },
          { id: 'vbd-data', path: path.join(srDir, 'data.qcow2'), format: 'qcow2' },
        ],
        nics: [{ mac: '52:54:00:00:00:01', forwards: [{ guestPort: 80 }] }],
      },
      {
        migrationId: 'mig-1',
        listenHost: LISTEN_HOST,
        receiveDiskIds: ['vbd-root', 'vbd-data'],
        postCopy: false,
        sourceDeviceLayout: '',
      },
    ]);
    expect(answer).toEqual({
      migrationAddress: '127.0.0.1:49152',
      nbdAddress: '127.0.0.1:49153',
      nbdExports: { 'vbd-root': 'disk-vbd-root', 'vbd-data': 'disk-vbd-data' },
      status: {
        vmId: 'vm-1',
        powerState: computeV1.PowerState.POWER_STATE_PAUSED,
        reason: '',
        nics: [{ mac: '', forwards: [{ guestPort: 80, hostAddress: '127.0.0.1:40080' }] }],
      },
    });
  });

  it.each<
    [string, migrationV1.PrepareIncomingRequest | (() => migrationV1.PrepareIncomingRequest), string, RegExp]
  >([
    [
      'a disk whose SR directory holds another SR',
      () => ({
        epoch: EPOCH,
        migrationId: 'mig-1',
        spec: spec([vmDisk({ srId: 'sr-other' })]),
        receiveVbdIds: [],
        postCopy: false,
        sourceDeviceLayout: '',
      }),
      'FAILED_PRECONDITION',
      /marker of SR sr-local/,
    ],
    [
      'a received disk that is not among the spec disks',
      () => ({
        epoch: EPOCH,
        migrationId: 'mig-1',
        spec: spec([vmDisk({})]),
        receiveVbdIds: ['vbd-nope'],
        postCopy: false,
        sourceDeviceLayout: '',
      }),
      'INVALID_ARGUMENT',
      /^receive_vbd_ids\[0\]: "vbd-nope" is not the vbd_id/,
    ],
    [
      'a spec without a VM id',
      () => ({
        epoch: EPOCH,
        migrationId: 'mig-1',
        spec: { ...spec([]), vmId: '' },
        receiveVbdIds: [],
        postCopy: false,
        sourceDeviceLayout: '',
      }),
      'INVALID_ARGUMENT',
      /vm_id: is required/,
    ],
    [
      'a migration id that could not be one',
      () => ({
        epoch: EPOCH,
        migrationId: '../x',
        spec: spec([]),
        receiveVbdIds: [],
        postCopy: false,
        sourceDeviceLayout: '',
      }),
      'INVALID_ARGUMENT',
      /^migration_id:/,
    ],
    [
      'post-copy on a host that cannot do it',
      () => ({
        epoch: EPOCH,
        migrationId: 'mig-1',
        spec: spec([]),
        receiveVbdIds: [],
        postCopy: true,
        sourceDeviceLayout: '',
      }),
      'FAILED_PRECONDITION',
      /post-copy/,
    ],
  ])('refuses to prepare %s and asks the driver nothing', async (_, request, code, message) => {
    const refused = await rejection(
      agent().prepareIncoming(typeof request === 'function' ? request() : request),
    );
    expect(refused.code).toBe(code);
    expect(refused.message).toMatch(message);
    expect(driver.calls).toEqual([]);
  });

  it('refuses to start a migration on a host whose driver cannot live-migrate', async () => {
    driver.liveMigration = false;
    const refused = await rejection(
      agent().startOutgoing({ ...ids, destinationAddress: '127.0.0.1:49152', parameters }),
    );
    expect(refused).toMatchObject({
      code: 'FAILED_PRECONDITION',
      message: expect.stringMatching(/cannot live-migrate/),
    });
  });

  it('starts sending memory with every parameter set explicitly, the armed switch included', async () => {
    await agent().startOutgoing({ ...ids, destinationAddress: '10.0.0.2:49152', parameters });
    await agent().startOutgoing({
      ...ids,
      destinationAddress: '10.0.0.2:49152',
      parameters: { ...parameters, switchWhenReady: true },
    });
    const sent = {
      downtimeLimitMs: 300,
      bandwidthBytesPerSec: 1024 ** 3,
      autoConverge: true,
      postCopy: false,
    };
    expect(driver.calls).toEqual([
      {
        method: 'startOutgoing',
        args: ['vm-1', 'mig-1', '10.0.0.2:49152', { ...sent, switchWhenReady: false }],
      },
      {
        method: 'startOutgoing',
        args: ['vm-1', 'mig-1', '10.0.0.2:49152', { ...sent, switchWhenReady: true }],
      },
    ]);
  });

  it.each<[string, Partial<migrationV1.StartOutgoingRequest>, string]>([
    ['no parameters', { parameters: undefined }, 'parameters'],
    [
      'a downtime limit above a minute',
      { parameters: { ...parameters, downtimeLimitMs: 60_001 } },
      'parameters.downtime_limit_ms',
    ],
    [
      'no bandwidth cap',
      { parameters: { ...parameters, bandwidthBytesPerSec: 0 } },
      'parameters.bandwidth_bytes_per_sec',
    ],
    ['an empty destination address', { destinationAddress: '' }, 'destination_address'],
  ])('refuses to start sending memory with %s, naming the field', async (_, over, field) => {
    const refused = await rejection(
      agent().startOutgoing({ ...ids, destinationAddress: '10.0.0.2:49152', parameters, ...over }),
    );
    expect(refused).toMatchObject({ code: 'INVALID_ARGUMENT', field });
    expect(driver.calls).toEqual([]);
  });

  it('mirrors disks to the NBD exports the destination answered', async () => {
    await agent().startDiskMirror({
      ...ids,
      targets: [{ vbdId: 'vbd-root', nbdAddress: '10.0.0.2:49153', exportName: 'disk-vbd-root' }],
      bandwidthBytesPerSec: 512 * 1024 ** 2,
    });
    expect(driver.calls).toEqual([
      {
        method: 'startDiskMirror',
        args: [
          'vm-1',
          'mig-1',
          [{ diskId: 'vbd-root', nbdAddress: '10.0.0.2:49153', exportName: 'disk-vbd-root' }],
          512 * 1024 ** 2,
        ],
      },
    ]);
  });

  it.each<[DriverOutgoingState, string]>([
    ['mirroring', 'OUTGOING_STATE_MIRRORING'],
    ['setup', 'OUTGOING_STATE_SETUP'],
    ['active', 'OUTGOING_STATE_ACTIVE'],
    ['pre-switchover', 'OUTGOING_STATE_PRE_SWITCHOVER'],
    ['device', 'OUTGOING_STATE_DEVICE'],
    ['postcopy-active', 'OUTGOING_STATE_POSTCOPY_ACTIVE'],
    ['completed', 'OUTGOING_STATE_COMPLETED'],
    ['failed', 'OUTGOING_STATE_FAILED'],
    ['cancelling', 'OUTGOING_STATE_CANCELLING'],
    ['cancelled', 'OUTGOING_STATE_CANCELLED'],
  ])('reports the driver state %s as %s', async (state, name) => {
    table.outgoing.set('mig-1', status(state));
    const { status: reported } = await agent().getOutgoingStatus({ ...ids, waitMs: 0 });
    expect(reported?.state).toBe(name);
  });

  it('reports the statistics and the disks of an outgoing migration as the driver measured them', async () => {
    table.outgoing.set(
      'mig-1',
      status('active', {
        totalTimeMs: 850,
        expectedDowntimeMs: 35,
        memoryTotalBytes: 512 * 1024 ** 2,
        memoryRemainingBytes: 64 * 1024 ** 2,
        bytesTransferred: 700 * 1024 ** 2,
        rounds: 3,
        dirtyRateBytesPerSec: 80 * 1024 ** 2,
        cpuThrottlePercent: 20,
        disks: [{ diskId: 'vbd-root', totalBytes: 1024, doneBytes: 1024, ready: true }],
      }),
    );
    const { status: reported } = await agent().getOutgoingStatus({ ...ids, waitMs: 0 });
    expect(reported).toMatchObject({
      state: 'OUTGOING_STATE_ACTIVE',
      error: '',
      totalTimeMs: 850,
      expectedDowntimeMs: 35,
      memoryRemainingBytes: 64 * 1024 ** 2,
      bytesTransferred: 700 * 1024 ** 2,
      rounds: 3,
      dirtyRateBytesPerSec: 80 * 1024 ** 2,
      cpuThrottlePercent: 20,
      disks: [{ vbdId: 'vbd-root', totalBytes: 1024, doneBytes: 1024, ready: true, error: '' }],
    });
  });

  it('long-polls the driver for at most 10 s whatever wait the caller asks', async () => {
    table.outgoing.set('mig-1', status('active'));
    await agent().getOutgoingStatus({ ...ids, waitMs: 60_000 });
    await agent().getOutgoingStatus({ ...ids, waitMs: 250 });
    expect(driver.calls.map((c) => c.args[2])).toEqual([10_000, 250]);
  });

  it('answers a cancel while a status long poll of the same VM is still waiting', async () => {
    table.outgoing.set('mig-1', status('active'));
    let release = () => undefined as void;
    driver.holdStatus = new Promise<void>((r) => (release = r));
    const polling = agent().getOutgoingStatus({ ...ids, waitMs: 10_000 });
    await agent().cancelOutgoing(ids);
    release();
    await polling;
    expect(driver.calls.map((c) => c.method)).toEqual(['outgoingStatus', 'cancelOutgoing']);
  });

  it.each<[DriverError['kind'], string]>([
    ['invalid-state', 'FAILED_PRECONDITION'],
    ['not-found', 'NOT_FOUND'],
    ['capacity', 'RESOURCE_EXHAUSTED'],
    ['invalid-spec', 'INVALID_ARGUMENT'],
    ['unsupported', 'UNIMPLEMENTED'],
    ['failed', 'INTERNAL'],
    ['timeout', 'DEADLINE_EXCEEDED'],
  ])("answers the driver's %s error with %s and its message", async (kind, code) => {
    driver.failNext = new DriverError(kind, 'vm vm-1 is migrating as mig-0');
    const refused = await rejection(agent().switchOver(ids));
    expect(refused.code).toBe(code);
    // INTERNAL hides nothing here: the driver's messages name no secrets and say what happened.
    if (code !== 'INTERNAL') expect(refused.message).toBe('vm vm-1 is migrating as mig-0');
  });

  it('answers NOT_FOUND for the status of a migration the driver does not know', async () => {
    const refused = await rejection(
      agent().getOutgoingStatus({ ...ids, migrationId: 'mig-unknown', waitMs: 0 }),
    );
    expect(refused.code).toBe('NOT_FOUND');
  });

  it('tunes the bandwidth and switches to post-copy, and refuses a tune that changes nothing', async () => {
    await agent().tuneOutgoing({ ...ids, bandwidthBytesPerSec: 2 * 1024 ** 3, startPostCopy: false });
    await agent().tuneOutgoing({ ...ids, bandwidthBytesPerSec: 0, startPostCopy: true });
    const refused = await rejection(
      agent().tuneOutgoing({ ...ids, bandwidthBytesPerSec: 0, startPostCopy: false }),
    );
    expect(refused).toMatchObject({ code: 'INVALID_ARGUMENT', field: 'bandwidth_bytes_per_sec' });
    expect(driver.calls.map((c) => c.args[2])).toEqual([
      { bandwidthBytesPerSec: 2 * 1024 ** 3 },
      { startPostCopy: true },
    ]);
  });

  it('finishes the incoming VM with a 30 s default wait and reports it running', async () => {
    const { status: vm } = await agent().finishIncoming({ ...ids, timeoutMs: 0 });
    expect(vm?.powerState).toBe(computeV1.PowerState.POWER_STATE_RUNNING);
    expect(driver.calls).toEqual([{ method: 'finishIncoming', args: ['vm-1', 'mig-1', 30_000] }]);
  });

  it('carries a migration on after the agent restarts: the driver knows it, the agent keeps nothing', async () => {
    await agent().startOutgoing({ ...ids, destinationAddress: '127.0.0.1:49152', parameters });
    table.outgoing.set('mig-1', status('pre-switchover', { rounds: 4 }));
    for (const c of clients.splice(0)) c.close();
    await app.close();
    await startAgent();

    const call = agent();
    expect((await call.getOutgoingStatus({ ...ids, waitMs: 0 })).status).toMatchObject({
      state: 'OUTGOING_STATE_PRE_SWITCHOVER',
      rounds: 4,
    });
    await call.switchOver(ids);
    await call.finishOutgoing(ids);
    expect((await call.getOutgoingStatus({ ...ids, waitMs: 0 })).status?.state).toBe(
      'OUTGOING_STATE_COMPLETED',
    );
    expect(driver.calls.map((c) => c.method)).toEqual([
      'outgoingStatus',
      'switchOver',
      'finishOutgoing',
      'outgoingStatus',
    ]);
  });
});
