import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { DriverVmSpec } from '../driver';
import { SimDriver } from './sim-driver';

const spec: DriverVmSpec = {
  vmId: 'vm-1',
  name: 'web',
  vcpus: 1,
  memoryMib: 256,
  boot: { kind: 'disk' },
  disks: [],
  nics: [],
};

describe('sim driver', () => {
  let dir: string;
  beforeEach(() => (dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sim-'))));
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));
  const driver = () => new SimDriver({ stateDir: dir, capacity: { cpus: 4, memoryMib: 8192 } });

  it('runs a started VM and treats a second start as done', async () => {
    const d = driver();
    await d.recover();
    expect((await d.start(spec)).powerState).toBe('RUNNING');
    expect((await d.start(spec)).powerState).toBe('RUNNING');
  });

  it('keeps VMs running across a restart of the agent', async () => {
    const first = driver();
    await first.recover();
    await first.start(spec);
    await first.pause('vm-1');
    const second = driver();
    expect(await second.recover()).toEqual([{ vmId: 'vm-1', powerState: 'PAUSED' }]);
  });

  it('refuses to pause a halted VM', async () => {
    const d = driver();
    await d.recover();
    await d.start(spec);
    await d.shutdown('vm-1', { hard: true, timeoutMs: 0 });
    await expect(d.pause('vm-1')).rejects.toThrow('vm vm-1 is HALTED; expected RUNNING');
  });

  it('forgets a destroyed VM, and destroying an unknown VM succeeds', async () => {
    const d = driver();
    await d.recover();
    await d.start(spec);
    await d.destroy('vm-1');
    await d.destroy('vm-1');
    expect(await d.status('vm-1')).toBeUndefined();
  });
});
