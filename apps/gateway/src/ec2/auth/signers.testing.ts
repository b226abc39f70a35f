/**
 * Independent client-side signers for the verifier's tests and benchmark: @smithy/signature-v4 (the JS
 * SDK's own signer) and aws4, configured to send what botocore, the JS SDK and a GET signer send
 * (interop.md §2.2). What they produce is turned into the SignedRequest the EC2 front hands the verifier.
 * Test-only: imports dev dependencies.
 */
import { buildQueryString, HttpRequest } from '@smithy/core/protocols';
import { Sha256 } from '@smithy/core/checksum';
import { SignatureV4 } from '@smithy/signature-v4';
import aws4 from 'aws4';
import type { SignedRequest } from './signed-request';

export const accessKeyId = 'AKIDEXAMPLE';
export const secretAccessKey = 'wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY';
export const region = 'RegionOne';
export const host = '127.0.0.1:8773';
/** 2026-11-25T12:00:00Z: every signer signs at this instant unless told otherwise. */
export const signedAt = Date.UTC(2026, 10, 25, 12, 0, 0);
export const secretOf = async (id: string) => (id === accessKeyId ? secretAccessKey : undefined);

export interface WireRequest {
  method: string;
  rawPath: string;
  rawQuery: string;
  headers: Record<string, string>;
  body: string;
}

/** The request as the EC2 front receives it: headers lowercased, params from the query and form body. */
export function signedRequestOf(wire: WireRequest): SignedRequest {
  const headers: Record<string, string> = {};
  for (const [k, v] of Object.entries(wire.headers)) headers[k.toLowerCase()] = v;
  const params = new Map<string, string>(new URLSearchParams(wire.rawQuery));
  if ((headers['content-type'] ?? '').startsWith('application/x-www-form-urlencoded')) {
    for (const [k, v] of new URLSearchParams(wire.body)) params.set(k, v);
  }
  return {
    method: wire.method,
    rawPath: wire.rawPath,
    rawQuery: wire.rawQuery,
    headers,
    body: Buffer.from(wire.body),
    params,
  };
}

function smithySigner(applyChecksum: boolean, signingRegion = region, service = 'ec2'): SignatureV4 {
  return new SignatureV4({
    credentials: { accessKeyId, secretAccessKey },
    region: signingRegion,
    service,
    sha256: Sha256,
    applyChecksum,
  });
}

function wireOf(request: HttpRequest): WireRequest {
  return {
    method: request.method,
    rawPath: request.path,
    rawQuery: buildQueryString(request.query ?? {}),
    headers: request.headers,
    body: (request.body as string | undefined) ?? '',
  };
}

export interface SignOptions {
  body?: string;
  path?: string;
  at?: number;
  region?: string;
  service?: string;
}

/** As botocore (aws-cli) signs: POST form body, SignedHeaders content-type;host;x-amz-date, no body hash header. */
export async function botocoreStyle(o: SignOptions = {}): Promise<WireRequest> {
  const body = o.body ?? 'Action=DescribeInstances&Version=2016-11-15';
  const request = new HttpRequest({
    method: 'POST',
    hostname: '127.0.0.1',
    port: 8773,
    path: o.path ?? '/',
    headers: { host, 'content-type': 'application/x-www-form-urlencoded; charset=utf-8' },
    body,
  });
  const signed = (await smithySigner(false, o.region, o.service).sign(request, {
    signingDate: new Date(o.at ?? signedAt),
  })) as HttpRequest;
  return wireOf(signed);
}

/** As @aws-sdk/client-ec2 signs: its extra headers, x-amz-content-sha256, the endpoint path plus "/". */
export async function jsSdkStyle(o: SignOptions = {}): Promise<WireRequest> {
  const body =
    o.body ?? 'Action=RunInstances&Version=2016-11-15&ImageId=ami-1&MinCount=1&MaxCount=1&ClientToken=abc';
  const request = new HttpRequest({
    method: 'POST',
    hostname: '127.0.0.1',
    port: 8773,
    path: o.path ?? '/services/compute/',
    headers: {
      host,
      'content-type': 'application/x-www-form-urlencoded',
      'content-length': String(Buffer.byteLength(body)),
      'amz-sdk-invocation-id': '5b6f3c1e-7a55-4b8e-9d43-0c1a2b3c4d5e',
      'amz-sdk-request': 'attempt=1; max=3',
      'x-amz-user-agent': 'aws-sdk-js/3.1169.0',
      'user-agent': 'aws-sdk-js/3.1169.0 ua/2.1 os/linux#6.1 lang/js md/nodejs#20.20.2 api/ec2#3.1169.0',
    },
    body,
  });
  const signed = (await smithySigner(true, o.region, o.service).sign(request, {
    signingDate: new Date(o.at ?? signedAt),
  })) as HttpRequest;
  return wireOf(signed);
}

