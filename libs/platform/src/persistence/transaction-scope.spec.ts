import type { Observable } from 'rxjs';
import { GrpcClient } from '../grpc/client';
import { checkNoTransaction, inTransactionScope, insideTransaction } from './transaction-scope';

describe('the transaction scope', () => {
  it('is open only while the transaction is, not in work that outlives it', async () => {
    expect(insideTransaction()).toBe(false);
    let later!: Promise<boolean>;
    await inTransactionScope(async () => {
      expect(insideTransaction()).toBe(true);
      await Promise.resolve();
      expect(insideTransaction()).toBe(true);
      later = new Promise((resolve) => setTimeout(() => resolve(insideTransaction()), 10));
    });
    expect(insideTransaction()).toBe(false);
    expect(await later).toBe(false);
  });

  it('refuses a remote call inside a transaction when strict (as in tests), naming the method', async () => {
    expect(process.env.FLOTILLA_STRICT_TRANSACTIONS).toBe('1');
    expect(() => checkNoTransaction('flotilla.compute.v1.HostService.ListHosts')).not.toThrow();
    await inTransactionScope(async () =>
      expect(() => checkNoTransaction('flotilla.compute.v1.HostService.ListHosts')).toThrow(
        'flotilla.compute.v1.HostService.ListHosts called inside a database transaction',
      ),
    );
  });

  it('fails a GrpcClient call made inside a transaction before anything is sent', async () => {
    // Nothing listens on port 1: outside a transaction the call would fail UNAVAILABLE instead.
    const client = new GrpcClient<{ listHosts(req: object): Observable<unknown> }>({
      address: '127.0.0.1:1',
      service: 'flotilla.compute.v1.HostService',
      defaultDeadlineMs: 2000,
    });
    try {
      await inTransactionScope(() =>
        expect(client.call.listHosts({})).rejects.toThrow(
          'flotilla.compute.v1.HostService.ListHosts called inside a database transaction',
        ),
      );
      await expect(client.call.listHosts({})).rejects.toMatchObject({ code: 14 });
    } finally {
      client.close();
    }
  });
});
