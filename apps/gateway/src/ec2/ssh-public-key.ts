import { createHash, createPublicKey } from 'node:crypto';

/**
 * OpenSSH public keys as ImportKeyPair receives them ("ssh-rsa AAAA… comment", base64 on the wire), and the
 * fingerprints EC2 shows for imported keys: RSA, the MD5 of the DER SubjectPublicKeyInfo as colon-separated
 * hex; ED25519, the base64 SHA-256 of the key blob (what `ssh-keygen -l` prints after "SHA256:").
 */

export interface SshPublicKey {
  keyType: 'rsa' | 'ed25519';
  /** "ssh-rsa AAAA…" without the comment. */
  line: string;
  fingerprint: string;
}

/** Parses a public key line; undefined when it is not an RSA or ED25519 OpenSSH public key. */
export function parseSshPublicKey(text: string): SshPublicKey | undefined {
  const m = /^\s*(ssh-rsa|ssh-ed25519)\s+([A-Za-z0-9+/]+={0,2})(?:\s+[^\r\n]*)?\s*$/.exec(text);
  if (!m) return undefined;
  const blob = Buffer.from(m[2], 'base64');
  const fields = sshFields(blob);
  if (!fields || fields[0]?.toString('latin1') !== m[1]) return undefined;
  const line = `${m[1]} ${m[2]}`;
  if (m[1] === 'ssh-ed25519') {
    if (fields.length !== 2 || fields[1].length !== 32) return undefined;
    return { keyType: 'ed25519', line, fingerprint: createHash('sha256').update(blob).digest('base64') };
  }
  if (fields.length !== 3) return undefined;
  const [, e, n] = fields;
  try {
    const spki = createPublicKey({
      key: { kty: 'RSA', e: unsigned(e).toString('base64url'), n: unsigned(n).toString('base64url') },
      format: 'jwk',
    }).export({ type: 'spki', format: 'der' });
    if (n.length < 128) return undefined; // below 1024 bits: EC2 refuses such keys too
    const md5 = createHash('md5').update(spki).digest('hex');
    return { keyType: 'rsa', line, fingerprint: (md5.match(/../g) ?? []).join(':') };
  } catch {
    return undefined;
  }
}

/** The length-prefixed strings of an SSH key blob; undefined when malformed. */
function sshFields(blob: Buffer): Buffer[] | undefined {
  const out: Buffer[] = [];
  let at = 0;
  while (at < blob.length) {
    if (at + 4 > blob.length) return undefined;
    const len = blob.readUInt32BE(at);
    at += 4;
    if (at + len > blob.length) return undefined;
    out.push(blob.subarray(at, at + len));
    at += len;
  }
  return out;
}

/** SSH mpints carry a leading zero byte when the high bit is set: JWK wants the bare magnitude. */
function unsigned(b: Buffer): Buffer {
  let i = 0;
  while (i < b.length - 1 && b[i] === 0) i++;
  return b.subarray(i);
}
