import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { deriveKey, loadOrCreateSecretKey, SecretBox } from './secret-key';

// Real: the file system (a temporary directory) and node:crypto. Nothing is faked.

describe('loadOrCreateSecretKey', () => {
  let dir: string;
  beforeEach(() => (dir = fs.mkdtempSync(path.join(os.tmpdir(), 'flotilla-secret-key-'))));
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('creates 32 random bytes readable by the owner only, with its directory, when the file is missing', () => {
    const file = path.join(dir, 'nested', 'gateway-secret.key');
    const key = loadOrCreateSecretKey(file);
    expect(key).toHaveLength(32);
    expect(fs.readFileSync(file).equals(key)).toBe(true);
    expect(fs.statSync(file).mode & 0o777).toBe(0o600);
    expect(fs.statSync(path.dirname(file)).mode & 0o077).toBe(0);
    expect(loadOrCreateSecretKey(path.join(dir, 'other.key')).equals(key)).toBe(false);
  });

  it('reuses the key of an existing file', () => {
    const file = path.join(dir, 'k');
    const first = loadOrCreateSecretKey(file);
    expect(loadOrCreateSecretKey(file).equals(first)).toBe(true);
  });

  it('refuses a file of the wrong size, saying so, and leaves it alone', () => {
    const file = path.join(dir, 'k');
    fs.writeFileSync(file, Buffer.alloc(16), { mode: 0o600 });
    expect(() => loadOrCreateSecretKey(file)).toThrow(`secret key ${file} holds 16 bytes, not 32`);
    expect(fs.statSync(file).size).toBe(16);
  });

  it('refuses a file group or others can read, saying how to fix it', () => {
    const file = path.join(dir, 'k');
    fs.writeFileSync(file, Buffer.alloc(32), { mode: 0o600 });
    fs.chmodSync(file, 0o640);
    expect(() => loadOrCreateSecretKey(file)).toThrow(
      `secret key ${file} is readable by group or others (mode 640): run chmod 600 ${file}`,
    );
  });
});

describe('SecretBox', () => {
  const key = Buffer.alloc(32, 7);

  it('opens what it sealed, and seals the same secret differently each time', () => {
    const box = new SecretBox(key, 'ec2-secret');
    const a = box.seal('wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY', 'row-1');
    const b = box.seal('wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY', 'row-1');
    expect(a).not.toBe(b);
    expect(a).not.toContain('wJalr');
    expect(box.open(a, 'row-1')).toBe('wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY');
    expect(box.open(b, 'row-1')).toBe('wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY');
  });

  it('refuses a sealed value with any byte altered', () => {
    const box = new SecretBox(key, 'ec2-secret');
    const sealed = box.seal('secret');
    const raw = Buffer.from(sealed.slice(3), 'base64url');
    for (const at of [0, 12, 28, raw.length - 1]) {
      const bad = Buffer.from(raw);
      bad[at] ^= 1;
      expect(() => box.open(`v1.${bad.toString('base64url')}`)).toThrow('failed authentication');
    }
    expect(() => box.open('v1.short')).toThrow('malformed');
    expect(() => box.open(sealed.slice(3))).toThrow('malformed');
  });

  it('refuses a value sealed for another context, purpose or key', () => {
    const sealed = new SecretBox(key, 'ec2-secret').seal('secret', 'row-1');
    expect(() => new SecretBox(key, 'ec2-secret').open(sealed, 'row-2')).toThrow('failed authentication');
    expect(() => new SecretBox(key, 'other').open(sealed, 'row-1')).toThrow('failed authentication');
    expect(() => new SecretBox(Buffer.alloc(32, 8), 'ec2-secret').open(sealed, 'row-1')).toThrow(
      'failed authentication',
    );
  });
});

describe('deriveKey', () => {
  it('derives a different 32-byte key per purpose, the same one each time', () => {
    const key = Buffer.alloc(32, 1);
    expect(deriveKey(key, 'keystone-token')).toHaveLength(32);
    expect(deriveKey(key, 'keystone-token').equals(deriveKey(key, 'keystone-token'))).toBe(true);
    expect(deriveKey(key, 'keystone-token').equals(deriveKey(key, 'ec2-secret'))).toBe(false);
  });
});
