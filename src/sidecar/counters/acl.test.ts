import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { aclPasswordHash, CLIENT_COMMANDS, counterAclFileLine, counterAclRules, counterAclSetUser, counterAclUser, counterKeyPrefix, SCRIPT_COMMANDS } from './acl.ts';
import { pino } from 'pino';
import { createSidecarMetrics } from '../metrics.ts';
import { counterStoreConfig, createCounterStore, redisLoginOf } from './index.ts';
import type { CounterScope } from './acl.ts';
import { planReservation } from './plan.ts';
import { RESERVE_SCRIPT, SETTLE_SCRIPT } from './redis-scripts.ts';

const SCOPE: CounterScope = { tenant: 'finance', namespace: 'finance-prod', agent: 'payments-agent' };
const HASH = aclPasswordHash('s3cret');
const scope = (modify: (s: CounterScope) => void): CounterScope => {
  const s = { ...SCOPE };
  modify(s);
  return s;
};

describe('counter key layout', () => {
  it('gives every key of an agent one prefix, which its ACL user owns', () => {
    expect(counterKeyPrefix(SCOPE)).toBe('portcullis:{finance/finance-prod/payments-agent}:');
    expect(counterAclUser(SCOPE)).toBe('portcullis/finance/finance-prod/payments-agent');
    const plan = planReservation(SCOPE, { tool: 'stripe', params: { amount: 1 } }, {
      calls: [{ tool: 'stripe', window: '1h' }],
      rate: [{ key: 'stripe/create', rps: 1, burst: 1 }],
      spend: [{ key: 'stripe', dailyUSD: 1, timeZone: 'UTC', param: 'amount' }],
    }, Date.parse('2026-11-23T14:00:00Z'));
    const keys = [...plan.buckets, ...plan.spends, ...plan.windows].map((item) => item.key);
    expect(keys).toHaveLength(3);
    for (const key of keys) expect(key.startsWith(counterKeyPrefix(SCOPE))).toBe(true);
  });

  it.each([
    ['a glob star in the agent', scope((s) => { s.agent = 'a*'; }), 'the agent "a*" cannot name counters'],
    ['a glob bracket in the namespace', scope((s) => { s.namespace = 'ns[0]'; }), 'the namespace "ns[0]" cannot name counters'],
    ['a question mark in the tenant', scope((s) => { s.tenant = 'fin?nce'; }), 'the tenant "fin?nce" cannot name counters'],
    ['a backslash', scope((s) => { s.agent = 'a\\*'; }), 'the agent "a\\\\*" cannot name counters'],
    ['a closing brace, which would end the hash tag', scope((s) => { s.agent = 'a}:x'; }), 'the agent "a}:x" cannot name counters'],
    ['a slash, which separates the components', scope((s) => { s.tenant = 'finance/finance-prod'; }), 'the tenant "finance/finance-prod" cannot name counters'],
    ['a space, which would split an ACL file line', scope((s) => { s.agent = 'a b'; }), 'the agent "a b" cannot name counters'],
    ['an empty tenant', scope((s) => { s.tenant = ''; }), 'the tenant "" cannot name counters'],
    ['a name longer than 253', scope((s) => { s.agent = 'a'.repeat(254); }), 'cannot name counters'],
  ])('refuses a scope with %s', (_, bad, message) => {
    expect(() => counterKeyPrefix(bad)).toThrow(message);
    expect(() => counterAclUser(bad)).toThrow(message);
    expect(() => planReservation(bad, { tool: 't' }, { calls: [], rate: [{ key: 't', rps: 1, burst: 1 }], spend: [] }, 0)).toThrow(message);
  });

  it("never lets one agent's key pattern match another agent's keys", () => {
    const component = fc.stringMatching(/^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,10}[A-Za-z0-9])?$/);
    const scopes = fc.record({ tenant: component, namespace: component, agent: component });
    fc.assert(fc.property(scopes, scopes, fc.string(), (a, b, suffix) => {
      fc.pre(a.tenant !== b.tenant || a.namespace !== b.namespace || a.agent !== b.agent);
      // The ACL pattern is the prefix and a star: it matches exactly the keys that start with the prefix.
      expect(`${counterKeyPrefix(b)}${suffix}`.startsWith(counterKeyPrefix(a))).toBe(false);
    }));
  });
});

describe('ACL rules of an agent', () => {
  it('start from nothing, allow its own keys and only the counter commands', () => {
    expect(counterAclRules(SCOPE, HASH)).toEqual([
      'reset', 'on', `#${HASH}`, '~portcullis:{finance/finance-prod/payments-agent}:*', 'resetchannels', '-@all',
      '+evalsha', '+eval', '+select', '+time', '+hmget', '+hset', '+pexpire', '+pexpireat', '+zremrangebyscore', '+zcard', '+zadd', '+zrem', '+zrange',
    ]);
  });

  it('come as an ACL file line and as ACL SETUSER, holding the hash of the password, never the password', () => {
    expect(HASH).toBe('1ec1c26b50d5d3c58d9583181af8076655fe00756bf7285940ba3670f99fcba0');
    const line = counterAclFileLine(SCOPE, HASH);
    expect(line).toBe(`user portcullis/finance/finance-prod/payments-agent ${counterAclRules(SCOPE, HASH).join(' ')}`);
    expect(line).not.toContain('s3cret');
    expect(counterAclSetUser(SCOPE, HASH).slice(0, 3)).toEqual(['ACL', 'SETUSER', 'portcullis/finance/finance-prod/payments-agent']);
  });

  it.each([
    ['a password rather than its hash', 's3cret'],
    ['an upper-case hash', HASH.toUpperCase()],
    ['a hash that is too short', HASH.slice(1)],
  ])('refuse %s', (_, hash) => {
    expect(() => counterAclRules(SCOPE, hash)).toThrow('the password hash must be 64 lowercase hex digits (SHA-256)');
  });
});

