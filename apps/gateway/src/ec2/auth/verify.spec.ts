import { Sha256 } from '@smithy/core/checksum';
import { buildQueryString, HttpRequest } from '@smithy/core/protocols';
import { SignatureV4 } from '@smithy/signature-v4';
import { Ec2Error } from '../errors';
import { verifyEc2Request } from './verify';
import type { SignedRequest } from './signed-request';
import {
  accessKeyId,
  aws4Get,
  aws4Post,
  aws4Presigned,
  botocoreStyle,
  getStyle,
  host,
  jsSdkStyle,
  region,
  secretOf,
  signedAt,
  signedRequestOf,
  smithyPresigned,
  WireRequest,
} from './signers.testing';

// Real: the verifier, node:crypto. The oracles are independent signers (@smithy/signature-v4, aws4);
// nothing here computes a SigV4 signature with the code under test.

const options = { regions: [region], now: signedAt };
const minutes = (n: number) => n * 60_000;

const verify = (wire: WireRequest, o: { now?: number; regions?: string[] } = {}) =>
  verifyEc2Request(signedRequestOf(wire), secretOf, { ...options, ...o });

/** The Ec2Error a verification fails with (fails the test if it succeeds or throws something else). */
async function refusal(wire: WireRequest | SignedRequest, o: { now?: number } = {}): Promise<Ec2Error> {
  const req = 'params' in wire ? wire : signedRequestOf(wire);
  try {
    await verifyEc2Request(req, secretOf, { ...options, ...o });
  } catch (e) {
    if (e instanceof Ec2Error) return e;
    throw e;
  }
  throw new Error('the request was accepted');
}

const withHeader = (wire: WireRequest, name: string, value: string): WireRequest => ({
  ...wire,
  headers: { ...wire.headers, [name]: value },
});

