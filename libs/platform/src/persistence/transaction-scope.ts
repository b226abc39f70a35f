import { AsyncLocalStorage } from 'node:async_hooks';

/** Open while the transaction is: work started inside it that outlives it (timers, kicks) is outside. */
const scope = new AsyncLocalStorage<{ open: boolean }>();

/** Runs `work` marked as inside a database transaction (TransactionalStore.tx does). */
export async function inTransactionScope<T>(work: () => Promise<T>): Promise<T> {
  const transaction = { open: true };
  try {
    return await scope.run(transaction, work);
  } finally {
    transaction.open = false;
  }
}

export function insideTransaction(): boolean {
  return scope.getStore()?.open === true;
}

const warned = new Set<string>();

/**
 * A remote call made while a transaction is open keeps its locks for as long as the call takes, and on the
 * embedded database (one session shared by every service) it stalls every service until the call's deadline
 * when the callee needs the database. Tests set FLOTILLA_STRICT_TRANSACTIONS=1 so that such a call fails;
 * elsewhere it goes ahead with one process warning per method.
 */
export function checkNoTransaction(method: string): void {
  if (!insideTransaction()) return;
  const message = `${method} called inside a database transaction: make remote calls before or after it`;
  if (process.env.FLOTILLA_STRICT_TRANSACTIONS === '1') throw new Error(message);
  if (warned.has(method)) return;
  warned.add(method);
  process.emitWarning(message, 'FlotillaTransactionWarning');
}
