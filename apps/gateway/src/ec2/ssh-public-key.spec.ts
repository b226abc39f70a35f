import { createHash, generateKeyPairSync, KeyObject } from 'node:crypto';
import { parseSshPublicKey } from './ssh-public-key';

/** OpenSSH wire encoding, written here independently of the parser under test. */
function sshString(b: Buffer): Buffer {
  const len = Buffer.alloc(4);
  len.writeUInt32BE(b.length);
  return Buffer.concat([len, b]);
}

function mpint(b64url: string): Buffer {
  const raw = Buffer.from(b64url, 'base64url');
  return raw[0] & 0x80 ? Buffer.concat([Buffer.from([0]), raw]) : raw;
}

function opensshRsa(key: KeyObject): string {
  const jwk = key.export({ format: 'jwk' });
  const blob = Buffer.concat([
    sshString(Buffer.from('ssh-rsa')),
    sshString(mpint(jwk.e!)),
    sshString(mpint(jwk.n!)),
  ]);
  return `ssh-rsa ${blob.toString('base64')} me@host`;
}

describe('OpenSSH public keys', () => {
  it('fingerprints an imported RSA key as the colon-separated MD5 of its DER public key, as EC2 does', () => {
    const { publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const expected = createHash('md5')
      .update(publicKey.export({ type: 'spki', format: 'der' }))
      .digest('hex')
      .match(/../g)!
      .join(':');
    expect(parseSshPublicKey(opensshRsa(publicKey))).toMatchObject({ keyType: 'rsa', fingerprint: expected });
  });

  it('fingerprints an ED25519 key as the base64 SHA-256 of its blob', () => {
    const { publicKey } = generateKeyPairSync('ed25519');
    const raw = Buffer.from(publicKey.export({ format: 'jwk' }).x!, 'base64url');
    const blob = Buffer.concat([sshString(Buffer.from('ssh-ed25519')), sshString(raw)]);
    expect(parseSshPublicKey(`ssh-ed25519 ${blob.toString('base64')}`)).toMatchObject({
      keyType: 'ed25519',
      fingerprint: createHash('sha256').update(blob).digest('base64'),
    });
  });

  it.each([
    ['not a key', 'hello'],
    ['a DSA key', 'ssh-dss AAAAB3NzaC1kc3MAAACBAP'],
    ['a blob naming another type', `ssh-rsa ${sshString(Buffer.from('ssh-ed25519')).toString('base64')}`],
    ['a truncated blob', 'ssh-rsa AAAAB3NzaC1yc2EAAAADAQAB'],
  ])('refuses %s', (_case, text) => {
    expect(parseSshPublicKey(text)).toBeUndefined();
  });
});
