// The counters behind rateLimits, budgets and callsOver: in memory (the
// default, one replica) or in Redis (shared by all replicas of an agent).
import type { Logger } from 'pino';
import type { SidecarMetrics } from '../metrics.ts';
import { counterAclUser } from './acl.ts';
import { MemoryBackend } from './memory.ts';
import type { RedisLogin } from './redis.ts';
import { RedisBackend } from './redis.ts';
import { checkRedisUrl } from './redis-url.ts';
import type { CounterScope } from './acl.ts';
import type { CounterStoreKind } from './store.ts';
import { CountingStore } from './store.ts';

export type { CounterBackend, CounterStoreKind } from './store.ts';
export { CountingStore } from './store.ts';
export { MemoryBackend } from './memory.ts';
export { RedisBackend } from './redis.ts';
export { checkRedisUrl } from './redis-url.ts';
export type { RedisLogin } from './redis.ts';
export { counterAclUser, counterKeyPrefix } from './acl.ts';
export { localDay, localRfc3339 } from './calendar.ts';

export type CounterStoreConfig = { kind: 'memory' } | { kind: 'redis'; url: string; login?: RedisLogin; commandTimeoutMs?: number };

export const COUNTER_STORE_KINDS: readonly CounterStoreKind[] = ['memory', 'redis'];

/**
 * The store the flags ask for: redis when a Redis URL is given, else memory.
 * Throws an Error naming the flag when they contradict each other.
 */
export function counterStoreConfig(kind: string | undefined, redisUrl: string | undefined, login?: RedisLogin): CounterStoreConfig {
  const url = redisUrl === '' ? undefined : redisUrl;
  const chosen = kind === undefined || kind === '' ? (url === undefined ? 'memory' : 'redis') : kind;
  if (chosen === 'memory') {
    if (url !== undefined) throw new Error('--redis-url is for --counters redis, not memory');
    if (login !== undefined) throw new Error('--redis-password-file is for --counters redis, not memory');
    return { kind: 'memory' };
  }
  if (chosen !== 'redis') throw new Error(`--counters must be one of ${COUNTER_STORE_KINDS.join(', ')}, not ${JSON.stringify(chosen)}`);
  if (url === undefined) throw new Error('--counters redis needs --redis-url (or $PORTCULLIS_REDIS_URL)');
  return { kind: 'redis', url: checkRedisUrl(url), ...(login === undefined ? {} : { login }) };
}

/**
 * The agent's login from the content of its password file: the user is the
 * agent's own ACL user; one final line break is not part of the password.
 */
export function redisLoginOf(scope: CounterScope, fileContent: string, file: string): RedisLogin {
  const password = fileContent.replace(/\r?\n$/, '');
  if (password === '') throw new Error(`--redis-password-file ${file} is empty`);
  if (/[\r\n]/.test(password)) throw new Error(`--redis-password-file ${file} holds more than one line`);
  return { username: counterAclUser(scope), password };
}

export function createCounterStore(config: CounterStoreConfig, deps: { metrics: SidecarMetrics; log: Logger }): CountingStore {
  if (config.kind === 'redis' && config.login === undefined) {
    deps.log.warn('counters in Redis as its default user, with no password: where that user is on, the application can reach and reset them too (docs/counters.md, Redis security)');
  }
  const backend =
    config.kind === 'memory'
      ? new MemoryBackend()
      : new RedisBackend({
        url: config.url,
        log: deps.log,
        ...(config.login === undefined ? {} : { login: config.login }),
        ...(config.commandTimeoutMs === undefined ? {} : { commandTimeoutMs: config.commandTimeoutMs }),
      });
  return new CountingStore({ backend, metrics: deps.metrics, log: deps.log });
}
