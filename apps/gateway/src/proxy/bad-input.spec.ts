import { status } from '@grpc/grpc-js';
import { commonV1, computeV1 } from '@flotilla/contracts';
import {
  CloudClients,
  LocalCloud,
  operationDone,
  rejection,
  startLocalCloud,
  TestTenant,
  testDatabases,
  uniqueSchema,
  waitFor,
  vmRequest,
} from '@flotilla/platform';

// Real: gateway (relays errors and their x-flotilla-field trailer), compute (edge validation), gRPC on
// loopback, the database (PGlite and PostgreSQL). Fake: the hypervisor (sim driver).

const vm = (over: Partial<computeV1.CreateVmRequest>): computeV1.CreateVmRequest =>
  vmRequest({ name: 'valid-name', flavorId: '', vcpus: 1, memoryMib: 256, start: false, ...over });
const page = (over: Partial<commonV1.PageRequest>): commonV1.PageRequest => ({
  pageSize: 0,
  pageToken: '',
  filter: '',
  ...over,
});

type Case = [
  what: string,
  code: string,
  field: string,
  call: (c: CloudClients, vmId: string) => Promise<unknown>,
];

const cases: Case[] = [
  ['an empty VM name', 'INVALID_ARGUMENT', 'name', (c) => c.vms.call.createVm(vm({ name: '' }))],
  [
    'a VM name of 64 characters',
    'INVALID_ARGUMENT',
    'name',
    (c) => c.vms.call.createVm(vm({ name: 'n'.repeat(64) })),
  ],
  [
    'a VM name of 100 000 characters',
    'INVALID_ARGUMENT',
    'name',
    (c) => c.vms.call.createVm(vm({ name: 'n'.repeat(100_000) })),
  ],
  [
    'a VM name with spaces and symbols',
    'INVALID_ARGUMENT',
    'name',
    (c) => c.vms.call.createVm(vm({ name: 'my vm!' })),
  ],
  ['negative vCPUs', 'INVALID_ARGUMENT', 'vcpus', (c) => c.vms.call.createVm(vm({ vcpus: -1 }))],
  ['100 000 vCPUs', 'INVALID_ARGUMENT', 'vcpus', (c) => c.vms.call.createVm(vm({ vcpus: 100_000 }))],
  ['negative memory', 'INVALID_ARGUMENT', 'memory_mib', (c) => c.vms.call.createVm(vm({ memoryMib: -256 }))],
  [
    'a petabyte of memory',
    'INVALID_ARGUMENT',
    'memory_mib',
    (c) => c.vms.call.createVm(vm({ memoryMib: 1_000_000_000_000 })),
  ],
  [
    'an unknown flavor',
    'NOT_FOUND',
    'flavor_id',
    (c) => c.vms.call.createVm(vm({ vcpus: 0, memoryMib: 0, flavorId: 'm9.gigantic' })),
  ],
  [
    'a flavor and explicit sizing together',
    'INVALID_ARGUMENT',
    'flavor_id',
    (c) => c.vms.call.createVm(vm({ flavorId: 'm1.tiny' })),
  ],
  [
    'no sizing at all',
    'INVALID_ARGUMENT',
    'flavor_id',
    (c) => c.vms.call.createVm(vm({ vcpus: 0, memoryMib: 0 })),
  ],
  [
    'a label key with capitals and spaces',
    'INVALID_ARGUMENT',
    'labels.Bad Key',
    (c) => c.vms.call.createVm(vm({ labels: { 'Bad Key': 'x' } })),
  ],
  [
    'a request_id of 200 characters',
    'INVALID_ARGUMENT',
    'request_id',
    (c) => c.vms.call.createVm(vm({ requestId: 'r'.repeat(200) })),
  ],
  [
    'a kernel path from a tenant',
    'INVALID_ARGUMENT',
    'boot.kernel',
    (c) => c.vms.call.createVm(vm({ boot: { image: '', kernel: '/etc/passwd', initrd: '', cmdline: '' } })),
  ],
  [
    'a malformed anti-affinity group',
    'INVALID_ARGUMENT',
    'anti_affinity_group',
    (c) => c.vms.call.createVm(vm({ antiAffinityGroup: '../group' })),
  ],
  ['a malformed VM id', 'INVALID_ARGUMENT', 'id', (c) => c.vms.call.getVm({ id: 'not-a-uuid' })],
  ['an empty VM id', 'INVALID_ARGUMENT', 'id', (c) => c.vms.call.getVm({ id: '' })],
  [
    'a malformed VM id in a power operation',
    'INVALID_ARGUMENT',
    'id',
    (c) => c.vms.call.pauseVm({ id: "1' OR '1'='1", requestId: '' }),
  ],
  [
    'a malformed operation id',
    'INVALID_ARGUMENT',
    'id',
    (c) => c.operations.call.getOperation({ id: 'op-1' }),
  ],
  [
    'shutdown mode 99, an enum value the contract does not have',
    'INVALID_ARGUMENT',
    'mode',
    (c, id) =>
      c.vms.call.shutdownVm({
        id,
        requestId: '',
        mode: 99 as unknown as computeV1.ShutdownMode,
        timeoutMs: 0,
      }),
  ],
  [
    'a negative shutdown timeout',
    'INVALID_ARGUMENT',
    'timeout_ms',
    (c, id) =>
      c.vms.call.shutdownVm({
        id,
        requestId: '',
        mode: computeV1.ShutdownMode.SHUTDOWN_MODE_CLEAN,
        timeoutMs: -1,
      }),
  ],
  [
    'page_size 100000',
    'INVALID_ARGUMENT',
    'page.page_size',
    (c) => c.vms.call.listVms({ page: page({ pageSize: 100_000 }) }),
  ],
  [
    'a negative page_size',
    'INVALID_ARGUMENT',
    'page.page_size',
    (c) => c.vms.call.listVms({ page: page({ pageSize: -1 }) }),
  ],
  [
    'an unknown filter field',
    'INVALID_ARGUMENT',
    'page.filter',
    (c) => c.vms.call.listVms({ page: page({ filter: 'colour=red' }) }),
  ],
  [
    'a filter term without "="',
    'INVALID_ARGUMENT',
    'page.filter',
    (c) => c.vms.call.listVms({ page: page({ filter: 'running' }) }),
  ],
  [
    'a filter of 2000 characters',
    'INVALID_ARGUMENT',
    'page.filter',
    (c) => c.vms.call.listVms({ page: page({ filter: `name=${'x'.repeat(2000)}` }) }),
  ],
  [
    'a page token the server never issued',
    'INVALID_ARGUMENT',
    'page.page_token',
    (c) => c.vms.call.listVms({ page: page({ pageToken: 'bogus' }) }),
  ],
  [
    'an unknown filter field on operations',
    'INVALID_ARGUMENT',
    'page.filter',
    (c) => c.operations.call.listOperations({ page: page({ filter: 'owner=me' }) }),
  ],
  [
    'nine NICs',
    'INVALID_ARGUMENT',
    'nics',
    (c) => c.vms.call.createVm(vm({ nics: Array.from({ length: 9 }, () => ({ mac: '', forwards: [] })) })),
  ],
  [
    'a multicast MAC',
    'INVALID_ARGUMENT',
    'nics[0].mac',
    (c) => c.vms.call.createVm(vm({ nics: [{ mac: '01:00:5e:00:00:01', forwards: [] }] })),
  ],
  [
    'a forwarded guest port of 70000',
    'INVALID_ARGUMENT',
    'nics[0].forwards[0].guest_port',
    (c) =>
      c.vms.call.createVm(vm({ nics: [{ mac: '', forwards: [{ guestPort: 70_000, hostAddress: '' }] }] })),
  ],
  [
    'a console log of 2 MiB',
    'INVALID_ARGUMENT',
    'max_bytes',
    (c, id) => c.vms.call.getVmConsoleLog({ id, maxBytes: 2 * 1024 * 1024 }),
  ],
  [
    'a wait of two minutes',
    'INVALID_ARGUMENT',
    'timeout_ms',
    (c, id) => c.operations.call.waitOperation({ id, timeoutMs: 120_000 }),
  ],
];