/**
 * A GET signer with every parameter in the query, signing accept-encoding;host;user-agent;
 * x-amz-content-sha256;x-amz-date. Values with spaces, "*", "/" and non-ASCII exercise the query encoding.
 */
export async function getStyle(
  o: SignOptions & { query?: Record<string, string> } = {},
): Promise<WireRequest> {
  const request = new HttpRequest({
    method: 'GET',
    hostname: '127.0.0.1',
    port: 8773,
    path: o.path ?? '/',
    query: o.query ?? {
      Action: 'DescribeInstances',
      Version: '2016-11-15',
      'Filter.1.Name': 'tag:Name',
      'Filter.1.Value.1': "web server*/(prod)~'é'",
      MaxResults: '5',
    },
    headers: { host, 'accept-encoding': 'identity', 'user-agent': 'flotilla-test/1.0' },
  });
  const signed = (await smithySigner(true, o.region, o.service).sign(request, {
    signingDate: new Date(o.at ?? signedAt),
    signableHeaders: new Set(['user-agent']),
  })) as HttpRequest;
  return wireOf(signed);
}

/** A presigned GET URL from @smithy/signature-v4 (X-Amz-* in the query, Expires in seconds). */
export async function smithyPresigned(o: SignOptions & { expiresIn?: number } = {}): Promise<WireRequest> {
  const request = new HttpRequest({
    method: 'GET',
    hostname: '127.0.0.1',
    port: 8773,
    path: o.path ?? '/',
    query: { Action: 'DescribeRegions', Version: '2016-11-15' },
    headers: { host },
  });
  const signed = (await smithySigner(false, o.region, o.service).presign(request, {
    signingDate: new Date(o.at ?? signedAt),
    expiresIn: o.expiresIn ?? 300,
  })) as HttpRequest;
  return wireOf(signed);
}

const amzDate = (ms: number) =>
  new Date(ms)
    .toISOString()
    .replace(/\.\d{3}Z$/, 'Z')
    .replace(/[-:]/g, '');

/** aws4's signer: a POST form body (it signs content-length, content-type, host, x-amz-date). */
export function aws4Post(o: SignOptions = {}): WireRequest {
  const body = o.body ?? 'Action=DescribeInstances&Version=2016-11-15&InstanceId.1=i-0123456789abcdef0';
  const opts = {
    host,
    method: 'POST',
    path: o.path ?? '/services/compute',
    service: o.service ?? 'ec2',
    region: o.region ?? region,
    body,
    headers: { 'X-Amz-Date': amzDate(o.at ?? signedAt) } as Record<string, string>,
  };
  aws4.sign(opts, { accessKeyId, secretAccessKey });
  return { method: 'POST', rawPath: opts.path, rawQuery: '', headers: opts.headers, body };
}

/** aws4's signer: a GET with its parameters in the query, raw path and query kept as written. */
export function aws4Get(o: SignOptions & { target?: string } = {}): WireRequest {
  const opts = {
    host,
    method: 'GET',
    path:
      o.target ??
      '/?Version=2016-11-15&Action=DescribeInstances&Filter.1.Name=instance-state-name&Filter.1.Value.1=running',
    service: o.service ?? 'ec2',
    region: o.region ?? region,
    headers: { 'X-Amz-Date': amzDate(o.at ?? signedAt) } as Record<string, string>,
  };
  aws4.sign(opts, { accessKeyId, secretAccessKey });
  const q = opts.path.indexOf('?');
  return {
    method: 'GET',
    rawPath: q < 0 ? opts.path : opts.path.slice(0, q),
    rawQuery: q < 0 ? '' : opts.path.slice(q + 1),
    headers: opts.headers,
    body: '',
  };
}

/** aws4's presigned URL (signQuery). */
export function aws4Presigned(o: SignOptions & { expiresSec?: number } = {}): WireRequest {
  const query = `Action=DescribeInstances&Version=2016-11-15&X-Amz-Expires=${o.expiresSec ?? 600}`;
  const opts = {
    host,
    method: 'GET',
    path: `${o.path ?? '/'}?${query}&X-Amz-Date=${amzDate(o.at ?? signedAt)}`,
    service: o.service ?? 'ec2',
    region: o.region ?? region,
    signQuery: true,
    headers: {} as Record<string, string>,
  };
  aws4.sign(opts, { accessKeyId, secretAccessKey });
  const q = opts.path.indexOf('?');
  return {
    method: 'GET',
    rawPath: opts.path.slice(0, q),
    rawQuery: opts.path.slice(q + 1),
    headers: { host, ...opts.headers },
    body: '',
  };
}