describe('verifyEc2Request, SigV4 Authorization header', () => {
  it.each([
    ['botocore (aws-cli): POST /, content-type;host;x-amz-date', () => botocoreStyle()],
    [
      'botocore with an endpoint path: POST /services/compute',
      () => botocoreStyle({ path: '/services/compute' }),
    ],
    [
      'the JS SDK: POST /services/compute/ with x-amz-content-sha256 and its amz-sdk headers',
      () => jsSdkStyle(),
    ],
    ['a GET signer with every parameter in the query, user-agent signed', () => getStyle()],
    ['aws4: POST form body', async () => aws4Post()],
    ['aws4: GET with query parameters', async () => aws4Get()],
  ])('accepts a request signed by %s', async (_name, sign) => {
    const verified = await verify(await sign());
    expect(verified).toMatchObject({ accessKeyId, version: 4, validUntil: signedAt + minutes(15) });
    expect(verified.signature).toMatch(/^[0-9a-f]{64}$/);
  });

  it.each([
    '/services/compute/',
    '/services//compute/./',
    '/services/x/../compute',
    '/a%20b/c~d',
    "/it's/(odd)*!",
  ])('canonicalises the raw path %s as SigV4 does for EC2 (normalised, then encoded again)', async (path) => {
    await expect(verify(await botocoreStyle({ path }))).resolves.toBeDefined();
    await expect(verify(aws4Post({ path }))).resolves.toBeDefined();
  });

  it('reads query values with spaces, reserved and non-ASCII characters as the signer encoded them', async () => {
    const target =
      "/?Action=DescribeTags&Version=2016-11-15&Filter.1.Name=value&Filter.1.Value.1=a+b%2Fc*%C3%A9!'()";
    const wire = aws4Get({ target });
    expect(wire.rawQuery).toContain('a%20b%2Fc%2A%C3%A9%21%27%28%29');
    await expect(verify(wire)).resolves.toBeDefined();
  });

  it('reads "+" in the query as a space, as form decoding (and so the EC2 front) does', async () => {
    const wire = aws4Get({ target: '/?Action=DescribeTags&Version=2016-11-15&Filter.1.Value.1=a%20b' });
    await expect(verify({ ...wire, rawQuery: wire.rawQuery.replace('a%20b', 'a+b') })).resolves.toBeDefined();
    expect(await refusal({ ...wire, rawQuery: wire.rawQuery.replace('a%20b', 'a%2Bb') })).toMatchObject({
      code: 'SignatureDoesNotMatch',
    });
  });

  it('canonicalises exactly the headers the client listed, whatever they are', async () => {
    const wire = await jsSdkStyle();
    expect(wire.headers.authorization).toContain(
      'SignedHeaders=amz-sdk-invocation-id;amz-sdk-request;content-length;content-type;host;x-amz-content-sha256;x-amz-date;x-amz-user-agent,',
    );
    // An unsigned header may change freely (proxies add them).
    await expect(verify(withHeader(wire, 'user-agent', 'something else'))).resolves.toBeDefined();
    await expect(verify(withHeader(wire, 'x-forwarded-for', '10.0.0.1'))).resolves.toBeDefined();
  });

  it('reads header values as signed: surrounding and repeated spaces do not matter', async () => {
    const wire = await botocoreStyle();
    const spaced = withHeader(wire, 'content-type', '  application/x-www-form-urlencoded;   charset=utf-8 ');
    await expect(verify(spaced)).resolves.toBeDefined();
  });

  it('returns the signature as the replay key, the same for every copy of the request', async () => {
    const wire = await botocoreStyle();
    const first = await verify(wire);
    expect(first.signature).toBe(/Signature=([0-9a-f]{64})/.exec(wire.headers.authorization)![1]);
    expect((await verify(wire)).signature).toBe(first.signature);
  });

  describe('refuses a tampered request with SignatureDoesNotMatch (403)', () => {
    const mismatch = { code: 'SignatureDoesNotMatch', status: 403 };

    it('when the method changed', async () => {
      expect(await refusal({ ...(await getStyle()), method: 'POST' })).toMatchObject(mismatch);
    });

    it('when the path changed', async () => {
      expect(await refusal({ ...(await botocoreStyle()), rawPath: '/services/compute/' })).toMatchObject(
        mismatch,
      );
      expect(await refusal({ ...(await jsSdkStyle()), rawPath: '/services/compute' })).toMatchObject(
        mismatch,
      );
    });

    it('when a query value changed', async () => {
      const wire = await getStyle();
      expect(
        await refusal({ ...wire, rawQuery: wire.rawQuery.replace('MaxResults=5', 'MaxResults=6') }),
      ).toMatchObject(mismatch);
    });

    it('when a query parameter was added', async () => {
      const wire = await aws4Get();
      expect(await refusal({ ...wire, rawQuery: `${wire.rawQuery}&DryRun=true` })).toMatchObject(mismatch);
    });

    it('when a query parameter was added to a POST whose parameters are in the body', async () => {
      expect(
        await refusal({ ...(await botocoreStyle()), rawQuery: 'Action=TerminateInstances' }),
      ).toMatchObject(mismatch);
    });

    it.each([
      'amz-sdk-invocation-id',
      'amz-sdk-request',
      'content-length',
      'content-type',
      'host',
      'x-amz-content-sha256',
      'x-amz-date',
      'x-amz-user-agent',
    ])('when the signed header %s changed', async (name) => {
      const wire = await jsSdkStyle();
      const changed =
        name === 'x-amz-date'
          ? '20261125T120001Z'
          : name === 'x-amz-content-sha256'
            ? 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855'
            : `${wire.headers[name]}0`;
      expect(await refusal(withHeader(wire, name, changed))).toMatchObject(mismatch);
    });

    it.each(['content-type', 'host', 'x-amz-date'])(
      'when the signed header %s of a botocore request changed',
      async (name) => {
        const wire = await botocoreStyle();
        const changed = name === 'x-amz-date' ? '20261125T120100Z' : `${wire.headers[name]}x`;
        expect(await refusal(withHeader(wire, name, changed))).toMatchObject(mismatch);
      },
    );

    it('when a signed header was removed', async () => {
      const wire = await getStyle();
      const { 'accept-encoding': _gone, ...headers } = wire.headers;
      expect(await refusal({ ...wire, headers })).toMatchObject(mismatch);
    });

    it('when the body of a botocore request (no body hash header) changed', async () => {
      const wire = await botocoreStyle({ body: 'Action=StopInstances&Version=2016-11-15&InstanceId.1=i-1' });
      expect(await refusal({ ...wire, body: wire.body.replace('i-1', 'i-2') })).toMatchObject(mismatch);
    });

    it('when the body of a JS SDK request no longer has the SHA-256 it declared', async () => {
      const wire = await jsSdkStyle();
      const refused = await refusal({ ...wire, body: wire.body.replace('MaxCount=1', 'MaxCount=9') });
      expect(refused).toMatchObject(mismatch);
      expect(refused.message).toContain('x-amz-content-sha256');
    });

    it('when the signature was made with another secret', async () => {
      const wire = await botocoreStyle();
      const forged = wire.headers.authorization.replace(
        /Signature=[0-9a-f]{64}/,
        `Signature=${'ab'.repeat(32)}`,
      );
      expect(await refusal(withHeader(wire, 'authorization', forged))).toMatchObject(mismatch);
    });

    it('when the signature is not 64 hex digits', async () => {
      const wire = await botocoreStyle();
      const sig = /Signature=([0-9a-f]{64})/.exec(wire.headers.authorization)![1];
      const upper = wire.headers.authorization.replace(sig, sig.toUpperCase());
      expect(await refusal(withHeader(wire, 'authorization', upper))).toMatchObject(mismatch);
      const short = wire.headers.authorization.replace(sig, sig.slice(0, 10));
      expect(await refusal(withHeader(wire, 'authorization', short))).toMatchObject(mismatch);
    });
  });

  describe('x-amz-content-sha256: UNSIGNED-PAYLOAD', () => {
    /** Signed by @smithy/signature-v4 as a client would that declares an unsigned payload. */
    const signUnsigned = async (method: string, body: string, query: Record<string, string>) => {
      const signer = new SignatureV4({
        credentials: { accessKeyId, secretAccessKey: (await secretOf(accessKeyId))! },
        region,
        service: 'ec2',
        sha256: Sha256,
      });
      const request = new HttpRequest({
        method,
        hostname: '127.0.0.1',
        path: '/',
        query,
        headers: {
          host,
          'content-type': 'application/x-www-form-urlencoded',
          'x-amz-content-sha256': 'UNSIGNED-PAYLOAD',
        },
        body: body || undefined,
      });
      const signed = (await signer.sign(request, { signingDate: new Date(signedAt) })) as HttpRequest;
      return {
        method,
        rawPath: '/',
        rawQuery: buildQueryString(signed.query),
        headers: signed.headers,
        body,
      };
    };

    it('refuses a request with a body: the EC2 parameters in it would not be signed', async () => {
      const wire = await signUnsigned(
        'POST',
        'Action=TerminateInstances&Version=2016-11-15&InstanceId.1=i-1',
        {},
      );
      const refused = await refusal(wire);
      expect(refused).toMatchObject({ code: 'IncompleteSignature', status: 400 });
      expect(refused.message).toContain('UNSIGNED-PAYLOAD');
    });

    it('accepts a request without a body, its parameters in the signed query', async () => {
      const wire = await signUnsigned('GET', '', { Action: 'DescribeRegions', Version: '2016-11-15' });
      await expect(verify(wire)).resolves.toMatchObject({ accessKeyId });
    });
  });

  describe('checks the time', () => {
    it('accepts a request signed up to 15 minutes before or after the server clock', async () => {
      const wire = await botocoreStyle();
      await expect(verify(wire, { now: signedAt + minutes(15) })).resolves.toBeDefined();
      await expect(verify(wire, { now: signedAt - minutes(15) })).resolves.toBeDefined();
    });

    it('refuses with RequestExpired a request signed more than 15 minutes ago', async () => {
      expect(await refusal(await botocoreStyle(), { now: signedAt + minutes(15) + 1000 })).toMatchObject({
        code: 'RequestExpired',
        status: 400,
      });
    });

    it('refuses with RequestExpired a request signed more than 15 minutes in the future', async () => {
      expect(await refusal(await jsSdkStyle(), { now: signedAt - minutes(16) })).toMatchObject({
        code: 'RequestExpired',
      });
    });

    it('refuses a credential scope whose date is not the date of X-Amz-Date', async () => {
      const wire = await botocoreStyle();
      const auth = wire.headers.authorization.replace('/20261125/', '/20261124/');
      expect(await refusal(withHeader(wire, 'authorization', auth))).toMatchObject({ code: 'AuthFailure' });
    });
  });

  describe('checks the credential scope', () => {
    it('refuses another region with AuthFailure naming the region served', async () => {
      const refused = await refusal(await botocoreStyle({ region: 'us-east-1' }));
      expect(refused).toMatchObject({ code: 'AuthFailure', status: 401 });
      expect(refused.message).toContain("'us-east-1'");
      expect(refused.message).toContain("'RegionOne'");
    });

    it('accepts any of the configured regions', async () => {
      await expect(
        verify(await botocoreStyle({ region: 'us-east-1' }), { regions: ['RegionOne', 'us-east-1'] }),
      ).resolves.toBeDefined();
    });

    it('refuses a signature for another service with AuthFailure', async () => {
      const refused = await refusal(await jsSdkStyle({ service: 'iam' }));
      expect(refused).toMatchObject({ code: 'AuthFailure', status: 401 });
      expect(refused.message).toContain("'ec2'");
    });
  });

  it('refuses an unknown access key with 401 AuthFailure, worded as AWS words it', async () => {
    const wire = await botocoreStyle();
    const auth = wire.headers.authorization.replace(`Credential=${accessKeyId}/`, 'Credential=AKIDUNKNOWN/');
    expect(await refusal(withHeader(wire, 'authorization', auth))).toMatchObject({
      code: 'AuthFailure',
      status: 401,
      message: 'AWS was not able to validate the provided access credentials',
    });
  });

  describe('refuses a malformed Authorization header with IncompleteSignature (400) naming what is missing', () => {
    it.each([
      ['Signature', (a: string) => a.replace(/, Signature=[0-9a-f]+/, '')],
      ['SignedHeaders', (a: string) => a.replace(/SignedHeaders=[^,]+, /, '')],
      ['Credential', (a: string) => a.replace(/Credential=[^,]+, /, '')],
    ])('without %s', async (missing, edit) => {
      const wire = await botocoreStyle();
      const refused = await refusal(withHeader(wire, 'authorization', edit(wire.headers.authorization)));
      expect(refused).toMatchObject({ code: 'IncompleteSignature', status: 400 });
      expect(refused.message).toContain(`'${missing}'`);
    });

    it('with a Credential that is not <key>/<date>/<region>/<service>/aws4_request', async () => {
      const wire = await botocoreStyle();
      const auth = wire.headers.authorization.replace('/aws4_request', '');
      const refused = await refusal(withHeader(wire, 'authorization', auth));
      expect(refused).toMatchObject({ code: 'IncompleteSignature' });
      expect(refused.message).toContain('aws4_request');
    });

    it('when host is not signed', async () => {
      const wire = await botocoreStyle();
      const auth = wire.headers.authorization.replace(';host;', ';');
      const refused = await refusal(withHeader(wire, 'authorization', auth));
      expect(refused).toMatchObject({ code: 'IncompleteSignature' });
      expect(refused.message).toContain('host');
    });

    it('with another algorithm', async () => {
      const wire = await botocoreStyle();
      const refused = await refusal(withHeader(wire, 'authorization', 'AWS AKIDEXAMPLE:c2lnbmF0dXJl'));
      expect(refused).toMatchObject({ code: 'IncompleteSignature' });
      expect(refused.message).toContain('AWS4-HMAC-SHA256');
    });

    it('without X-Amz-Date or Date', async () => {
      const wire = await botocoreStyle();
      const { 'x-amz-date': _gone, ...headers } = wire.headers;
      const refused = await refusal({ ...wire, headers });
      expect(refused).toMatchObject({ code: 'IncompleteSignature' });
      expect(refused.message).toContain('X-Amz-Date');
    });
  });

  it('answers MissingAuthenticationToken (403) to a request with no signature at all', async () => {
    const unsigned: WireRequest = {
      method: 'POST',
      rawPath: '/',
      rawQuery: '',
      headers: { host: '127.0.0.1:8773', 'content-type': 'application/x-www-form-urlencoded' },
      body: 'Action=DescribeInstances&Version=2016-11-15',
    };
    expect(await refusal(unsigned)).toMatchObject({ code: 'MissingAuthenticationToken', status: 403 });
  });
});

