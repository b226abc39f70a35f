import { runContractOnlyService } from '@flotilla/platform';
import { migrationConfigSpec } from './config';

// The migration service: its v1 contract is drafted in proto/flotilla/migration/v1; RPCs are built in later issues.
runContractOnlyService({ area: 'migration', spec: migrationConfigSpec }).catch((e: unknown) => {
  process.stderr.write(
    `flotilla-migration: failed to start: ${e instanceof Error ? e.message : String(e)}\n`,
  );
  process.exit(1);
});
