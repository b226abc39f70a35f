import { createHmac } from 'node:crypto';
import { Ec2Error } from '../errors';
import type { SignedRequest } from './signed-request';
import { verifyEc2Request } from './verify';

// Real: the verifier, node:crypto. References: AWS's published SigV2 example (its signature as printed in
// the AWS General Reference) and, for HmacSHA1, a StringToSign written out by hand below.

const awsKey = 'AKIAIOSFODNN7EXAMPLE';
const awsSecret = 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY';
const secretOf = async (id: string) => (id === awsKey ? awsSecret : undefined);
const regions = ['RegionOne'];

/** AWS General Reference, "Signature Version 2 signing process": the example request and its signature. */
const published = {
  host: 'elasticmapreduce.amazonaws.com',
  rawQuery:
    'AWSAccessKeyId=AKIAIOSFODNN7EXAMPLE&Action=DescribeJobFlows&SignatureMethod=HmacSHA256&SignatureVersion=2' +
    '&Timestamp=2011-10-03T15%3A19%3A30&Version=2009-03-31&Signature=i91nKc4PWAt0JJIdXwz9HxZCJDdiy6cf%2FMj6vPxyYIs%3D',
  at: Date.UTC(2011, 9, 3, 15, 19, 30),
};

function getRequest(host: string, rawPath: string, rawQuery: string): SignedRequest {
  return {
    method: 'GET',
    rawPath,
    rawQuery,
    headers: { host },
    body: Buffer.alloc(0),
    params: new Map(new URLSearchParams(rawQuery)),
  };
}

const example = () => getRequest(published.host, '/', published.rawQuery);

async function refusal(req: SignedRequest, now = published.at): Promise<Ec2Error> {
  try {
    await verifyEc2Request(req, secretOf, { regions, now });
  } catch (e) {
    if (e instanceof Ec2Error) return e;
    throw e;
  }
  throw new Error('the request was accepted');
}