describe.each(testDatabases())('bad input through the gateway on %s', (_db, url) => {
  let cloud: LocalCloud;
  let tenant: TestTenant;
  let vmId: string;

  beforeAll(async () => {
    cloud = await startLocalCloud({ databaseUrl: url, schemaPrefix: uniqueSchema('input') });
    tenant = await cloud.tenant('inputs');
    const created = await tenant.clients.vms.call.createVm(vm({ name: 'target', start: true }));
    await operationDone(tenant.clients.operations, created.operation!.id);
    vmId = created.vm!.id;
  });
  afterAll(() => cloud?.stop());

  it.each(cases)('refuses %s with %s naming the field %s', async (_what, code, field, call) => {
    const refused = await rejection(call(tenant.clients, vmId));
    expect(refused).toMatchObject({ code, field });
    // An invalid argument's message starts with the field; every message stays bounded whatever the input.
    if (code === 'INVALID_ARGUMENT') expect(refused.message.startsWith(`${field}: `)).toBe(true);
    expect(refused.message.length).toBeLessThan(600);
  });

  it('refuses a console stream whose first request names no VM, naming the field', async () => {
    const stream = tenant.clients.vms.duplex<
      computeV1.AttachVmConsoleRequest,
      computeV1.AttachVmConsoleResponse
    >('AttachVmConsole');
    stream.write({ id: '', data: Buffer.from('hello') });
    const refused = await new Promise<{ code: number; message: string }>((resolve) => {
      stream.on('error', (e: { code: number; message: string }) => resolve(e));
      stream.on('data', () => undefined);
    });
    expect(refused.code).toBe(status.INVALID_ARGUMENT);
    expect(refused.message).toContain('id: is required in the first request');
  });

  it('says that a sim host has no console or metrics (UNIMPLEMENTED), not a fake answer', async () => {
    const refused = await rejection(tenant.clients.vms.call.getVmMetrics({ id: vmId }));
    expect(refused.code).toBe('UNIMPLEMENTED');
    expect(refused.message).toContain('sim driver runs no guest');
  });

  it('leaves the VM as it was after refusing bad power operations on it', async () => {
    const { vm: after } = await tenant.clients.vms.call.getVm({ id: vmId });
    expect(after).toMatchObject({
      powerState: computeV1.PowerState.POWER_STATE_RUNNING,
      currentOperationId: '',
    });
  });

  it.each([
    ['an unknown resource kind', 'cursor.kinds', { resumeToken: '', kinds: ['dragons'] }],
    ['a malformed resume token', 'resume_token', { resumeToken: 'yesterday', kinds: [] }],
  ])('refuses a Watch with %s with INVALID_ARGUMENT naming %s', async (_what, field, cursor) => {
    const stream = tenant.clients.events.stream<computeV1.WatchResponse>('Watch', { cursor });
    let failure: { code?: number; details?: string; metadata?: { get(k: string): unknown[] } } | undefined;
    stream.on('error', (e) => (failure = e as typeof failure));
    stream.on('data', () => undefined);
    await waitFor('the Watch to fail', () => failure);
    expect(failure!.code).toBe(status.INVALID_ARGUMENT);
    expect(String(failure!.metadata?.get('x-flotilla-field')[0])).toBe(field);
  });
});
