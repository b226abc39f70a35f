import { diskFileNodeName, diskNodeName, isDiskFormatNode } from './qemu-disks';

describe('disk node names', () => {
  // A path whose format node's hex hash ends in "f": one in sixteen do (the unplug once mistook such a node
  // for a file node, left it open, and the disk stayed locked by QEMU).
  const endingInF = Array.from({ length: 200 }, (_, i) => `/sr/local/${i}.qcow2`).find((p) =>
    diskNodeName('vbd-1', p).endsWith('f'),
  )!;

  it('tells format nodes from file nodes by length, whatever the hash ends in', () => {
    for (const file of ['/sr/local/a.qcow2', endingInF]) {
      expect(isDiskFormatNode('vbd-1', diskNodeName('vbd-1', file))).toBe(true);
      expect(isDiskFormatNode('vbd-1', diskFileNodeName('vbd-1', file))).toBe(false);
    }
    expect(diskNodeName('vbd-1', endingInF)).toMatch(/f$/);
  });

  it("never takes another disk's node for this disk's", () => {
    expect(isDiskFormatNode('vbd-1', diskNodeName('vbd-2', '/sr/local/a.qcow2'))).toBe(false);
    expect(isDiskFormatNode('vbd-1', diskNodeName('vbd-10', '/sr/local/a.qcow2'))).toBe(false);
    const uuid = '6504adb3-3b64-445f-8ff0-5a3a7d784531';
    expect(isDiskFormatNode(uuid, diskNodeName(uuid, '/sr/local/a.qcow2'))).toBe(true);
  });
});
