import { EntityManager, In } from 'typeorm';
import type { Emit } from '@flotilla/platform';
import type { VbdHook, VbdOfVdi } from '../vdis/vbd-hook';
import { VbdRow } from './vbd.entity';
import { vbdEvent } from './vbd.mapper';

/** The VDI side's view of VBDs (VbdHook), over the VBD records in the same database and transaction. */
export const vbdRecords: VbdHook = {
  async vbdsOf(m: EntityManager, vdiIds: readonly string[]): Promise<VbdOfVdi[]> {
    if (!vdiIds.length) return [];
    const rows = await m.find(VbdRow, { where: { vdiId: In([...vdiIds]) } });
    // Every row matched a VDI id: none is an empty CD-ROM drive (vdiId null).
    return rows.flatMap((v) =>
      v.vdiId
        ? [
            {
              vbdId: v.id,
              vdiId: v.vdiId,
              vmId: v.vmId,
              state: v.state,
              readWrite: v.mode === 'RW',
              hostId: v.state === 'DETACHED' ? null : v.hostId,
            },
          ]
        : [],
    );
  },

  async removeVbdsOf(m: EntityManager, emit: Emit, vdiIds: readonly string[]): Promise<void> {
    if (!vdiIds.length) return;
    const rows = await m.find(VbdRow, {
      where: { vdiId: In([...vdiIds]), state: 'DETACHED' },
      lock: { mode: 'pessimistic_write' },
    });
    if (!rows.length) return;
    await m.delete(VbdRow, { id: In(rows.map((v) => v.id)) });
    for (const v of rows) emit(vbdEvent('DELETED', v));
  },
};
