import { runContractOnlyService } from '@flotilla/platform';
import { storageConfigSpec } from './config';

// The storage service: its v1 contract is drafted in proto/flotilla/storage/v1; RPCs are built in later issues.
runContractOnlyService({ area: 'storage', spec: storageConfigSpec }).catch((e: unknown) => {
  process.stderr.write(`flotilla-storage: failed to start: ${e instanceof Error ? e.message : String(e)}\n`);
  process.exit(1);
});
