import { describe, expect, it } from 'vitest';
import type { StoredTokenKey, StoredTokenKeyring } from './keyring.ts';
import { loadTokenKeyring, newTokenKey, RETIRED_KEY_GRACE_MS, rotatedKeyring, signingKeyIdAt } from './keyring.ts';
import { ReplayCache } from './replay-cache.ts';

const T0 = new Date('2026-11-23T12:00:00Z');
const at = (ms: number): Date => new Date(T0.getTime() + ms);
const storedKey = (keyId: string, activatesAt: Date): StoredTokenKey => ({ keyId, privateKeyPem: '', publicKeyPem: '', createdAt: T0.toISOString(), activatesAt: activatesAt.toISOString() });
const ids = (ring: StoredTokenKeyring): string[] => ring.keys.map((k) => k.keyId);

describe('token keyring rotation', () => {
  it('keeps signing with the old key until the new one has been published for the delay', () => {
    const ring = rotatedKeyring({ keys: [storedKey('old', T0)] }, storedKey('new', T0), at(60_000), 120_000);
    expect(ids(ring)).toEqual(['old', 'new']);
    expect(signingKeyIdAt(ring, at(60_000))).toBe('old');
    expect(signingKeyIdAt(ring, at(179_999))).toBe('old');
    expect(signingKeyIdAt(ring, at(180_000))).toBe('new');
  });

  it('keeps a retired key while tokens it signed may still be valid, and drops it after', () => {
    const ring: StoredTokenKeyring = { keys: [storedKey('first', T0), storedKey('second', at(1000))] };
    const early = rotatedKeyring(ring, storedKey('third', T0), at(1000 + RETIRED_KEY_GRACE_MS - 1), 0);
    expect(ids(early)).toEqual(['first', 'second', 'third']);
    const late = rotatedKeyring(ring, storedKey('third', T0), at(1000 + RETIRED_KEY_GRACE_MS), 0);
    expect(ids(late)).toEqual(['second', 'third']);
  });

  it('never drops the key that is signing now', () => {
    const ring: StoredTokenKeyring = { keys: [storedKey('only', T0)] };
    expect(ids(rotatedKeyring(ring, storedKey('next', T0), at(10 * RETIRED_KEY_GRACE_MS), 60_000))).toEqual(['only', 'next']);
  });

  it('signs with the earliest key when the clock is behind every activation', () => {
    expect(signingKeyIdAt({ keys: [storedKey('b', at(2000)), storedKey('a', at(1000))] }, T0)).toBe('a');
  });

  it('serves pending and retired keys in JWKS and signs with the active one', async () => {
    const first = { ...(await newTokenKey(T0)), activatesAt: T0.toISOString() };
    const second = { ...(await newTokenKey(T0)), activatesAt: at(120_000).toISOString() };
    const keyring = await loadTokenKeyring({ keys: [first, second] });
    expect((await keyring.jwks()).keys.map((k) => k.kid).sort()).toEqual([first.keyId, second.keyId].sort());
    expect(keyring.signingKey(at(1000)).keyId).toBe(first.keyId);
    expect(keyring.signingKey(at(120_000)).keyId).toBe(second.keyId);
  });
});

describe('replay cache', () => {
  it('answers first-use once, then replayed until the entry expires', () => {
    const cache = new ReplayCache();
    expect(cache.use('a', 2000, 1000)).toBe('first-use');
    expect(cache.use('a', 2000, 1500)).toBe('replayed');
    expect(cache.use('a', 4000, 2000)).toBe('first-use');
  });

  it('when full, forgets only expired entries and refuses rather than forget a live one', () => {
    const cache = new ReplayCache(2);
    cache.use('a', 1000, 0);
    cache.use('b', 5000, 0);
    expect(cache.use('c', 5000, 500)).toBe('full');
    expect(cache.use('c', 5000, 1000)).toBe('first-use');
    expect(cache.use('b', 5000, 1000)).toBe('replayed');
    expect(cache.size).toBe(2);
  });
});
