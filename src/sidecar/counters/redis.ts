// Counters in Redis, shared by every replica of an agent: one Lua script
// reserves all the counters of a call atomically, on the server's clock, and
// one settles them. While Redis cannot be reached every command fails at once
// (no offline queue, no resending) or within the command timeout, so a call is
// denied rather than held; ioredis reconnects in the background.
import type { RedisOptions, Result } from 'ioredis';
import { Redis } from 'ioredis';
import type { Logger } from 'pino';
import type { Adjustment, ReservationPlan, Reserved, Settled } from './plan.ts';
import { RESERVE_SCRIPT, SETTLE_SCRIPT } from './redis-scripts.ts';
import { checkRedisUrl } from './redis-url.ts';
import type { CounterBackend } from './store.ts';

declare module 'ioredis' {
  interface RedisCommander<Context> {
    portcullisReserve(numKeys: number, ...keysAndArgs: (string | number)[]): Result<string[], Context>;
    portcullisSettle(numKeys: number, ...keysAndArgs: (string | number)[]): Result<string[], Context>;
  }
}

/** The agent's ACL user and its password, read from a file (never from the URL, which the pod's spec shows). */
export interface RedisLogin {
  username: string;
  password: string;
}

export interface RedisBackendOptions {
  /** redis://host:port[/db] or rediss:// for TLS, with no credentials. */
  url: string;
  /** Without one the client is Redis' default user, which the documented setup turns off. */
  login?: RedisLogin;
  log: Logger;
  /** A command that has not answered by then fails (and the call is denied). */
  commandTimeoutMs?: number;
  /** Longest pause between reconnection attempts. */
  maxReconnectDelayMs?: number;
}

const DEFAULT_COMMAND_TIMEOUT_MS = 500;
const DEFAULT_MAX_RECONNECT_DELAY_MS = 1000;


function numbers(values: readonly string[], from: number, count: number, what: string): number[] {
  const out = values.slice(from, from + count).map(Number);
  if (out.length !== count || out.some((n) => !Number.isFinite(n))) throw new Error(`the ${what} script answered ${JSON.stringify(values)}`);
  return out;
}

export class RedisBackend implements CounterBackend {
  readonly kind = 'redis';
  private readonly client: Redis;

  constructor(options: RedisBackendOptions) {
    const maxDelay = options.maxReconnectDelayMs ?? DEFAULT_MAX_RECONNECT_DELAY_MS;
    const redisOptions: RedisOptions = {
      commandTimeout: options.commandTimeoutMs ?? DEFAULT_COMMAND_TIMEOUT_MS,
      connectTimeout: Math.max(1000, options.commandTimeoutMs ?? DEFAULT_COMMAND_TIMEOUT_MS),
      // Fail now rather than wait for a connection: a call is never held.
      enableOfflineQueue: false,
      // A script whose answer was lost may have run: never run it twice.
      maxRetriesPerRequest: 0,
      autoResendUnfulfilledCommands: false,
      retryStrategy: (attempt) => Math.min(maxDelay, 50 * 2 ** Math.min(attempt, 10)),
      // The ready check runs INFO, which the agent's ACL user may not: a server still loading fails the calls instead.
      enableReadyCheck: false,
      ...(options.login === undefined ? {} : { username: options.login.username, password: options.login.password }),
      scripts: {
        portcullisReserve: { lua: RESERVE_SCRIPT },
        portcullisSettle: { lua: SETTLE_SCRIPT },
      },
    };
    this.client = new Redis(checkRedisUrl(options.url), redisOptions);
    // Failures reach the calls as rejected commands; the events are for the log.
    this.client.on('error', (error: Error) => { options.log.debug({ err: error.message }, 'redis connection error'); });
    this.client.on('ready', () => { options.log.info('redis connection ready'); });
  }

  /** Resolves once connected; rejects when the first attempt fails (ioredis keeps trying). */
  async ready(): Promise<void> {
    if (this.client.status === 'ready') return;
    await new Promise<void>((resolve, reject) => {
      const onReady = (): void => { this.client.off('error', onError); resolve(); };
      const onError = (error: Error): void => { this.client.off('ready', onReady); reject(error); };
      this.client.once('ready', onReady);
      this.client.once('error', onError);
    });
  }

  async reserve(plan: ReservationPlan, member: string): Promise<Reserved> {
    const keys = [...plan.buckets.map((b) => b.key), ...plan.spends.map((s) => s.key), ...plan.windows.map((w) => w.key)];
    const args: (string | number)[] = [plan.buckets.length, plan.spends.length, plan.windows.length];
    for (const b of plan.buckets) args.push(b.rps, b.burst, b.ttlMs);
    for (const s of plan.spends) args.push(s.costMicros ?? -1, s.capMicros, ...s.days.flatMap((d) => [d.start, d.end]));
    for (const w of plan.windows) args.push(w.ms, member);
    const out = await this.client.portcullisReserve(keys.length, ...keys, ...args);
    const [now = 0] = numbers(out, 0, 1, 'reserve');
    let at = 1;
    const buckets = plan.buckets.map(() => {
      const [before = 0, taken = 0] = numbers(out, at, 2, 'reserve');
      at += 2;
      return { before, taken: taken === 1 };
    });
    const spends = plan.spends.map(() => {
      const [beforeMicros = 0, reserved = 0, start = 0, end = 0] = numbers(out, at, 4, 'reserve');
      at += 4;
      return { beforeMicros, reserved: reserved === 1, day: { start, end } };
    });
    const windows = plan.windows.map(() => {
      const [before = 0] = numbers(out, at, 1, 'reserve');
      at += 1;
      return { before };
    });
    return { now, buckets, spends, windows };
  }

  async settle(plan: ReservationPlan, reserved: Reserved, member: string, adjustment: Adjustment): Promise<Settled> {
    const keys = [...plan.buckets.map((b) => b.key), ...plan.spends.map((s) => s.key), ...plan.windows.map((w) => w.key)];
    const args: (string | number)[] = [plan.buckets.length, plan.spends.length, plan.windows.length];
    plan.buckets.forEach((b, i) => args.push(b.rps, b.burst, b.ttlMs, adjustment.refundBuckets[i] === true ? 1 : 0));
    plan.spends.forEach((_, i) => {
      const day = reserved.spends[i]?.day ?? { start: 0, end: 0 };
      args.push(adjustment.spendDeltas[i] ?? 0, day.start, day.end);
    });
    plan.windows.forEach((w, i) => {
      const { remove, max } = adjustment.windows[i] ?? { remove: false };
      args.push(w.ms, member, remove ? 1 : 0, max ?? -1);
    });
    const out = await this.client.portcullisSettle(keys.length, ...keys, ...args);
    const [now = 0, ...waits] = numbers(out, 0, 1 + plan.windows.length, 'settle');
    return { now, windowWaits: waits.map((w) => (w < 0 ? undefined : w)) };
  }

  async close(): Promise<void> {
    await this.client.quit().catch(() => {
      this.client.disconnect();
    });
  }
}
