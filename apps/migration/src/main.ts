import { runContractOnlyService } from '@flotilla/platform';

// The migration service: its v1 contract is drafted in proto/flotilla/migration/v1; RPCs are built in later issues.
runContractOnlyService({ area: 'migration', defaultAddress: '127.0.0.1:7404' }).catch((e: unknown) => {
  process.stderr.write(
    `flotilla-migration: failed to start: ${e instanceof Error ? e.message : String(e)}\n`,
  );
  process.exit(1);
});