describe('verifyEc2Request, SigV2', () => {
  it("accepts AWS's published HmacSHA256 example with its published signature", async () => {
    await expect(verifyEc2Request(example(), secretOf, { regions, now: published.at })).resolves.toEqual({
      accessKeyId: awsKey,
      signature: 'i91nKc4PWAt0JJIdXwz9HxZCJDdiy6cf/Mj6vPxyYIs=',
      version: 2,
      validUntil: published.at + 15 * 60_000,
    });
  });

  it('accepts HmacSHA1, with the Host header lowercased and its port included, on a Eucalyptus path', async () => {
    const stringToSign =
      'GET\n' +
      'cloud.example:8773\n' +
      '/services/Eucalyptus\n' +
      'AWSAccessKeyId=AKIAIOSFODNN7EXAMPLE&Action=DescribeInstances&Filter.1.Name=tag%3AName' +
      '&Filter.1.Value.1=web%20%2A&SignatureMethod=HmacSHA1&SignatureVersion=2' +
      '&Timestamp=2011-10-03T15%3A19%3A30Z&Version=2016-11-15';
    const signature = createHmac('sha1', awsSecret).update(stringToSign).digest('base64');
    const rawQuery =
      'Action=DescribeInstances&Version=2016-11-15&Filter.1.Name=tag:Name&Filter.1.Value.1=web%20*' +
      '&AWSAccessKeyId=AKIAIOSFODNN7EXAMPLE&SignatureVersion=2&SignatureMethod=HmacSHA1' +
      `&Timestamp=2011-10-03T15:19:30Z&Signature=${encodeURIComponent(signature)}`;
    const req = getRequest('Cloud.Example:8773', '/services/Eucalyptus', rawQuery);
    await expect(verifyEc2Request(req, secretOf, { regions, now: published.at })).resolves.toMatchObject({
      accessKeyId: awsKey,
      signature,
      version: 2,
    });
  });

  it('accepts a POST whose parameters, signature included, are in the form body', async () => {
    const stringToSign =
      'POST\n127.0.0.1:8773\n/\n' +
      'AWSAccessKeyId=AKIAIOSFODNN7EXAMPLE&Action=DescribeRegions&SignatureMethod=HmacSHA256&SignatureVersion=2' +
      '&Timestamp=2011-10-03T15%3A19%3A30Z&Version=2016-11-15';
    const signature = createHmac('sha256', awsSecret).update(stringToSign).digest('base64');
    const body =
      'Action=DescribeRegions&Version=2016-11-15&AWSAccessKeyId=AKIAIOSFODNN7EXAMPLE&SignatureVersion=2' +
      `&SignatureMethod=HmacSHA256&Timestamp=2011-10-03T15%3A19%3A30Z&Signature=${encodeURIComponent(signature)}`;
    const req: SignedRequest = {
      method: 'POST',
      rawPath: '/',
      rawQuery: '',
      headers: { host: '127.0.0.1:8773', 'content-type': 'application/x-www-form-urlencoded' },
      body: Buffer.from(body),
      params: new Map(new URLSearchParams(body)),
    };
    await expect(verifyEc2Request(req, secretOf, { regions, now: published.at })).resolves.toMatchObject({
      signature,
    });
  });

  it('gives the same replay key to a copy whose signature lost its base64 padding', async () => {
    const unpadded = published.rawQuery.replace('%3D', '');
    const verified = await verifyEc2Request(getRequest(published.host, '/', unpadded), secretOf, {
      regions,
      now: published.at,
    });
    expect(verified.signature).toBe('i91nKc4PWAt0JJIdXwz9HxZCJDdiy6cf/Mj6vPxyYIs=');
  });

  describe('refuses a tampered request with SignatureDoesNotMatch (403)', () => {
    it.each([
      ['a parameter value', (r: SignedRequest) => r.params.set('Action', 'TerminateJobFlows')],
      ['an added parameter', (r: SignedRequest) => r.params.set('DryRun', 'false')],
      ['the Host header', (r: SignedRequest) => (r.headers.host = 'elasticmapreduce.amazonaws.com:8773')],
      ['the path', (r: SignedRequest) => (r.rawPath = '/services/Eucalyptus')],
      ['the method', (r: SignedRequest) => (r.method = 'POST')],
      [
        'the signature',
        (r: SignedRequest) => r.params.set('Signature', 'j91nKc4PWAt0JJIdXwz9HxZCJDdiy6cf/Mj6vPxyYIs='),
      ],
    ])('when %s changed', async (_what, tamper) => {
      const req = example();
      tamper(req);
      expect(await refusal(req)).toMatchObject({ code: 'SignatureDoesNotMatch', status: 403 });
    });
  });

  it('refuses with RequestExpired a Timestamp more than 15 minutes from the server clock', async () => {
    expect(await refusal(example(), published.at + 15 * 60_000 + 1000)).toMatchObject({
      code: 'RequestExpired',
      status: 400,
    });
    expect(await refusal(example(), published.at - 16 * 60_000)).toMatchObject({ code: 'RequestExpired' });
  });

  it('honours Expires: accepted until then (its replay window), RequestExpired after', async () => {
    const expires = '2011-10-03T15:30:00Z';
    const stringToSign =
      'GET\n127.0.0.1:8773\n/\n' +
      'AWSAccessKeyId=AKIAIOSFODNN7EXAMPLE&Action=DescribeRegions&Expires=2011-10-03T15%3A30%3A00Z' +
      '&SignatureMethod=HmacSHA256&SignatureVersion=2&Version=2016-11-15';
    const signature = createHmac('sha256', awsSecret).update(stringToSign).digest('base64');
    const req = getRequest(
      '127.0.0.1:8773',
      '/',
      `Action=DescribeRegions&Version=2016-11-15&AWSAccessKeyId=${awsKey}&SignatureVersion=2` +
        `&SignatureMethod=HmacSHA256&Expires=${expires}&Signature=${encodeURIComponent(signature)}`,
    );
    const until = Date.parse(expires);
    await expect(verifyEc2Request(req, secretOf, { regions, now: until - 1 })).resolves.toMatchObject({
      validUntil: until,
    });
    expect(await refusal(req, until + 1)).toMatchObject({ code: 'RequestExpired' });
  });

  it('refuses an unknown access key with 401 AuthFailure', async () => {
    const req = example();
    req.params.set('AWSAccessKeyId', 'AKIDUNKNOWN');
    expect(await refusal(req)).toMatchObject({
      code: 'AuthFailure',
      status: 401,
      message: 'AWS was not able to validate the provided access credentials',
    });
  });

  it('refuses a request without SignatureMethod with MissingParameter naming it', async () => {
    const req = example();
    req.params.delete('SignatureMethod');
    const refused = await refusal(req);
    expect(refused).toMatchObject({ code: 'MissingParameter', status: 400 });
    expect(refused.message).toContain('SignatureMethod');
  });

  it('refuses a request without Timestamp or Expires with MissingParameter naming Timestamp', async () => {
    const req = example();
    req.params.delete('Timestamp');
    const refused = await refusal(req);
    expect(refused).toMatchObject({ code: 'MissingParameter' });
    expect(refused.message).toContain('Timestamp');
  });

  it.each([
    ['SignatureVersion', '1'],
    ['SignatureMethod', 'HmacMD5'],
    ['Timestamp', 'yesterday'],
  ])('refuses %s=%s with InvalidParameterValue naming the parameter', async (name, value) => {
    const req = example();
    req.params.set(name, value);
    const refused = await refusal(req);
    expect(refused).toMatchObject({ code: 'InvalidParameterValue', status: 400 });
    expect(refused.message).toContain(name);
  });
});
