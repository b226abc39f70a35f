import { randomBytes, scrypt, timingSafeEqual } from 'node:crypto';

/** AWS's access key id alphabet (RFC 4648 base32): "AKIA" + 16 characters. */
const base32 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
export const accessKeyIdPattern = /^AKIA[A-Z2-7]{16}$/;

/** Cost of the OpenStack password hash (scrypt N, r, p): about 16 MiB and tens of ms per check. */
const scryptParams = { N: 16_384, r: 8, p: 1 };
const scryptKeyBytes = 32;
const saltBytes = 16;

function base32Chars(n: number): string {
  // 256 is a multiple of 32, so the low five bits of a random byte are uniform.
  return Array.from(randomBytes(n), (b) => base32[b & 31]).join('');
}

/** An EC2 access key id shaped like AWS's (80 random bits). */
export function newAccessKeyId(): string {
  return `AKIA${base32Chars(16)}`;
}

/** An EC2 secret access key shaped like AWS's: 40 characters of the base64 alphabet (240 random bits). */
export function newEc2Secret(): string {
  return randomBytes(30).toString('base64');
}

/** An OpenStack password: 32 base64url characters (192 random bits), safe to paste into a shell. */
export function newPassword(): string {
  return randomBytes(24).toString('base64url');
}

/** A suffix for generated user names: lowercase base32, 8 characters. */
export function newNameSuffix(): string {
  return base32Chars(8).toLowerCase();
}

/** "scrypt$N$r$p$salt$hash" (base64url): the parameters travel with the hash so they can change later. */
export async function hashPassword(password: string): Promise<string> {
  const salt = randomBytes(saltBytes);
  const hash = await scryptAsync(password, salt, scryptKeyBytes, scryptParams);
  const { N, r, p } = scryptParams;
  return ['scrypt', N, r, p, salt.toString('base64url'), hash.toString('base64url')].join('$');
}

/** Compares in constant time; false for a malformed stored hash. */
export async function verifyPassword(password: string, stored: string): Promise<boolean> {
  const [scheme, n, r, p, salt, hash] = stored.split('$');
  if (scheme !== 'scrypt' || !salt || !hash) return false;
  const expected = Buffer.from(hash, 'base64url');
  const actual = await scryptAsync(password, Buffer.from(salt, 'base64url'), expected.length, {
    N: Number(n),
    r: Number(r),
    p: Number(p),
  });
  return timingSafeEqual(actual, expected);
}

function scryptAsync(
  password: string,
  salt: Buffer,
  keyBytes: number,
  params: { N: number; r: number; p: number },
): Promise<Buffer> {
  return new Promise((resolve, reject) =>
    scrypt(password, salt, keyBytes, params, (err, key) => (err ? reject(err) : resolve(key))),
  );
}
