import { DomainError, ErrorCode } from '../errors';
import {
  assertSrOperationAllowed,
  assertVdiOperationAllowed,
  chainOf,
  ChainNode,
  checkPhysicalSpace,
  checkVirtualAllocation,
  diskFileName,
  GIB,
  idOfDiskFile,
  MIB,
  planChainRepairs,
  planClone,
  planDestroy,
  planRevert,
  planSnapshot,
  srAllowedOperations,
  srStateFromHosts,
  SrSpace,
  validateSrPath,
  validateVdiName,
  validateVirtualSize,
  vdiAllowedOperations,
  VdiLifecycleView,
} from './index';

function thrown(fn: () => unknown): DomainError {
  try {
    fn();
  } catch (e) {
    return e as DomainError;
  }
  throw new Error('expected an error');
}

describe('storage names and sizes', () => {
  it('names a VDI file after its id with the qcow2 extension and reads the id back', () => {
    const id = '0b5c3a52-6f0e-4c43-9d1e-2f6a7b8c9d01';
    expect(diskFileName(id.toUpperCase())).toBe(`${id}.qcow2`);
    expect(idOfDiskFile(`${id}.qcow2`)).toBe(id);
    expect(idOfDiskFile('disk.qcow2')).toBeUndefined();
  });

  it('rounds a virtual size up to a whole MiB', () => {
    expect(validateVirtualSize('virtual_size_bytes', 1)).toBe(MIB);
    expect(validateVirtualSize('virtual_size_bytes', 10 * GIB + 1)).toBe(10 * GIB + MIB);
  });

  it.each([
    ['zero', 0],
    ['a negative size', -5],
    ['more than 64 TiB', 64 * 1024 * GIB + 1],
    ['a fraction', 1.5],
  ])('refuses %s as a virtual size, naming the field and the range', (_what, size) => {
    const e = thrown(() => validateVirtualSize('virtual_size_bytes', size));
    expect(e.code).toBe(ErrorCode.InvalidArgument);
    expect(e.fields.field).toBe('virtual_size_bytes');
    expect(e.message).toMatch(/1 MiB .* 64 TiB/);
  });

  it('accepts free-text VDI names and refuses control characters and overlong names', () => {
    expect(validateVdiName('name', 'my disk (copy)')).toBe('my disk (copy)');
    expect(thrown(() => validateVdiName('name', 'a\nb')).message).toMatch(/control characters/);
    expect(thrown(() => validateVdiName('name', 'x'.repeat(256))).fields.field).toBe('name');
    expect(thrown(() => validateVdiName('name', '')).code).toBe(ErrorCode.InvalidArgument);
  });

  it('normalises an SR path and refuses relative, traversing and root paths', () => {
    expect(validateSrPath('path', '/srv/flotilla/sr1/')).toBe('/srv/flotilla/sr1');
    for (const bad of ['srv/sr1', '/srv/../etc', '/srv/./sr', '/', '/srv//sr', ''])
      expect(thrown(() => validateSrPath('path', bad))).toMatchObject({
        code: ErrorCode.InvalidArgument,
        fields: { field: 'path' },
      });
  });
});

describe('SR lifecycle', () => {
  const sr = { id: 's1', name: 'sr1' };

  it('allows everything while AVAILABLE or DEGRADED and only forget while UNAVAILABLE', () => {
    expect(srAllowedOperations({ state: 'AVAILABLE' })).toEqual(['SCAN', 'FORGET', 'DESTROY', 'VDI_CREATE']);
    expect(srAllowedOperations({ state: 'DEGRADED' })).toContain('VDI_CREATE');
    expect(srAllowedOperations({ state: 'UNAVAILABLE' })).toEqual(['FORGET']);
    expect(srAllowedOperations({ state: 'CREATING' })).toEqual([]);
  });

  it('lets VDIs be created during a scan but nothing during a destroy', () => {
    expect(
      srAllowedOperations({ state: 'AVAILABLE', currentOperationId: 'o', currentOperationKind: 'sr.scan' }),
    ).toEqual(['SCAN', 'VDI_CREATE']);
    expect(
      srAllowedOperations({
        state: 'AVAILABLE',
        currentOperationId: 'o',
        currentOperationKind: 'sr.destroy',
      }),
    ).toEqual([]);
  });

  it('names the state and the operation in flight when refusing', () => {
    const e = thrown(() =>
      assertSrOperationAllowed(
        { ...sr, state: 'AVAILABLE', currentOperationId: 'op-9', currentOperationKind: 'sr.destroy' },
        'FORGET',
      ),
    );
    expect(e.code).toBe(ErrorCode.FailedPrecondition);
    expect(e.message).toMatch(/SR sr1 is AVAILABLE .*op-9 \(sr.destroy\)/);
  });

  it('is DEGRADED when some hosts of a SHARED SR do not see it, naming them', () => {
    const s = srStateFromHosts('SHARED', [
      { hostId: 'h1', attached: true, reason: '' },
      { hostId: 'h2', hostName: 'host-2', attached: false, reason: 'marker not found' },
    ]);
    expect(s).toEqual({ state: 'DEGRADED', reason: 'host-2: marker not found' });
  });

  it('is UNAVAILABLE when no host sees it and AVAILABLE when all do', () => {
    expect(srStateFromHosts('FILE', [{ hostId: 'h1', attached: false, reason: 'host DOWN' }]).state).toBe(
      'UNAVAILABLE',
    );
    expect(srStateFromHosts('FILE', []).state).toBe('UNAVAILABLE');
    expect(srStateFromHosts('SHARED', [{ hostId: 'h1', attached: true, reason: '' }]).state).toBe(
      'AVAILABLE',
    );
  });
});

