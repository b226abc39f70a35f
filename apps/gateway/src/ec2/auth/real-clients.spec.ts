import { EC2Client, DescribeRegionsCommand } from '@aws-sdk/client-ec2';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import { readBody, send, splitTarget } from '../../compat/http';
import { Ec2Error } from '../errors';
import { verifyEc2Request } from './verify';

// Real: Debian's aws-cli v2 (/usr/bin/aws, botocore's signer) and @aws-sdk/client-ec2 over real HTTP to a
// listener that runs verifyEc2Request. The listener answers every request with an EC2 error whose code is
// the verdict ("Verified" or the refusal's code), so each client prints what the verifier decided.

const accessKeyId = 'AKIDREALCLIENT';
const secret = 'wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY';
const awsCli = '/usr/bin/aws';

describe('verifyEc2Request with real clients', () => {
  let server: http.Server;
  let base: string;

  beforeAll(async () => {
    server = http.createServer((req, res) => {
      void (async () => {
        const body = await readBody(req);
        const { rawPath, rawQuery } = splitTarget(req.url);
        const params = new Map(new URLSearchParams(rawQuery));
        for (const [k, v] of new URLSearchParams(body.toString())) params.set(k, v);
        let code = 'Verified';
        try {
          await verifyEc2Request(
            { method: req.method ?? 'GET', rawPath, rawQuery, headers: req.headers, body, params },
            async (id) => (id === accessKeyId ? secret : undefined),
            { regions: ['RegionOne'] },
          );
        } catch (e) {
          code = e instanceof Ec2Error ? e.code : 'Crashed';
        }
        send(
          res,
          400,
          `<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error><Code>${code}</Code><Message>verdict</Message></Error></Errors><RequestID>r-1</RequestID></Response>`,
          { 'content-type': 'text/xml;charset=UTF-8' },
        );
      })();
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));

  const cli = (args: string[], env: Record<string, string> = {}) =>
    new Promise<string>((resolve) =>
      execFile(
        awsCli,
        ['ec2', ...args],
        {
          timeout: 60_000,
          env: {
            PATH: process.env.PATH ?? '/usr/bin:/bin',
            HOME: process.env.HOME ?? '/tmp',
            AWS_ACCESS_KEY_ID: accessKeyId,
            AWS_SECRET_ACCESS_KEY: secret,
            AWS_DEFAULT_REGION: 'RegionOne',
            AWS_EC2_METADATA_DISABLED: 'true',
            AWS_CONFIG_FILE: '/dev/null',
            AWS_SHARED_CREDENTIALS_FILE: '/dev/null',
            AWS_MAX_ATTEMPTS: '1',
            ...env,
          },
        },
        (_error, stdout, stderr) => resolve(`${stdout}${stderr}`),
      ),
    );

  const withCli = existsSync(awsCli) ? it : it.skip;

  withCli('verifies aws-cli v2 requests, at the root and under /services/compute', async () => {
    expect(await cli(['describe-regions', '--endpoint-url', base])).toContain('(Verified)');
    expect(
      await cli([
        'describe-instances',
        '--instance-ids',
        'i-0123456789abcdef0',
        '--endpoint-url',
        `${base}/services/compute`,
      ]),
    ).toContain('(Verified)');
  });

  withCli('refuses aws-cli signing with the wrong secret, region or key', async () => {
    expect(
      await cli(['describe-regions', '--endpoint-url', base], { AWS_SECRET_ACCESS_KEY: 'wrong' }),
    ).toContain('(SignatureDoesNotMatch)');
    expect(await cli(['describe-regions', '--endpoint-url', base, '--region', 'us-west-2'])).toContain(
      '(AuthFailure)',
    );
    expect(
      await cli(['describe-regions', '--endpoint-url', base], { AWS_ACCESS_KEY_ID: 'AKIDOTHER' }),
    ).toContain('(AuthFailure)');
  });

  it.each(['', '/services/compute'])(
    'verifies @aws-sdk/client-ec2 requests at endpoint path %j',
    async (path) => {
      const client = new EC2Client({
        region: 'RegionOne',
        endpoint: `${base}${path}`,
        credentials: { accessKeyId, secretAccessKey: secret },
        maxAttempts: 1,
      });
      try {
        await expect(client.send(new DescribeRegionsCommand({}))).rejects.toMatchObject({ name: 'Verified' });
      } finally {
        client.destroy();
      }
    },
  );
});
