/**
 * Node options each service runs with, as NODE_OPTIONS: `flotilla up`, docker-compose.yml and the benchmarks
 * start the services with these same ones.
 *
 * Compute and the gateway allocate tens of kilobytes per request (a committed create, ~85 KB in compute; a
 * DescribeInstances of 1,000 instances, ~10 MB in the gateway). With V8's default young generation
 * (semi-spaces of at most 16 MB), compute at 1,500 creates/s scavenges about every 100 ms and promotes what
 * is in flight at that moment; the old space then fills within seconds, and its mark-compacts stall the
 * process for tens of milliseconds. With semi-spaces of up to 64 MB, a committed create's p99 at 1,500/s
 * stayed under 20 ms in 15 of 19 runs, against 3 of 10 (docs/benchmarks.md, issue 3). V8 grows the young
 * generation only under allocation pressure: an idle service keeps a small heap.
 */
export const serviceNodeOptions: Readonly<Record<string, string>> = {
  compute: '--max-semi-space-size=64',
  gateway: '--max-semi-space-size=64',
};

/**
 * env with the app's options in NODE_OPTIONS. An operator's own NODE_OPTIONS come after them, so that a
 * setting given there wins.
 */
export function withServiceNodeOptions(app: string, env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  const own = serviceNodeOptions[app];
  if (!own) return env;
  return { ...env, NODE_OPTIONS: [own, env.NODE_OPTIONS].filter(Boolean).join(' ') };
}
