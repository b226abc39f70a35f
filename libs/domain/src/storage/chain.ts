/**
 * Backing chains of qcow2 files, planned as data. Every file of an SR is a chain node with a record: a
 * managed VDI, a snapshot, an image base, or a hidden node (managed = false) that Flotilla keeps only while
 * other nodes are backed by it. The storage service carries these plans out with idempotent agent calls.
 *
 *   snapshot V:   [parent] <- V.file          becomes   [parent] <- S(V's old file) <- V(new top)
 *   clone S (RO): S <- C(new)
 *   clone V (RW): [parent] <- H(V's old file, hidden) <- V(new top), H <- C(new)
 *   revert V to S: V's top replaced by a new empty overlay on S; the old top file is deleted
 *   destroy X:    no children: its file is deleted; children: it becomes hidden
 *   coalesce H (hidden, one child K): K rebased onto H's parent (H's data merged into K), then H deleted
 */

export interface ChainNode {
  id: string;
  parentId: string | null;
  file: string;
  managed: boolean;
  readOnly: boolean;
  state: 'CREATING' | 'READY' | 'MISSING';
  /** Set on image bases: the catalogue image whose base this is (kept while the image exists). */
  imageId: string | null;
  currentOperationId: string | null;
}

/** An agent file operation a plan asks for, in the order given. */
export type FileStep =
  | { kind: 'snapshot'; file: string; newTopFile: string }
  | { kind: 'create'; file: string; backingFile: string; virtualSizeBytes: number };

export interface SnapshotPlan {
  /** The new snapshot record takes over the VDI's current file and parent. */
  snapshot: { id: string; file: string; parentId: string | null };
  /** The VDI keeps its id and gets the new top, backed by the snapshot. */
  vdi: { file: string; parentId: string };
  steps: FileStep[];
}

export function planSnapshot(
  vdi: Pick<ChainNode, 'file' | 'parentId'>,
  ids: { snapshotId: string; newTopFile: string },
): SnapshotPlan {
  return {
    snapshot: { id: ids.snapshotId, file: vdi.file, parentId: vdi.parentId },
    vdi: { file: ids.newTopFile, parentId: ids.snapshotId },
    steps: [{ kind: 'snapshot', file: vdi.file, newTopFile: ids.newTopFile }],
  };
}

export interface ClonePlan {
  clone: { id: string; file: string; parentId: string };
  /** A writable source is frozen into this hidden node, shared by the source and the clone. */
  hidden?: { id: string; file: string; parentId: string | null };
  /** A writable source's new top file, backed by the hidden node. */
  source?: { file: string; parentId: string };
  steps: FileStep[];
}

export function planClone(
  source: Pick<ChainNode, 'id' | 'file' | 'parentId' | 'readOnly'> & { virtualSizeBytes: number },
  ids: { cloneId: string; cloneFile: string; hiddenId: string; sourceNewFile: string },
): ClonePlan {
  if (source.readOnly)
    return {
      clone: { id: ids.cloneId, file: ids.cloneFile, parentId: source.id },
      steps: [
        {
          kind: 'create',
          file: ids.cloneFile,
          backingFile: source.file,
          virtualSizeBytes: source.virtualSizeBytes,
        },
      ],
    };
  return {
    hidden: { id: ids.hiddenId, file: source.file, parentId: source.parentId },
    source: { file: ids.sourceNewFile, parentId: ids.hiddenId },
    clone: { id: ids.cloneId, file: ids.cloneFile, parentId: ids.hiddenId },
    steps: [
      { kind: 'snapshot', file: source.file, newTopFile: ids.sourceNewFile },
      {
        kind: 'create',
        file: ids.cloneFile,
        backingFile: source.file,
        virtualSizeBytes: source.virtualSizeBytes,
      },
    ],
  };
}

export interface RevertPlan {
  vdi: { file: string; parentId: string; virtualSizeBytes: number };
  steps: FileStep[];
  /** Deleted once the VDI's record points at its new top (nothing is backed by a writable top). */
  deleteAfter: string[];
}

export function planRevert(
  vdi: Pick<ChainNode, 'file'>,
  snapshot: Pick<ChainNode, 'id' | 'file'> & { virtualSizeBytes: number },
  newTopFile: string,
): RevertPlan {
  return {
    vdi: { file: newTopFile, parentId: snapshot.id, virtualSizeBytes: snapshot.virtualSizeBytes },
    steps: [
      {
        kind: 'create',
        file: newTopFile,
        backingFile: snapshot.file,
        virtualSizeBytes: snapshot.virtualSizeBytes,
      },
    ],
    deleteAfter: [vdi.file],
  };
}

/** Destroying a node others are backed by hides it; otherwise its file goes. */
export function planDestroy(
  node: Pick<ChainNode, 'id'>,
  nodes: ReadonlyArray<Pick<ChainNode, 'parentId'>>,
): 'delete' | 'hide' {
  return nodes.some((n) => n.parentId === node.id) ? 'hide' : 'delete';
}

export type ChainRepair =
  /** A hidden node nothing is backed by: delete its file, then its record. */
  | { kind: 'delete'; node: ChainNode }
  /**
   * A hidden node with one child: merge it into the child (the child is rebased onto the node's parent,
   * or made standalone), point the child's record at that parent, then delete the node.
   */
  | { kind: 'coalesce'; node: ChainNode; child: ChainNode; newParent: ChainNode | null };

/**
 * The repairs due in one SR: hidden nodes with no child are deleted, hidden nodes with one child are
 * coalesced into it, so chains never grow without bound. Nodes that are busy (an operation in flight, not
 * READY) wait; the base of a live catalogue image is kept even with no child (it is the SR's image cache).
 * A coalesce is planned only when the child is idle too, and at most one repair per chain node at a time.
 */
export function planChainRepairs(
  nodes: readonly ChainNode[],
  liveImageIds: ReadonlySet<string>,
): ChainRepair[] {
  const byId = new Map(nodes.map((n) => [n.id, n]));
  const children = new Map<string, ChainNode[]>();
  for (const n of nodes) if (n.parentId) children.set(n.parentId, [...(children.get(n.parentId) ?? []), n]);
  const idle = (n: ChainNode) => n.state === 'READY' && !n.currentOperationId;
  const busy = new Set<string>();
  const out: ChainRepair[] = [];
  for (const node of nodes) {
    if (node.managed || !idle(node) || busy.has(node.id)) continue;
    if (node.imageId && liveImageIds.has(node.imageId)) continue;
    const kids = children.get(node.id) ?? [];
    if (kids.length === 0) {
      out.push({ kind: 'delete', node });
      busy.add(node.id);
    } else if (kids.length === 1 && idle(kids[0]) && !busy.has(kids[0].id)) {
      const newParent = node.parentId ? (byId.get(node.parentId) ?? null) : null;
      if (node.parentId && !newParent) continue;
      if (newParent && busy.has(newParent.id)) continue;
      out.push({ kind: 'coalesce', node, child: kids[0], newParent });
      for (const n of [node, kids[0], newParent]) if (n) busy.add(n.id);
    }
  }
  return out;
}

/** The ids of a node and every node it is backed by, top first. */
export function chainOf(id: string, nodes: ReadonlyArray<Pick<ChainNode, 'id' | 'parentId'>>): string[] {
  const byId = new Map(nodes.map((n) => [n.id, n]));
  const out: string[] = [];
  for (
    let cur = byId.get(id);
    cur && !out.includes(cur.id);
    cur = cur.parentId ? byId.get(cur.parentId) : undefined
  )
    out.push(cur.id);
  return out;
}
