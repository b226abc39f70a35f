import { randomBytes } from 'node:crypto';
import { signToken, verifyToken } from './keystone-token';

// Pure: token signing and checking with a fixed clock.

describe('Keystone tokens', () => {
  const key = randomBytes(32);
  const now = Date.UTC(2026, 0, 1, 12);
  const issue = () => signToken(key, { credentialId: 'cred-1', nowMs: now, ttlSeconds: 3600 });

  it('verifies a token it signed and returns its credential and times', () => {
    const { token } = issue();
    const check = verifyToken(key, token, now + 1000);
    expect(check).toEqual({
      ok: true,
      payload: expect.objectContaining({
        credentialId: 'cred-1',
        issuedAt: now / 1000,
        expiresAt: now / 1000 + 3600,
      }),
    });
  });

  it('makes two tokens issued in the same second differ', () => {
    expect(issue().token).not.toBe(issue().token);
  });

  it('refuses a token once it expired', () => {
    const { token } = issue();
    expect(verifyToken(key, token, now + 3600_000)).toEqual({ ok: false, reason: 'expired' });
  });

  it('refuses a token signed with another key', () => {
    const { token } = issue();
    expect(verifyToken(randomBytes(32), token, now)).toEqual({ ok: false, reason: 'signature' });
  });

  it('refuses a token whose payload was changed, even with a longer expiry', () => {
    const { token } = issue();
    const [, signature] = token.split('.');
    const forged = Buffer.from(JSON.stringify(['cred-2', now / 1000, now / 1000 + 999_999, 'x'])).toString(
      'base64url',
    );
    expect(verifyToken(key, `${forged}.${signature}`, now)).toEqual({ ok: false, reason: 'signature' });
  });

  it.each(['', 'abc', 'a.b.c', '.', `${'x'.repeat(600)}.y`])('refuses the malformed token %j', (token) => {
    expect(verifyToken(key, token, now).ok).toBe(false);
  });
});