describe('VDI lifecycle', () => {
  const ready: VdiLifecycleView = {
    id: 'v1',
    name: 'disk',
    state: 'READY',
    readOnly: false,
    isSnapshot: false,
    managed: true,
    imageBase: false,
    attachment: 'NONE',
    srUsable: true,
  };

  it('allows every operation on a detached writable READY VDI', () => {
    expect(vdiAllowedOperations(ready)).toEqual([
      'SNAPSHOT',
      'CLONE',
      'COPY',
      'EXPORT',
      'RESIZE',
      'REVERT',
      'DESTROY',
      'ATTACH',
    ]);
  });

  it('lets a snapshot be cloned, copied, exported, attached and destroyed, but not changed', () => {
    expect(vdiAllowedOperations({ ...ready, readOnly: true, isSnapshot: true })).toEqual([
      'CLONE',
      'COPY',
      'EXPORT',
      'DESTROY',
      'ATTACH',
    ]);
  });

  it('allows live snapshot and resize while attached RW, but not copy, clone, revert or destroy', () => {
    expect(vdiAllowedOperations({ ...ready, attachment: 'RW' })).toEqual(['SNAPSHOT', 'RESIZE', 'ATTACH']);
  });

  it('allows only destroy on a MISSING VDI and nothing on hidden, CREATING or busy ones', () => {
    expect(vdiAllowedOperations({ ...ready, state: 'MISSING' })).toEqual(['DESTROY']);
    expect(vdiAllowedOperations({ ...ready, managed: false })).toEqual([]);
    expect(vdiAllowedOperations({ ...ready, state: 'CREATING' })).toEqual([]);
    expect(vdiAllowedOperations({ ...ready, currentOperationId: 'o' })).toEqual([]);
    expect(vdiAllowedOperations({ ...ready, srUsable: false })).toEqual([]);
  });

  it.each([
    [
      'resizing a snapshot',
      { readOnly: true, isSnapshot: true },
      'RESIZE',
      /read-only \(a snapshot\): clone it/,
    ],
    ['destroying an attached VDI', { attachment: 'RO' }, 'DESTROY', /VBD of it is attached/],
    ['copying a VDI a running VM writes', { attachment: 'RW' }, 'COPY', /snapshot it and copy the snapshot/],
    [
      'destroying an image base',
      { imageBase: true, readOnly: true },
      'DESTROY',
      /deregister the image first/,
    ],
    [
      'destroying a CREATING VDI',
      { state: 'CREATING', currentOperationId: 'op1' },
      'DESTROY',
      /cancel it instead/,
    ],
  ] as const)('explains why %s is refused', (_what, over, op, message) => {
    const e = thrown(() => assertVdiOperationAllowed({ ...ready, ...over }, op));
    expect(e.code).toBe(ErrorCode.FailedPrecondition);
    expect(e.message).toMatch(message);
  });
});

