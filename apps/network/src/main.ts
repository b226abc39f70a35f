import { runContractOnlyService } from '@flotilla/platform';

// The network service: its v1 contract is drafted in proto/flotilla/network/v1; RPCs are built in later issues.
runContractOnlyService({ area: 'network', defaultAddress: '127.0.0.1:7403' }).catch((e: unknown) => {
  process.stderr.write(`flotilla-network: failed to start: ${e instanceof Error ? e.message : String(e)}\n`);
  process.exit(1);
});
