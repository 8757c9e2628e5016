import { afterEach, describe, expect, it, vi } from 'vitest';
import { generateSigningKey, toJwks } from '../bundle/index.ts';
import type { BundleJwks } from '../bundle/index.ts';
import { JwksSource, keyIdOfToken } from './jwks-source.ts';
import { AgentTokenSource, refreshDelayMs, retryDelayMs } from './token-source.ts';

afterEach(() => {
  vi.useRealTimers();
});

describe('token refresh timing', () => {
  it('refreshes between 70 % and 80 % of the lifetime', () => {
    expect(refreshDelayMs(600_000, 0)).toBe(420_000);
    expect(refreshDelayMs(600_000, 1)).toBe(480_000);
  });

  it('backs off from half a second, doubling, capped at 30 s, with jitter', () => {
    expect([1, 2, 3, 10].map((n) => retryDelayMs(n, 1))).toEqual([500, 1000, 2000, 30_000]);
    expect(retryDelayMs(3, 0)).toBe(1000);
  });
});

describe('agent token source', () => {
  it('retries the first fetch until it succeeds, then refreshes before the token expires', async () => {
    vi.useFakeTimers({ now: 0 });
    let calls = 0;
    const source = new AgentTokenSource({
      fetchToken: () => {
        calls += 1;
        return calls <= 2 ? Promise.reject(new Error('token service unavailable')) : Promise.resolve({ token: `t${String(calls)}`, expiresInS: 100 });
      },
      random: () => 1,
      now: () => Date.now(),
    });
    const started = source.start();
    await vi.advanceTimersByTimeAsync(500 + 1000);
    await started;
    expect(source.current).toBe('t3');
    await vi.advanceTimersByTimeAsync(80_000);
    expect(calls).toBe(4);
    expect(source.current).toBe('t4');
    source.stop();
  });

  it('has no token once the current one expired without renewal', async () => {
    vi.useFakeTimers({ now: 0 });
    let fail = false;
    const source = new AgentTokenSource({
      fetchToken: () => (fail ? Promise.reject(new Error('down')) : Promise.resolve({ token: 't', expiresInS: 10 })),
      now: () => Date.now(),
      random: () => 0,
    });
    await source.start();
    fail = true;
    await vi.advanceTimersByTimeAsync(10_001);
    expect(source.current).toBeUndefined();
    source.stop();
  });

  it('renews at once when asked, at most once a second', async () => {
    vi.useFakeTimers({ now: 0 });
    let calls = 0;
    const source = new AgentTokenSource({ fetchToken: () => Promise.resolve({ token: `t${String(++calls)}`, expiresInS: 600 }), now: () => Date.now(), random: () => 0 });
    await source.start();
    source.renew();
    source.renew();
    await vi.advanceTimersByTimeAsync(1);
    expect([calls, source.current]).toEqual([2, 't2']);
    await vi.advanceTimersByTimeAsync(1000);
    source.renew();
    await vi.advanceTimersByTimeAsync(1);
    expect([calls, source.current]).toEqual([3, 't3']);
    source.stop();
  });

  it('ends start() when stopped while waiting to retry', async () => {
    const source = new AgentTokenSource({ fetchToken: () => Promise.reject(new Error('down')), random: () => 1 });
    const started = source.start();
    await new Promise((r) => setTimeout(r, 20));
    source.stop();
    await expect(started).resolves.toBeUndefined();
    expect(source.current).toBeUndefined();
  });
});

const first = await generateSigningKey();
const second = await generateSigningKey();

describe('JWKS source', () => {
  const jwksOf = async (...keys: (typeof first)[]): Promise<BundleJwks> => toJwks(new Map(keys.map((k) => [k.keyId, k.publicKey])));

  it('fetches once within the max-age, again when stale', async () => {
    let now = 0;
    const fetchJwks = vi.fn(() => jwksOf(first));
    const source = new JwksSource({ fetchJwks, now: () => now, maxAgeMs: 60_000 });
    await source.keysFor(first.keyId);
    await source.keysFor(first.keyId);
    expect(fetchJwks).toHaveBeenCalledTimes(1);
    now = 60_000;
    await source.keysFor(first.keyId);
    expect(fetchJwks).toHaveBeenCalledTimes(2);
  });

  it('fetches early for a key id it does not hold, at most once per interval', async () => {
    let now = 0;
    let published = [first];
    const fetchJwks = vi.fn(() => jwksOf(...published));
    const source = new JwksSource({ fetchJwks, now: () => now, minRefetchMs: 5_000 });
    await source.keysFor(first.keyId);
    published = [first, second];
    expect((await source.keysFor(second.keyId)).has(second.keyId)).toBe(false);
    now = 5_000;
    expect((await source.keysFor(second.keyId)).has(second.keyId)).toBe(true);
    await source.keysFor('made-up');
    expect(fetchJwks).toHaveBeenCalledTimes(2);
  });

  it('keeps the last keys when the service is unreachable, and fails when it never had any', async () => {
    let now = 0;
    let up = true;
    const source = new JwksSource({ fetchJwks: () => (up ? jwksOf(first) : Promise.reject(new Error('unreachable'))), now: () => now, maxAgeMs: 1000 });
    await source.keysFor(undefined);
    up = false;
    now = 2000;
    expect((await source.keysFor(first.keyId)).has(first.keyId)).toBe(true);
    await expect(new JwksSource({ fetchJwks: () => Promise.reject(new Error('unreachable')) }).keysFor(undefined)).rejects.toThrow('unreachable');
  });

  it('reads the key id of a token header, and nothing from garbage', () => {
    expect(keyIdOfToken(`${Buffer.from('{"alg":"EdDSA","kid":"k1"}').toString('base64url')}.e30.x`)).toBe('k1');
    expect(keyIdOfToken('%%%')).toBeUndefined();
    expect(keyIdOfToken(`${Buffer.from('null').toString('base64url')}..`)).toBeUndefined();
  });
});
