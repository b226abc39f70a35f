import { createHmac } from 'node:crypto';

/**
 * Derived SigV4 signing keys, kSigning = HMAC(HMAC(HMAC(HMAC("AWS4" + secret, date), region), service),
 * "aws4_request"), by (secret, date, region, service). Four HMACs saved per request; a key changes once a
 * day. Bounded: past maxEntries the least recently used key is dropped (Map keeps insertion order).
 */
export class SigningKeyCache {
  private readonly keys = new Map<string, Buffer>();

  constructor(private readonly maxEntries = 4096) {}

  get(secret: string, date: string, region: string, service: string): Buffer {
    // "\n" cannot occur in a date, region or service that passed the scope checks: no two tuples collide.
    const id = `${date}\n${region}\n${service}\n${secret}`;
    const cached = this.keys.get(id);
    if (cached) {
      // A hit moves the key to the newest end, so the oldest entry is the least recently used.
      this.keys.delete(id);
      this.keys.set(id, cached);
      return cached;
    }
    const key = deriveSigningKey(secret, date, region, service);
    this.keys.set(id, key);
    if (this.keys.size > this.maxEntries) this.keys.delete(this.keys.keys().next().value as string);
    return key;
  }

  get size(): number {
    return this.keys.size;
  }
}

export function deriveSigningKey(secret: string, date: string, region: string, service: string): Buffer {
  const kDate = createHmac('sha256', `AWS4${secret}`).update(date).digest();
  const kRegion = createHmac('sha256', kDate).update(region).digest();
  const kService = createHmac('sha256', kRegion).update(service).digest();
  return createHmac('sha256', kService).update('aws4_request').digest();
}
