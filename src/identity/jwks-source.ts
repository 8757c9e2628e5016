// The verifier's side of rotation: a JWKS fetched from the token service and cached for its
// max-age, fetched again early when a token names a key id it does not hold (a key published since)
// — at most once per interval, so tokens with made-up key ids cannot make it hammer the service.

import type { BundleJwks, BundleKey } from '../bundle/index.ts';
import { fromJwks } from '../bundle/index.ts';
import { JWKS_MAX_AGE_S } from './keyring.ts';

export interface JwksSourceOptions {
  fetchJwks: () => Promise<BundleJwks>;
  maxAgeMs?: number;
  /** The shortest time between two fetches for an unknown key id. */
  minRefetchMs?: number;
  now?: () => number;
}

export class JwksSource {
  private readonly options: JwksSourceOptions;
  private keys: Map<string, BundleKey> | undefined;
  private fetchedAtMs = Number.NEGATIVE_INFINITY;
  private inflight: Promise<Map<string, BundleKey>> | undefined;

  constructor(options: JwksSourceOptions) {
    this.options = options;
  }

  /** The trusted keys, fresh enough to hold `kid` if the service has published it. */
  async keysFor(kid: string | undefined): Promise<ReadonlyMap<string, BundleKey>> {
    const age = this.now() - this.fetchedAtMs;
    const stale = this.keys === undefined || age >= (this.options.maxAgeMs ?? JWKS_MAX_AGE_S * 1000);
    const missing = kid !== undefined && this.keys?.has(kid) === false && age >= (this.options.minRefetchMs ?? 5_000);
    if (stale || missing) {
      try {
        return await this.fetch();
      } catch (error) {
        // An unreachable service leaves the last keys in force; with none, there is nothing to verify with.
        if (this.keys === undefined) throw error;
      }
    }
    return this.keys ?? new Map();
  }

  private fetch(): Promise<Map<string, BundleKey>> {
    this.inflight ??= this.options
      .fetchJwks()
      .then(fromJwks)
      .then((keys) => {
        this.keys = keys;
        this.fetchedAtMs = this.now();
        return keys;
      })
      .finally(() => { this.inflight = undefined; });
    return this.inflight;
  }

  private now(): number {
    return this.options.now?.() ?? Date.now();
  }
}

/** The `kid` of a token's header, or undefined when it has none or does not parse. */
export function keyIdOfToken(token: string): string | undefined {
  try {
    const header = JSON.parse(Buffer.from(token.split('.')[0] ?? '', 'base64url').toString('utf8')) as { kid?: unknown } | null;
    return typeof header?.kid === 'string' ? header.kid : undefined;
  } catch {
    return undefined;
  }
}
