// The `jti`s of one-time tokens already used, each remembered until its token expires (after
// which the token is refused as expired anyway). Bounded: when full of unexpired entries it
// refuses to remember more rather than forget one, since forgetting would let that token be replayed.

export type ReplayVerdict = 'first-use' | 'replayed' | 'full';

export class ReplayCache {
  private readonly expiries = new Map<string, number>();
  private readonly maxEntries: number;

  constructor(maxEntries = 100_000) {
    this.maxEntries = maxEntries;
  }

  get size(): number {
    return this.expiries.size;
  }

  /** Records a use of `jti` (valid until `expiresAtMs`) and says whether it is the first. */
  use(jti: string, expiresAtMs: number, nowMs: number): ReplayVerdict {
    const known = this.expiries.get(jti);
    if (known !== undefined && known > nowMs) return 'replayed';
    if (known === undefined && this.expiries.size >= this.maxEntries) {
      this.forgetExpired(nowMs);
      if (this.expiries.size >= this.maxEntries) return 'full';
    }
    this.expiries.set(jti, expiresAtMs);
    return 'first-use';
  }

  private forgetExpired(nowMs: number): void {
    for (const [jti, expiresAt] of this.expiries) if (expiresAt <= nowMs) this.expiries.delete(jti);
  }
}
