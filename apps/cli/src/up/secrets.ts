import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import { serviceTokenFile } from './services';

/**
 * The shared secret services use to recognise each other: generated once, kept readable by its owner only
 * in <dataDir>/service-token, and reused by every later `up` (agents and services restarted by hand still
 * match).
 */
export function loadOrCreateServiceToken(dataDir: string): string {
  const file = serviceTokenFile(dataDir);
  try {
    const existing = fs.readFileSync(file, 'utf8').trim();
    if (existing.length >= 16) {
      fs.chmodSync(file, 0o600);
      return existing;
    }
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
  }
  const token = randomBytes(32).toString('base64url');
  fs.writeFileSync(file, `${token}\n`, { mode: 0o600 });
  fs.chmodSync(file, 0o600);
  return token;
}

/** The admin token the gateway wrote at its first start, if it did. */
export function readAdminToken(file: string): string | undefined {
  try {
    const token = fs.readFileSync(file, 'utf8').trim();
    return token || undefined;
  } catch {
    return undefined;
  }
}
