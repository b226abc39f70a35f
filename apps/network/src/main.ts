import { runContractOnlyService } from '@flotilla/platform';
import { networkConfigSpec } from './config';

// The network service: its v1 contract is drafted in proto/flotilla/network/v1; RPCs are built in later issues.
runContractOnlyService({ area: 'network', spec: networkConfigSpec }).catch((e: unknown) => {
  process.stderr.write(`flotilla-network: failed to start: ${e instanceof Error ? e.message : String(e)}\n`);
  process.exit(1);
});
