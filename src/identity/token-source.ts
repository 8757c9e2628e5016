// What a sidecar needs to hold its agent token: fetch it at start, refresh it before it expires
// (at 70-80 % of its lifetime, jittered so a fleet started together does not refresh together),
// and retry failures with capped, jittered exponential backoff while the current token lasts.

import type { TokenServiceClient } from './token-service-client.ts';

export interface FetchedToken {
  token: string;
  expiresInS: number;
}

/** Between 70 % and 80 % of the lifetime: early enough to survive a few failed retries. */
export function refreshDelayMs(lifetimeMs: number, random: number): number {
  return Math.max(1000, Math.round(lifetimeMs * (0.7 + 0.1 * random)));
}

/** 0.5 s doubling per failure, capped at 30 s, with half of it random. */
export function retryDelayMs(failures: number, random: number): number {
  const base = Math.min(30_000, 500 * 2 ** Math.max(0, failures - 1));
  return base * (0.5 + 0.5 * random);
}

export interface AgentTokenSourceOptions {
  fetchToken: () => Promise<FetchedToken>;
  onError?: (error: unknown, retryInMs: number) => void;
  now?: () => number;
  random?: () => number;
}

export class AgentTokenSource {
  private readonly options: AgentTokenSourceOptions;
  private token: { value: string; expiresAtMs: number } | undefined;
  private timer: NodeJS.Timeout | undefined;
  private failures = 0;
  private stopped = false;
  private renewing = false;
  private lastRenewMs = Number.NEGATIVE_INFINITY;
  /** Ends the wait between two first attempts, so stop() also ends start(). */
  private wake: (() => void) | undefined;

  constructor(options: AgentTokenSourceOptions) {
    this.options = options;
  }

  /** The current token; undefined before the first fetch and once it has expired unrenewed. */
  get current(): string | undefined {
    return this.token && this.token.expiresAtMs > this.now() ? this.token.value : undefined;
  }

  /** Fetches the first token (retrying until it succeeds or the source is stopped), then refreshes on its own. */
  async start(): Promise<void> {
    this.stopped = false;
    while (!(await this.refresh())) {
      if (this.isStopped()) return;
      await new Promise<void>((resolve) => {
        this.wake = resolve;
        this.timer = setTimeout(resolve, this.retryIn());
      });
    }
  }

  /**
   * Fetches a new token now, as after a revocation: at most one fetch at a
   * time and one a second, so a stream of refused calls does not hammer the
   * token service.
   */
  renew(): void {
    if (this.stopped || this.renewing || this.now() - this.lastRenewMs < 1000) return;
    this.renewing = true;
    this.lastRenewMs = this.now();
    void this.refresh().finally(() => { this.renewing = false; });
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.wake?.();
  }

  private isStopped(): boolean {
    return this.stopped;
  }

  /** One fetch; on success the next refresh is scheduled, on failure the caller (or the timer) retries. */
  private async refresh(): Promise<boolean> {
    try {
      const fetched = await this.options.fetchToken();
      const lifetimeMs = fetched.expiresInS * 1000;
      this.token = { value: fetched.token, expiresAtMs: this.now() + lifetimeMs };
      this.failures = 0;
      this.schedule(refreshDelayMs(lifetimeMs, this.random()));
      return true;
    } catch (error) {
      this.failures += 1;
      this.options.onError?.(error, retryDelayMs(this.failures, 0.5));
      return false;
    }
  }

  private retryIn(): number {
    return retryDelayMs(this.failures, this.random());
  }

  private schedule(delayMs: number): void {
    if (this.stopped) return;
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      void this.refresh().then((ok) => { if (!ok) this.schedule(this.retryIn()); });
    }, delayMs);
    this.timer.unref();
  }

  private now(): number {
    return this.options.now?.() ?? Date.now();
  }

  private random(): number {
    return this.options.random?.() ?? Math.random();
  }
}

/**
 * Fetches agent tokens from the token service, presenting the pod's projected ServiceAccount token
 * read afresh each time (the kubelet rotates the file), over the client's verified connection.
 */
export function tokenServiceFetcher(client: TokenServiceClient, serviceAccountToken: () => Promise<string>): () => Promise<FetchedToken> {
  return async () => {
    const { status, body } = await client.request('POST', '/v1/token', { authorization: `Bearer ${(await serviceAccountToken()).trim()}` });
    const answer = (body ?? {}) as { access_token?: unknown; expires_in?: unknown; error?: unknown; message?: unknown };
    if (status !== 200 || typeof answer.access_token !== 'string' || typeof answer.expires_in !== 'number') {
      const text = (value: unknown, fallback: string): string => (typeof value === 'string' ? value : fallback);
      throw new Error(`the token service answered ${String(status)} ${text(answer.error, '')}: ${text(answer.message, 'no token')}`);
    }
    return { token: answer.access_token, expiresInS: answer.expires_in };
  };
}
