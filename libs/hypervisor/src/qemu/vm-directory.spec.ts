import * as path from 'node:path';
import { shortSocketRoot, VmDirectory } from './vm-directory';

describe('VmDirectory socket paths', () => {
  const vmId = '1eb5eb93-3548-41c4-957b-a7a1350238a0';

  it('keeps the sockets in the VM directory when they fit a unix socket path', () => {
    const dir = new VmDirectory('/var/lib/flotilla/agent/qemu', vmId);
    expect(dir.qmpSocket).toBe(`/var/lib/flotilla/agent/qemu/${vmId}/qmp.sock`);
    expect(dir.socketDir).toBe(dir.dir);
  });

  it('moves them to a short directory, the same for every agent on that state dir, when the path is too deep', () => {
    const deep = path.join('/home/someone/projects/clouds/flotilla/var/agents', 'host-1', 'qemu');
    const dir = new VmDirectory(deep, vmId);
    expect(Buffer.byteLength(dir.migrationSocket)).toBeLessThanOrEqual(107);
    expect(dir.consoleSocket).toBe(path.join(shortSocketRoot(deep), vmId, 'console.sock'));
    expect(new VmDirectory(deep, vmId).qmpSocket).toBe(dir.qmpSocket);
    expect(shortSocketRoot(`${deep}-2`)).not.toBe(shortSocketRoot(deep));
    // Files that must survive stay in the state directory.
    expect(dir.serialLog).toBe(path.join(deep, vmId, 'serial.log'));
  });
});