describe('space accounting', () => {
  const sr: SrSpace = {
    name: 'sr1',
    capacityBytes: 100 * GIB,
    freeBytes: 40 * GIB,
    overprovisionRatio: 2,
    virtualAllocationBytes: 150 * GIB,
    reservedPhysicalBytes: 10 * GIB,
  };

  it('accepts virtual growth up to capacity × overprovision ratio', () => {
    expect(() => checkVirtualAllocation(sr, 50 * GIB, 'vdi a')).not.toThrow();
  });

  it('refuses virtual growth past the ceiling with RESOURCE_EXHAUSTED naming the ceiling', () => {
    const e = thrown(() => checkVirtualAllocation(sr, 50 * GIB + 1, 'vdi a'));
    expect(e.code).toBe(ErrorCode.ResourceExhausted);
    expect(e.message).toMatch(/overprovision ceiling \(capacity 100 GiB × ratio 2 = 200 GiB\) leaves 50 GiB/);
    expect(e.fields.metadata).toEqual({ limit: 'overprovision_ceiling' });
  });

  it('has no ceiling when the ratio is 0', () => {
    expect(() =>
      checkVirtualAllocation({ ...sr, overprovisionRatio: 0 }, 10_000 * GIB, 'vdi a'),
    ).not.toThrow();
  });

  it('refuses a full copy larger than free space minus the reservations of copies in progress', () => {
    expect(() => checkPhysicalSpace(sr, 30 * GIB, 'copy')).not.toThrow();
    const e = thrown(() => checkPhysicalSpace(sr, 30 * GIB + 1, 'copy'));
    expect(e.code).toBe(ErrorCode.ResourceExhausted);
    expect(e.message).toMatch(/30 GiB of free physical space \(40 GiB free, 10 GiB reserved/);
    expect(e.fields.metadata).toEqual({ limit: 'free_physical_space' });
  });
});

describe('chain planning', () => {
  const node = (id: string, parentId: string | null, over: Partial<ChainNode> = {}): ChainNode => ({
    id,
    parentId,
    file: `${id}.qcow2`,
    managed: true,
    readOnly: false,
    state: 'READY',
    imageId: null,
    currentOperationId: null,
    ...over,
  });

  it('snapshots by freezing the current file as the snapshot and giving the VDI a new top on it', () => {
    const plan = planSnapshot(node('v', 'p'), { snapshotId: 's', newTopFile: 'n.qcow2' });
    expect(plan.snapshot).toEqual({ id: 's', file: 'v.qcow2', parentId: 'p' });
    expect(plan.vdi).toEqual({ file: 'n.qcow2', parentId: 's' });
    expect(plan.steps).toEqual([{ kind: 'snapshot', file: 'v.qcow2', newTopFile: 'n.qcow2' }]);
  });

  it('clones a read-only source as one overlay on it', () => {
    const plan = planClone(
      { ...node('s', null, { readOnly: true }), virtualSizeBytes: GIB },
      { cloneId: 'c', cloneFile: 'c.qcow2', hiddenId: 'h', sourceNewFile: 'x' },
    );
    expect(plan.hidden).toBeUndefined();
    expect(plan.clone).toEqual({ id: 'c', file: 'c.qcow2', parentId: 's' });
    expect(plan.steps).toEqual([
      { kind: 'create', file: 'c.qcow2', backingFile: 's.qcow2', virtualSizeBytes: GIB },
    ]);
  });

  it('clones a writable source by freezing it into a hidden node shared by source and clone', () => {
    const plan = planClone(
      { ...node('v', 'p'), virtualSizeBytes: GIB },
      { cloneId: 'c', cloneFile: 'c.qcow2', hiddenId: 'h', sourceNewFile: 'v2.qcow2' },
    );
    expect(plan.hidden).toEqual({ id: 'h', file: 'v.qcow2', parentId: 'p' });
    expect(plan.source).toEqual({ file: 'v2.qcow2', parentId: 'h' });
    expect(plan.clone.parentId).toBe('h');
    expect(plan.steps.map((s) => s.kind)).toEqual(['snapshot', 'create']);
  });

  it('reverts by a new empty overlay on the snapshot and deletes the old top afterwards', () => {
    const plan = planRevert(node('v', 's'), { ...node('s', null), virtualSizeBytes: 2 * GIB }, 'r.qcow2');
    expect(plan.vdi).toEqual({ file: 'r.qcow2', parentId: 's', virtualSizeBytes: 2 * GIB });
    expect(plan.deleteAfter).toEqual(['v.qcow2']);
  });

  it('hides a destroyed node that others are backed by and deletes one that none is', () => {
    const nodes = [node('s', null), node('v', 's')];
    expect(planDestroy({ id: 's' }, nodes)).toBe('hide');
    expect(planDestroy({ id: 'v' }, nodes)).toBe('delete');
  });

  it('coalesces a hidden node with one child onto its parent and deletes a hidden node with none', () => {
    const base = node('b', null, { readOnly: true });
    const hidden = node('h', 'b', { managed: false, readOnly: true });
    const child = node('v', 'h');
    const orphan = node('o', null, { managed: false });
    const repairs = planChainRepairs([base, hidden, child, orphan], new Set());
    expect(repairs).toEqual([
      { kind: 'coalesce', node: hidden, child, newParent: base },
      { kind: 'delete', node: orphan },
    ]);
  });

  it('keeps hidden nodes with two children, busy ones, and the bases of live images', () => {
    const h = node('h', null, { managed: false });
    const busy = node('x', null, { managed: false, currentOperationId: 'op' });
    const imageBase = node('i', null, { managed: false, imageId: 'img' });
    expect(planChainRepairs([h, node('a', 'h'), node('b', 'h'), busy, imageBase], new Set(['img']))).toEqual(
      [],
    );
  });

  it('waits to coalesce while the child is busy', () => {
    const h = node('h', null, { managed: false });
    expect(planChainRepairs([h, node('v', 'h', { currentOperationId: 'op' })], new Set())).toEqual([]);
  });

  it('coalesces a chain of hidden nodes one link per pass, never touching a node twice', () => {
    const h1 = node('h1', null, { managed: false });
    const h2 = node('h2', 'h1', { managed: false });
    const v = node('v', 'h2');
    const repairs = planChainRepairs([h1, h2, v], new Set());
    expect(repairs).toHaveLength(1);
    expect(repairs[0]).toMatchObject({ kind: 'coalesce', node: h1, child: h2, newParent: null });
  });

  it('lists a chain top first', () => {
    expect(chainOf('v', [node('b', null), node('s', 'b'), node('v', 's')])).toEqual(['v', 's', 'b']);
  });
});
