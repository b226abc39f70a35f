import { Metadata, status } from '@grpc/grpc-js';
import { DomainError, ErrorCode } from '@flotilla/domain';
import { errorDetailsOf, errorDetailsTrailer, statusWithDetails } from './error-details';

const detail = {
  reason: 'INSUFFICIENT_MEMORY',
  field: 'destination_host_id',
  description: 'host h2 has 1024 MiB free; the VM needs 2048 MiB',
  metadata: { resource_kind: 'host', resource_id: 'h2' },
};

describe('error details in the status trailer', () => {
  it('carries the details with the code and message a handler answers with', () => {
    const e = statusWithDetails(new DomainError(ErrorCode.ResourceExhausted, 'no room on h2'), [detail]);
    expect(e).toMatchObject({ code: status.RESOURCE_EXHAUSTED, details: 'no room on h2' });
    expect(errorDetailsOf(e)).toEqual([detail]);
  });

  it('reads none from an error without the trailer or with one that is not a Status', () => {
    expect(errorDetailsOf(new Error('plain'))).toEqual([]);
    const metadata = new Metadata();
    metadata.set(errorDetailsTrailer, Buffer.from('not json'));
    expect(errorDetailsOf({ metadata })).toEqual([]);
    metadata.set(errorDetailsTrailer, Buffer.from(JSON.stringify({ details: [{ reason: 1 }] })));
    expect(errorDetailsOf({ metadata })).toEqual([]);
  });
});
