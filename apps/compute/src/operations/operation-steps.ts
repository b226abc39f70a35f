import { isTerminal } from '@flotilla/domain';
import { OperationService } from '@flotilla/platform';
import { ComputeStore } from '../persistence/compute-store';
import { OperationRow } from '../persistence/entities';

/** The operation record ended under its handler (cancelled): the handler stops quietly. */
export class OperationSuperseded extends Error {}

/** Records a step of `op`; a failure because the operation ended meanwhile is OperationSuperseded. */
export async function recordStep(s: {
  store: ComputeStore;
  operations: OperationService;
  op: OperationRow;
  changes: Partial<Pick<OperationRow, 'state' | 'step' | 'progress' | 'pointOfNoReturn'>>;
}): Promise<OperationRow> {
  try {
    return await s.store.tx((m, emit) => s.operations.advance(m, emit, s.op, s.changes));
  } catch (e) {
    const now = await s.store.manager.findOneBy(OperationRow, { id: s.op.id });
    if (now && isTerminal(now.state)) throw new OperationSuperseded();
    throw e;
  }
}