describe('verifyEc2Request, SigV4 presigned query', () => {
  it.each([
    ['@smithy/signature-v4', () => smithyPresigned()],
    ['aws4', async () => aws4Presigned()],
  ])('accepts a URL presigned by %s, valid until X-Amz-Date + X-Amz-Expires', async (_name, sign) => {
    const wire = await sign();
    const expires = Number(/X-Amz-Expires=(\d+)/.exec(wire.rawQuery)![1]);
    const verified = await verify(wire, { now: signedAt + expires * 1000 - 1 });
    expect(verified).toMatchObject({ accessKeyId, version: 4, validUntil: signedAt + expires * 1000 });
  });

  it('accepts a URL presigned for longer than 15 minutes, within its lifetime', async () => {
    await expect(
      verify(await smithyPresigned({ expiresIn: 3600 }), { now: signedAt + minutes(59) }),
    ).resolves.toBeDefined();
  });

  it('refuses a presigned URL past its expiry with RequestExpired, so it cannot be replayed later', async () => {
    const refused = await refusal(await smithyPresigned({ expiresIn: 300 }), { now: signedAt + 301_000 });
    expect(refused).toMatchObject({ code: 'RequestExpired', status: 400 });
    expect(refused.message).toContain('presigned');
  });

  it('refuses a presigned URL whose X-Amz-Expires was lengthened', async () => {
    const wire = await aws4Presigned({ expiresSec: 60 });
    const longer = { ...wire, rawQuery: wire.rawQuery.replace('X-Amz-Expires=60', 'X-Amz-Expires=6000') };
    expect(await refusal(longer, { now: signedAt + 120_000 })).toMatchObject({
      code: 'SignatureDoesNotMatch',
    });
  });

  it('refuses X-Amz-Expires over 7 days, naming the parameter', async () => {
    const wire = await aws4Presigned({ expiresSec: 604_801 });
    const refused = await refusal(wire);
    expect(refused).toMatchObject({ code: 'InvalidParameterValue' });
    expect(refused.message).toContain('X-Amz-Expires');
  });

  it('refuses a presigned URL with a changed query value or path', async () => {
    const wire = await smithyPresigned();
    expect(
      await refusal({ ...wire, rawQuery: wire.rawQuery.replace('DescribeRegions', 'DescribeImages') }),
    ).toMatchObject({ code: 'SignatureDoesNotMatch' });
    expect(await refusal({ ...wire, rawPath: '/services/compute/' })).toMatchObject({
      code: 'SignatureDoesNotMatch',
    });
  });

  it('refuses a presigned URL without X-Amz-Signature with IncompleteSignature naming it', async () => {
    const wire = await smithyPresigned();
    const refused = await refusal({
      ...wire,
      rawQuery: wire.rawQuery.replace(/&?X-Amz-Signature=[0-9a-f]+/, ''),
    });
    expect(refused).toMatchObject({ code: 'IncompleteSignature' });
    expect(refused.message).toContain('X-Amz-Signature');
  });
});
