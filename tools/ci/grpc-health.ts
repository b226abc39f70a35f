// Container health check of a Flotilla gRPC service (docker-compose.yml `healthcheck`):
//   node dist/tools/ci/grpc-health.js <host:port> [service]
// exits 0 when grpc.health.v1 answers SERVING, 1 otherwise, and says what it saw.
import { checkHealth } from '../../libs/platform/src/grpc/health';

async function main(argv: string[]): Promise<number> {
  const [address, service = ''] = argv;
  if (!address || !/^[A-Za-z0-9.:[\]-]+:\d{1,5}$/.test(address)) {
    process.stderr.write('usage: grpc-health <host:port> [service]\n');
    return 2;
  }
  const deadlineMs = Number(process.env.FLOTILLA_HEALTH_DEADLINE_MS) || 3000;
  const status = await checkHealth(address, { service, deadlineMs });
  process.stdout.write(`${address}${service ? ` ${service}` : ''}: ${status}\n`);
  return status === 'SERVING' ? 0 : 1;
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (e: unknown) => {
    process.stderr.write(`grpc-health: ${e instanceof Error ? e.message : String(e)}\n`);
    process.exit(1);
  },
);
