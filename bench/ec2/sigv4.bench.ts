/**
 * SigV4 verification benchmark: verifyEc2Request (the EC2 front's authentication) on one core, for a
 * botocore-style request (aws-cli: POST form body, content-type;host;x-amz-date) and a JS-SDK-style one
 * (eight signed headers, x-amz-content-sha256), signed beforehand by @smithy/signature-v4, the signing-key
 * cache warm. Baseline in the same run: one bare HMAC-SHA256 over the SHA-256 of the same request bytes per
 * iteration (the least any verifier must do), hashed as the verifier hashes (one-shot crypto.hash). Rounds alternate verifier and baseline; each reports
 * verifications per CPU-second of this process (utime+stime: the machine is shared) and per wall second.
 * Target: ≥ 20,000 verifications/s on one core.
 *
 * Run: the build compiles it to dist/bench/ec2/sigv4.bench.js; `node <that file>` runs main(), and a
 * harness may call runSigV4Bench() instead. Knobs: SIGV4_BENCH_ROUNDS (5), SIGV4_BENCH_ROUND_MS (1,000).
 */
import { createHmac } from 'node:crypto';
import { sha256Hex } from '../../apps/gateway/src/ec2/auth/sigv4';
import { verifyEc2Request } from '../../apps/gateway/src/ec2/auth/verify';
import type { SignedRequest } from '../../apps/gateway/src/ec2/auth/signed-request';
import {
  botocoreStyle,
  jsSdkStyle,
  region,
  secretAccessKey,
  secretOf,
  signedAt,
  signedRequestOf,
  WireRequest,
} from '../../apps/gateway/src/ec2/auth/signers.testing';
import { envInt, f0, f2, machineDescription, median, table, x } from '../harness';

const TARGET_PER_SEC = 20_000;

export interface SigV4BenchOptions {
  rounds?: number;
  roundMs?: number;
}

export interface Rate {
  perCpuSecond: number;
  perWallSecond: number;
}

export interface SigV4BenchCase {
  name: string;
  verify: Rate;
  baseline: Rate;
  /** Verifier cost over the baseline's, per CPU-second (how many bare HMAC+SHA-256 one verification costs). */
  costRatio: number;
  meetsTarget: boolean;
}

/** The request as bytes on the wire, for the baseline: request line, headers, body. */
function wireBytes(wire: WireRequest): Buffer {
  const head = Object.entries(wire.headers)
    .map(([k, v]) => `${k}: ${v}\r\n`)
    .join('');
  const target = wire.rawQuery ? `${wire.rawPath}?${wire.rawQuery}` : wire.rawPath;
  return Buffer.from(`${wire.method} ${target} HTTP/1.1\r\n${head}\r\n${wire.body}`);
}

/** Runs `step` for about `ms`, in batches; returns iterations per CPU-second and per wall second. */
async function measure(ms: number, step: () => Promise<unknown> | unknown): Promise<Rate> {
  const cpuBefore = process.cpuUsage();
  const wallBefore = process.hrtime.bigint();
  const deadline = Date.now() + ms;
  let n = 0;
  while (Date.now() < deadline) {
    for (let i = 0; i < 500; i++) await step();
    n += 500;
  }
  const cpu = process.cpuUsage(cpuBefore);
  const wallUs = Number(process.hrtime.bigint() - wallBefore) / 1000;
  return { perCpuSecond: (n * 1e6) / (cpu.user + cpu.system), perWallSecond: (n * 1e6) / wallUs };
}

async function benchCase(
  name: string,
  wire: WireRequest,
  o: Required<SigV4BenchOptions>,
): Promise<SigV4BenchCase> {
  const req: SignedRequest = signedRequestOf(wire);
  const options = { regions: [region], now: signedAt };
  // Warm: the signing key in the cache, the JIT on both paths; and a check that the request verifies.
  const verified = await verifyEc2Request(req, secretOf, options);
  if (verified.version !== 4) throw new Error(`${name}: not verified as SigV4`);
  const bytes = wireBytes(wire);
  const key = Buffer.from(secretAccessKey);
  const verifyStep = () => verifyEc2Request(req, secretOf, options);
  // Async like the verifier, so both pay the same await per iteration; the same SHA-256 as the verifier's.
  const baselineStep = async () => createHmac('sha256', key).update(sha256Hex(bytes)).digest();
  await measure(200, verifyStep);
  await measure(200, baselineStep);

  const verifyRounds: Rate[] = [];
  const baselineRounds: Rate[] = [];
  for (let r = 0; r < o.rounds; r++) {
    verifyRounds.push(await measure(o.roundMs, verifyStep));
    baselineRounds.push(await measure(o.roundMs, baselineStep));
  }
  const med = (rounds: Rate[]): Rate => ({
    perCpuSecond: median(rounds.map((r) => r.perCpuSecond)),
    perWallSecond: median(rounds.map((r) => r.perWallSecond)),
  });
  const v = med(verifyRounds);
  const b = med(baselineRounds);
  return {
    name,
    verify: v,
    baseline: b,
    costRatio: b.perCpuSecond / v.perCpuSecond,
    meetsTarget: v.perCpuSecond >= TARGET_PER_SEC,
  };
}

export async function runSigV4Bench(options: SigV4BenchOptions = {}): Promise<SigV4BenchCase[]> {
  const o = {
    rounds: options.rounds ?? envInt('SIGV4_BENCH_ROUNDS', 5),
    roundMs: options.roundMs ?? envInt('SIGV4_BENCH_ROUND_MS', 1000),
  };
  const botocore = await botocoreStyle({
    body:
      'Action=RunInstances&Version=2016-11-15&ImageId=ami-0123456789abcdef0&InstanceType=t2.micro' +
      '&MinCount=1&MaxCount=1&ClientToken=8c1b6b2e-3f0e-4a53-9d3a-2b8f3f1e5c77' +
      '&TagSpecification.1.ResourceType=instance&TagSpecification.1.Tag.1.Key=Name&TagSpecification.1.Tag.1.Value=web',
  });
  const jsSdk = await jsSdkStyle({
    body: 'Action=DescribeInstances&Version=2016-11-15&Filter.1.Name=instance-state-name&Filter.1.Value.1=running&MaxResults=5',
  });
  return [
    await benchCase('botocore-style POST / (3 signed headers)', botocore, o),
    await benchCase('JS-SDK-style POST /services/compute/ (8 signed headers)', jsSdk, o),
  ];
}

export function formatSigV4Bench(cases: SigV4BenchCase[]): string {
  const lines = [
    `SigV4 verification, one core (${machineDescription()})`,
    `baseline: one bare HMAC-SHA256 over the SHA-256 of the same request bytes per iteration`,
    '',
    ...table(
      ['request', 'verify/CPU-s', 'verify/wall-s', 'baseline/CPU-s', 'cost vs baseline', 'target ≥ 20,000/s'],
      cases.map((c) => [
        c.name,
        f0(c.verify.perCpuSecond),
        f0(c.verify.perWallSecond),
        f0(c.baseline.perCpuSecond),
        x(c.costRatio),
        c.meetsTarget ? 'met' : 'NOT met',
      ]),
    ),
    '',
    `µs per verification (CPU): ${cases.map((c) => `${c.name.split(' ')[0]} ${f2(1e6 / c.verify.perCpuSecond)}`).join(', ')}`,
  ];
  return lines.join('\n');
}

export async function main(): Promise<void> {
  console.log(formatSigV4Bench(await runSigV4Bench()));
}

if (require.main === module) {
  main().catch((error: unknown) => {
    console.error(error);
    process.exitCode = 1;
  });
}