/** The commands a script calls, and the first argument of each. */
function callsOf(script: string): { command: string; firstArgument: string | undefined }[] {
  return [...script.matchAll(/redis\.call\('([A-Z]+)'(?:,\s*([^,)]+))?/g)].map((m) => ({ command: (m[1] ?? '').toLowerCase(), firstArgument: m[2]?.trim() }));
}

describe.each([
  ['reserve', RESERVE_SCRIPT],
  ['settle', SETTLE_SCRIPT],
])('the %s script under an ACL', (_, script) => {
  it('calls only commands the agent user is granted', () => {
    const granted: readonly string[] = SCRIPT_COMMANDS;
    for (const { command } of callsOf(script)) expect(granted).toContain(command);
  });

  it('touches only keys passed in KEYS, never a key name it builds', () => {
    for (const { command, firstArgument } of callsOf(script)) {
      if (command === 'time') expect(firstArgument).toBeUndefined();
      else expect(firstArgument).toBe('key');
    }
    const assignments = [...script.matchAll(/\bkey\s*=\s*([^\n]+)/g)].map((m) => m[1]?.trim());
    expect(assignments.length).toBeGreaterThan(0);
    for (const value of assignments) expect(value).toBe('KEYS[k]');
    // tokens_at reads a bucket by the key it is given: always `key`.
    for (const [, argument] of script.matchAll(/tokens_at\(([^,]+),/g)) expect(argument).toBe('key');
  });
});

it('grants every command the scripts call and nothing the client does not send', () => {
  const called = new Set([...callsOf(RESERVE_SCRIPT), ...callsOf(SETTLE_SCRIPT)].map((c) => c.command));
  expect([...SCRIPT_COMMANDS].sort()).toEqual([...called].sort());
  expect(CLIENT_COMMANDS).toEqual(['evalsha', 'eval', 'select']);
});

describe('the Redis login', () => {
  it('is the agent user, with the file content less one final line break', () => {
    expect(redisLoginOf(SCOPE, 's3cret\n', '/p')).toEqual({ username: 'portcullis/finance/finance-prod/payments-agent', password: 's3cret' });
    expect(redisLoginOf(SCOPE, 's3cret', '/p').password).toBe('s3cret');
    expect(redisLoginOf(SCOPE, ' s3cret \r\n', '/p').password).toBe(' s3cret ');
  });

  it.each([
    ['an empty file', '', '--redis-password-file /p is empty'],
    ['a lone line break', '\n', '--redis-password-file /p is empty'],
    ['two lines', 'a\nb\n', '--redis-password-file /p holds more than one line'],
  ])('refuses %s', (_, content, message) => {
    expect(() => redisLoginOf(SCOPE, content, '/p')).toThrow(message);
  });

  it('goes with redis only', () => {
    const login = redisLoginOf(SCOPE, 'p', '/p');
    expect(counterStoreConfig('redis', 'redis://redis:6379/0', login)).toEqual({ kind: 'redis', url: 'redis://redis:6379/0', login });
    expect(() => counterStoreConfig('memory', undefined, login)).toThrow('--redis-password-file is for --counters redis, not memory');
  });

  it.each([
    ['a password', 'redis://:s3cret@redis:6379/0', 'the Redis URL redis://redis:6379/0 carries credentials'],
    ['a user and password', 'redis://agent:s3cret@redis:6379', 'carries credentials: give the password in --redis-password-file'],
    ['a user alone', 'redis://default@redis:6379', 'carries credentials'],
    ['a password in the query, which the client reads too', 'redis://redis:6379/0?password=s3cret', 'the Redis URL redis://redis:6379/0 has a query or fragment'],
  ])('is never taken from a URL with %s, and the error does not repeat the password', (_, url, message) => {
    expect(() => counterStoreConfig('redis', url)).toThrow(message);
    try {
      counterStoreConfig('redis', url);
    } catch (error) {
      expect(String(error)).not.toContain('s3cret');
    }
  });
});

describe('a counter store in Redis', () => {
  it.each([
    ['warns when it logs in as the default user', undefined, true],
    ["stays quiet with the agent's own user", { username: 'portcullis/finance/finance-prod/payments-agent', password: 'p' }, false],
  ])('%s', async (_, login, warns) => {
    const lines: string[] = [];
    const log = pino({ level: 'info' }, { write: (line: string) => { lines.push(line); } });
    // Nothing listens on port 1: the store is made and closed without a server.
    const store = createCounterStore({ kind: 'redis', url: 'redis://127.0.0.1:1', ...(login === undefined ? {} : { login }) }, { metrics: createSidecarMetrics(), log });
    await store.close();
    expect(lines.some((line) => line.includes('counters in Redis as its default user'))).toBe(warns);
    expect(lines.join('')).not.toContain('"p"');
  });
});
