import * as path from 'node:path';
import { Metadata } from '@grpc/grpc-js';
import { commonV1, computeV1, storageV1 } from '@flotilla/contracts';
import {
  GrpcClient,
  LocalCloud,
  md,
  operationDone,
  startLocalCloud,
  TestTenant,
  testDatabase,
  uniqueSchema,
  vmRequest,
  waitFor,
} from '@flotilla/platform';
import type { ComputeVm } from './compute-link';
import { reconciledAttachment } from './vbd-reconciler';

const vm = (o: Partial<ComputeVm>): ComputeVm => ({
  id: 'v',
  name: 'v',
  tenantId: 't',
  powerState: 'RUNNING',
  hostId: 'h1',
  currentOperationId: '',
  ...o,
});
const attached = { state: 'ATTACHED' as const, hostId: 'h1', device: 'vdb', hotPlugged: true };
const detached = { state: 'DETACHED', hostId: null, device: '', hotPlugged: false };

describe('reconciledAttachment', () => {
  it.each([
    ['a VM that runs where the disk is attached', attached, vm({}), {}],
    [
      'a VM with an operation in flight (it attaches or detaches itself)',
      attached,
      vm({ currentOperationId: 'op', powerState: 'HALTED' }),
      {},
    ],
    ['a VM that halted without a detach', attached, vm({ powerState: 'HALTED', hostId: '' }), detached],
    ['a VM that no longer exists', attached, undefined, detached],
    ['a VM whose host stopped reporting', attached, vm({ powerState: 'UNKNOWN' }), { state: 'UNKNOWN' }],
    [
      'an UNKNOWN disk whose VM is back on its host',
      { ...attached, state: 'UNKNOWN' as const },
      vm({}),
      { state: 'ATTACHED' },
    ],
    [
      'an UNKNOWN disk whose VM still is UNKNOWN',
      { ...attached, state: 'UNKNOWN' as const },
      vm({ powerState: 'UNKNOWN' }),
      {},
    ],
  ])('%s', (_case, vbd, v, expected) => {
    expect(reconciledAttachment(vbd, v)).toEqual(expected);
  });
});

// Real: gateway, compute, storage, a sim host agent that stops and comes back, gRPC on loopback, the
// database, a shared SR and a qcow2 VDI made by the agent (qemu-img). Fake: the hypervisor (sim).
const databases = testDatabase('PostgreSQL');
describe.each(databases)('VBDs follow their VM when its host goes DOWN, on %s', (_db, url) => {
  let cloud: LocalCloud;
  let tenant: TestTenant;
  const service = <C>(name: string) =>
    new GrpcClient<C>({
      address: cloud.storageAddress,
      service: name.includes('.') ? name : `flotilla.storage.v1.${name}`,
      staticMetadata: { [md.serviceToken]: cloud.serviceToken },
      defaultDeadlineMs: 60_000,
    });
  let srs: GrpcClient<storageV1.SrServiceClient>;
  let vdis: GrpcClient<storageV1.VdiServiceClient>;
  let vbds: GrpcClient<storageV1.VbdServiceClient>;
  let storageOps: GrpcClient<commonV1.OperationServiceClient>;
  const onBehalf = () => {
    const m = new Metadata();
    m.set(md.tenantId, tenant.id);
    m.set(md.role, 'vm-admin');
    return { metadata: m };
  };
  const succeeded = async (op?: commonV1.Operation) =>
    expect((await operationDone(storageOps, op!.id, 60_000)).error?.message ?? '').toBe('');

  beforeAll(async () => {
    cloud = await startLocalCloud({
      databaseUrl: url,
      schemaPrefix: uniqueSchema('vbdrec'),
      agents: [{ name: 'host-r' }],
      computeEnv: { FLOTILLA_HOST_DOWN_AFTER_MS: '1500', FLOTILLA_HEARTBEAT_INTERVAL_MS: '300' },
    });
    tenant = await cloud.tenant('vbdrec');
    srs = service('SrService');
    vdis = service('VdiService');
    vbds = service('VbdService');
    storageOps = service('flotilla.common.v1.OperationService');
  });
  afterAll(async () => {
    for (const c of [srs, vdis, vbds, storageOps]) c?.close();
    await cloud?.stop();
  });

  it('reads UNKNOWN while the host is DOWN and ATTACHED again when the host is back with the VM', async () => {
    const sr = await srs.call.createSr({
      requestId: '',
      name: 'rec',
      description: '',
      labels: {},
      type: storageV1.SrType.SR_TYPE_SHARED,
      hostId: '',
      path: path.join(path.dirname(cloud.imageDir), 'sr', 'rec'),
      tenantId: '',
      overprovisionRatio: 0,
      adoptExisting: false,
    });
    await succeeded(sr.operation);
    const disk = await vdis.call.createVdi(
      {
        requestId: '',
        srId: sr.sr!.id,
        name: 'rec-disk',
        description: '',
        labels: {},
        virtualSizeBytes: 16 << 20,
        sharable: false,
        image: '',
      },
      onBehalf(),
    );
    await succeeded(disk.operation);
    const created = await tenant.clients.vms.call.createVm(vmRequest({ name: 'rec-vm', start: false }));
    await operationDone(tenant.clients.operations, created.operation!.id);
    const { vbd } = await vbds.call.createVbd(
      {
        requestId: '',
        vmId: created.vm!.id,
        vdiId: disk.vdi!.id,
        type: storageV1.VbdType.VBD_TYPE_DISK,
        mode: storageV1.VbdMode.VBD_MODE_RW,
        bootable: false,
        labels: {},
        name: '',
      },
      onBehalf(),
    );
    const start = await tenant.clients.vms.call.startVm({ id: created.vm!.id, requestId: '', hostId: '' });
    expect((await operationDone(tenant.clients.operations, start.operation!.id)).state).toBe(
      'OPERATION_STATE_SUCCEEDED',
    );
    const state = async () => (await vbds.call.getVbd({ id: vbd!.id }, onBehalf())).vbd!.state;
    expect(await state()).toBe(storageV1.VbdState.VBD_STATE_ATTACHED);

    const [agent] = cloud.agents;
    await agent.stop();
    await waitFor(
      'the VBD to read UNKNOWN',
      async () => (await state()) === storageV1.VbdState.VBD_STATE_UNKNOWN,
      {
        timeoutMs: 30_000,
      },
    );
    // Still the VM's: nobody else may write the disk while its host may be using it.
    expect((await tenant.clients.vms.call.getVm({ id: created.vm!.id })).vm!.powerState).toBe(
      computeV1.PowerState.POWER_STATE_UNKNOWN,
    );

    await cloud.startAgent({ name: agent.name, stateDir: agent.stateDir });
    await waitFor(
      'the VBD to read ATTACHED again',
      async () => (await state()) === storageV1.VbdState.VBD_STATE_ATTACHED,
      {
        timeoutMs: 30_000,
      },
    );
  }, 90_000);
});
