import { describe, expect, it } from 'vitest';
import type { AuthorizationDecision } from '../../compiler/index.ts';
import { counterStoreConfig } from './index.ts';
import type { LimitKind } from './plan.ts';
import { callsOverFailures, costOf, planReservation, refusingLimit } from './plan.ts';

const SCOPE = { tenant: 'finance', namespace: 'finance', agent: 'finance-agent' };
const NOW = Date.parse('2026-11-23T14:00:00Z');

describe('costOf', () => {
  const byParam = { key: 'openai-api', dailyUSD: 20, timeZone: 'UTC', param: 'usage.cost_usd' };
  it.each([
    ['a number at the dotted path', { usage: { cost_usd: 1.25 } }, 1.25],
    ['zero', { usage: { cost_usd: 0 } }, 0],
    ['a negative number', { usage: { cost_usd: -1 } }, undefined],
    ['a numeric string', { usage: { cost_usd: '1.25' } }, undefined],
    ['a missing parameter', { usage: {} }, undefined],
    ['a path through a list', { usage: [{ cost_usd: 1 }] }, undefined],
    ['a key holding the dot itself', { 'usage.cost_usd': 1 }, undefined],
    ['an inherited property', { usage: Object.create({ cost_usd: 1 }) as unknown }, undefined],
  ])('reads %s as %s', (_, params, expected) => {
    expect(costOf(params, byParam)).toBe(expected);
  });

  it('charges a fixed cost whatever the parameters say', () => {
    expect(costOf({ cost_usd: 99 }, { key: 't', dailyUSD: 1, timeZone: 'UTC', perCall: 0.25 })).toBe(0.25);
  });
});

describe('planReservation', () => {
  it('scopes every key by tenant, namespace and agent in one hash tag, and shares identical limits', () => {
    const plan = planReservation(SCOPE, { tool: 'search' }, {
      calls: [{ tool: 'search', window: '1h' }, { tool: 'search', window: '60m' }],
      rate: [{ key: 'search', rps: 3, burst: 3 }, { key: 'search', rps: 3, burst: 3 }],
      spend: [{ key: 'search', dailyUSD: 20, timeZone: 'UTC', perCall: 1 }, { key: 'search', dailyUSD: 5, timeZone: 'UTC', perCall: 1 }],
    }, NOW);
    expect(plan.buckets.map((b) => b.key)).toEqual(['portcullis:{finance/finance/finance-agent}:rate:3:3:search']);
    expect(plan.windows).toEqual([{ key: 'portcullis:{finance/finance/finance-agent}:calls:3600000:search', tool: 'search', ms: 3_600_000, windows: ['1h', '60m'] }]);
    expect(plan.spends.map((s) => [s.key, s.capMicros, s.costMicros])).toEqual([['portcullis:{finance/finance/finance-agent}:spend:UTC:fixed=1000000:search', 5_000_000, 1_000_000]]);
  });

  it('refuses obligations no compiled policy can hold, rather than guessing', () => {
    expect(() => planReservation(SCOPE, { tool: 't' }, { calls: [{ tool: 't', window: 'soon' }], rate: [], spend: [] }, NOW)).toThrow('callsOver window "soon" is not a duration');
    expect(() => planReservation(SCOPE, { tool: 't' }, { calls: [], rate: [{ key: 't', rps: 0, burst: 1 }], spend: [] }, NOW)).toThrow('needs rps > 0');
  });
});

describe('refusingLimit and callsOverFailures', () => {
  const base = { enforced: true, policy: 'p', revision: 'r', reasons: [] };
  it.each<[string, AuthorizationDecision, LimitKind | undefined]>([
    ['a rate limit', { ...base, decision: 'approval_needed', rule: 'rateLimits[2]' }, 'rate'],
    ['a budget', { ...base, decision: 'deny', rule: 'budgets[0]' }, 'budget'],
    ['a rule of a shadow policy, which lets the call through', { ...base, enforced: false, decision: 'deny', rule: 'rateLimits[0]' }, undefined],
    ['an allowed call', { ...base, decision: 'allow', rule: 'rateLimits[0]' }, undefined],
    ['a plain deny rule', { ...base, decision: 'deny', rule: 'no-coerced-payments' }, undefined],
    ['a default deny whose rule failed only on callsOver', { ...base, decision: 'deny', rule: 'portcullis:default-deny', reasons: ['p/r: calls to the tool in the last 1h: 9 before this one, over max 9'] }, 'calls'],
  ])('names %s', (_, decision, expected) => {
    expect(refusingLimit(decision)).toBe(expected);
  });

  it('reads each rule that failed only on callsOver windows, with their maxima', () => {
    expect(callsOverFailures([
      'p/a: calls to the tool in the last 1h: 9 before this one, over max 9; calls to the tool in the last 1m: 3 before this one, over max 2',
      'p/b: calls to the tool in the last 1h: 9 before this one, over max 5; params.amount 9000 > max 5000',
    ])).toEqual([[{ window: '1h', max: 9 }, { window: '1m', max: 2 }]]);
  });
});

describe('counterStoreConfig', () => {
  it.each([
    ['nothing given: memory', undefined, undefined, { kind: 'memory' }],
    ['a Redis URL alone: redis', undefined, 'redis://redis:6379/0', { kind: 'redis', url: 'redis://redis:6379/0' }],
    ['redis with a TLS URL', 'redis', 'rediss://redis:6380', { kind: 'redis', url: 'rediss://redis:6380' }],
    ['empty values as not given', '', '', { kind: 'memory' }],
  ])('%s', (_, kind, url, expected) => {
    expect(counterStoreConfig(kind, url)).toEqual(expected);
  });

  it.each([
    ['redis without a URL', 'redis', undefined, '--counters redis needs --redis-url'],
    ['memory with a URL', 'memory', 'redis://redis:6379', '--redis-url is for --counters redis'],
    ['an unknown store', 'etcd', undefined, '--counters must be one of memory, redis, not "etcd"'],
    ['a URL of another scheme', 'redis', 'http://redis:6379', 'is not a redis:// or rediss:// URL'],
    ['a URL that is not one', 'redis', 'redis:6379', 'names no host'],
  ])('refuses %s', (_, kind, url, message) => {
    expect(() => counterStoreConfig(kind, url)).toThrow(message);
  });
});
