import { createCipheriv, createDecipheriv, hkdfSync, randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';

const keyBytes = 32;
const ivBytes = 12;
const tagBytes = 16;
const sealedPrefix = 'v1.';

/**
 * The gateway's secret key: 32 random bytes in a file only its owner may read. Created (0600, in a 0700
 * directory) when missing; every gateway sharing a database must share the file, since EC2 secrets are
 * sealed with keys derived from it. A file of the wrong size or readable by others is refused, never
 * replaced: replacing it would make every sealed secret unreadable.
 */
export function loadOrCreateSecretKey(file: string): Buffer {
  try {
    return readSecretKey(file);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
  }
  fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
  const key = randomBytes(keyBytes);
  try {
    // 'wx': two gateways starting at once must not both write a key; the loser reads the winner's.
    fs.writeFileSync(file, key, { mode: 0o600, flag: 'wx' });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'EEXIST') return readSecretKey(file);
    throw e;
  }
  return key;
}

function readSecretKey(file: string): Buffer {
  const stat = fs.statSync(file);
  if (!stat.isFile()) throw new Error(`secret key ${file} is not a regular file`);
  if (stat.mode & 0o077)
    throw new Error(
      `secret key ${file} is readable by group or others (mode ${(stat.mode & 0o777).toString(8)}): ` +
        `run chmod 600 ${file}`,
    );
  if (stat.size !== keyBytes)
    throw new Error(
      `secret key ${file} holds ${stat.size} bytes, not ${keyBytes}: restore the gateway's key file ` +
        '(a new key makes every stored EC2 secret unreadable)',
    );
  return fs.readFileSync(file);
}

/** A 32-byte key for one purpose (HKDF-SHA256): keys for different purposes are independent. */
export function deriveKey(secretKey: Buffer, purpose: string): Buffer {
  return Buffer.from(hkdfSync('sha256', secretKey, Buffer.alloc(0), `flotilla/${purpose}`, keyBytes));
}

/**
 * AES-256-GCM sealing of small secrets at rest. `context` (e.g. the owning row's id) is authenticated but
 * not stored, so a sealed value copied to another row does not open there.
 */
export class SecretBox {
  private readonly key: Buffer;

  constructor(secretKey: Buffer, purpose: string) {
    this.key = deriveKey(secretKey, purpose);
  }

  /** "v1." + base64url(iv | tag | ciphertext). */
  seal(plaintext: string, context = ''): string {
    const iv = randomBytes(ivBytes);
    const cipher = createCipheriv('aes-256-gcm', this.key, iv);
    cipher.setAAD(Buffer.from(context));
    const body = Buffer.concat([cipher.update(plaintext, 'utf8'), cipher.final()]);
    return sealedPrefix + Buffer.concat([iv, cipher.getAuthTag(), body]).toString('base64url');
  }

  /** Throws when the value was altered, sealed under another key or purpose, or with another context. */
  open(sealed: string, context = ''): string {
    const raw = sealed.startsWith(sealedPrefix)
      ? Buffer.from(sealed.slice(sealedPrefix.length), 'base64url')
      : Buffer.alloc(0);
    if (raw.length < ivBytes + tagBytes) throw new Error('sealed secret is malformed');
    const decipher = createDecipheriv('aes-256-gcm', this.key, raw.subarray(0, ivBytes));
    decipher.setAAD(Buffer.from(context));
    decipher.setAuthTag(raw.subarray(ivBytes, ivBytes + tagBytes));
    try {
      return Buffer.concat([decipher.update(raw.subarray(ivBytes + tagBytes)), decipher.final()]).toString(
        'utf8',
      );
    } catch {
      throw new Error('sealed secret failed authentication: altered, or sealed with another gateway key');
    }
  }
}
