import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import type { AuthorizationDecision, Obligations } from '../../compiler/index.ts';
import { createSidecarMetrics } from '../metrics.ts';
import { MemoryBackend } from './memory.ts';
import type { CounterBackend } from './store.ts';
import { CountingStore } from './store.ts';

const SCOPE = { tenant: 'finance', namespace: 'finance', agent: 'finance-agent' };
const NONE: Obligations = { calls: [], rate: [], spend: [] };

/** A store over the memory backend on a clock the test moves. */
function storeAt(iso: string): { store: CountingStore; backend: MemoryBackend; clock: { now: number; advance(ms: number): void }; metrics: ReturnType<typeof createSidecarMetrics> } {
  const clock = { now: Date.parse(iso), advance(ms: number): void { this.now += ms; } };
  const backend = new MemoryBackend({ now: () => clock.now });
  const metrics = createSidecarMetrics();
  let members = 0;
  const store = new CountingStore({ backend, metrics, log: pino({ level: 'silent' }), newMember: () => `call-${++members}` });
  return { store, backend, clock, metrics };
}

const decided = (decision: AuthorizationDecision['decision'], rule: string, extra: Partial<AuthorizationDecision> = {}): AuthorizationDecision => ({
  decision, enforced: true, policy: 'payments', rule, revision: 'r1', reasons: [], ...extra,
});
const allow = decided('allow', 'small-payments');

describe('the memory store: token buckets', () => {
  const rate: Obligations = { ...NONE, rate: [{ key: 'stripe-payments', rps: 3, burst: 3 }] };

  it('hands out burst tokens, then none, and refills at rps', async () => {
    const { store, clock } = storeAt('2026-11-23T14:00:00Z');
    const seen: number[] = [];
    for (let i = 0; i < 4; i++) {
      const r = await store.reserve(SCOPE, { tool: 'stripe-payments' }, rate, new Date(clock.now));
      seen.push(r.counters.rate['stripe-payments'] ?? Number.NaN);
      await r.settle(allow);
    }
    expect(seen).toEqual([3, 2, 1, 0]);
    clock.advance(300);
    expect((await store.reserve(SCOPE, { tool: 'stripe-payments' }, rate, new Date(clock.now))).counters.rate['stripe-payments']).toBeCloseTo(0.9, 9);
    clock.advance(34);
    expect((await store.reserve(SCOPE, { tool: 'stripe-payments' }, rate, new Date(clock.now))).counters.rate['stripe-payments']).toBeCloseTo(1.002, 9);
  });

  it('never refills past burst, however long the bucket was idle', async () => {
    const { store, clock } = storeAt('2026-11-23T14:00:00Z');
    const bursty: Obligations = { ...NONE, rate: [{ key: 'search', rps: 1, burst: 5 }] };
    for (let i = 0; i < 5; i++) await (await store.reserve(SCOPE, { tool: 'search' }, bursty, new Date(clock.now))).settle(allow);
    clock.advance(3_600_000);
    expect((await store.reserve(SCOPE, { tool: 'search' }, bursty, new Date(clock.now))).counters.rate.search).toBe(5);
  });

  it('gives the token back when the call is refused, and keeps it when a shadow policy lets it through', async () => {
    const { store, clock } = storeAt('2026-11-23T14:00:00Z');
    const one: Obligations = { ...NONE, rate: [{ key: 'stripe-payments', rps: 0.001, burst: 1 }] };
    await (await store.reserve(SCOPE, { tool: 'stripe-payments' }, one, new Date(clock.now))).settle(decided('deny', 'no-coerced-payments'));
    const again = await store.reserve(SCOPE, { tool: 'stripe-payments' }, one, new Date(clock.now));
    expect(again.counters.rate['stripe-payments']).toBe(1);
    await again.settle(decided('deny', 'no-coerced-payments', { enforced: false }));
    expect((await store.reserve(SCOPE, { tool: 'stripe-payments' }, one, new Date(clock.now))).counters.rate['stripe-payments']).toBe(0);
  });

  it('says when the next token comes for a call rateLimits refused, in whole seconds', async () => {
    const { store, clock, metrics } = storeAt('2026-11-23T14:00:00Z');
    const slow: Obligations = { ...NONE, rate: [{ key: 'stripe-payments', rps: 0.25, burst: 1 }] };
    await (await store.reserve(SCOPE, { tool: 'stripe-payments' }, slow, new Date(clock.now))).settle(allow);
    clock.advance(1000);
    const refused = await store.reserve(SCOPE, { tool: 'stripe-payments' }, slow, new Date(clock.now));
    expect(refused.counters.rate['stripe-payments']).toBeCloseTo(0.25, 9);
    expect(await refused.settle(decided('approval_needed', 'rateLimits[0]'))).toEqual({ retryAfterSeconds: 3 });
    expect((await metrics.limitRejections.get()).values).toEqual([{ labels: { limit: 'rate', tool: 'stripe-payments', rule: 'rateLimits[0]' }, value: 1 }]);
  });

  it('keeps separate buckets for limits of different rates on one counter and reports the emptier', async () => {
    const { store, clock } = storeAt('2026-11-23T14:00:00Z');
    const two: Obligations = { ...NONE, rate: [{ key: 'search', rps: 10, burst: 10 }, { key: 'search', rps: 1, burst: 2 }] };
    const seen: number[] = [];
    for (let i = 0; i < 3; i++) {
      const r = await store.reserve(SCOPE, { tool: 'search' }, two, new Date(clock.now));
      seen.push(r.counters.rate.search ?? Number.NaN);
      await r.settle(allow);
    }
    expect(seen).toEqual([2, 1, 0]);
  });
});

describe('the memory store: sliding windows', () => {
  const hourly: Obligations = { ...NONE, calls: [{ tool: 'export', window: '1h' }, { tool: 'export', window: '60m' }] };

  it('counts the calls of the last window before this one, under each name the rules use', async () => {
    const { store, clock } = storeAt('2026-11-23T14:00:00Z');
    const seen: unknown[] = [];
    for (let i = 0; i < 3; i++) {
      const r = await store.reserve(SCOPE, { tool: 'export' }, hourly, new Date(clock.now));
      seen.push(r.counters.calls.export);
      await r.settle(allow);
      clock.advance(20 * 60_000);
    }
    expect(seen).toEqual([{ '1h': 0, '60m': 0 }, { '1h': 1, '60m': 1 }, { '1h': 2, '60m': 2 }]);
    // Now 60 minutes after the first call: it has left the window.
    expect((await store.reserve(SCOPE, { tool: 'export' }, hourly, new Date(clock.now))).counters.calls.export).toEqual({ '1h': 2, '60m': 2 });
  });

  it('forgets a refused call, and says when a rule that failed only on callsOver holds again', async () => {
    const { store, clock, metrics } = storeAt('2026-11-23T14:00:00Z');
    const minute: Obligations = { ...NONE, calls: [{ tool: 'export', window: '1m' }] };
    for (let i = 0; i < 2; i++) {
      await (await store.reserve(SCOPE, { tool: 'export' }, minute, new Date(clock.now))).settle(allow);
      clock.advance(10_000);
    }
    const refused = await store.reserve(SCOPE, { tool: 'export' }, minute, new Date(clock.now));
    expect(refused.counters.calls.export).toEqual({ '1m': 2 });
    const denial = decided('deny', 'portcullis:default-deny', { policy: null, reasons: ['exports/few-exports: calls to the tool in the last 1m: 2 before this one, over max 2'] });
    // The first call, 20 s ago, leaves the window in 40 s.
    expect(await refused.settle(denial)).toEqual({ retryAfterSeconds: 40 });
    expect((await store.reserve(SCOPE, { tool: 'export' }, minute, new Date(clock.now))).counters.calls.export).toEqual({ '1m': 2 });
    expect((await metrics.limitRejections.get()).values[0]?.labels).toEqual({ limit: 'calls', tool: 'export', rule: 'portcullis:default-deny' });
  });

  it('gives no retry hint when the rule also failed on something waiting will not change', async () => {
    const { store, clock } = storeAt('2026-11-23T14:00:00Z');
    const minute: Obligations = { ...NONE, calls: [{ tool: 'export', window: '1m' }] };
    const r = await store.reserve(SCOPE, { tool: 'export' }, minute, new Date(clock.now));
    const denial = decided('deny', 'portcullis:default-deny', { reasons: ['exports/few-exports: calls to the tool in the last 1m: 0 before this one, over max 0; params.rows 20000 > max 10000'] });
    expect(await r.settle(denial)).toBeUndefined();
  });
});

describe('the memory store: daily budgets', () => {
  const budget = (dailyUSD: number, timeZone = 'UTC'): Obligations => ({ ...NONE, spend: [{ key: 'openai-api', dailyUSD, timeZone, param: 'estimated_cost_usd' }] });
  const costing = (cost: unknown): { tool: string; params: unknown } => ({ tool: 'openai-api', params: { estimated_cost_usd: cost } });

  it('adds the cost of each call that goes ahead, exactly, and stops at the budget', async () => {
    const { store, clock, metrics } = storeAt('2026-11-23T14:00:00Z');
    const seen: number[] = [];
    for (let i = 0; i < 3; i++) {
      const r = await store.reserve(SCOPE, costing(7.1), budget(20), new Date(clock.now));
      seen.push(r.counters.spentUSD['openai-api'] ?? Number.NaN);
      await r.settle(i < 2 ? allow : decided('deny', 'budgets[0]'));
    }
    expect(seen).toEqual([0, 7.1, 14.2]);
    const exact = await store.reserve(SCOPE, costing(5.8), budget(20), new Date(clock.now));
    await exact.settle(allow);
    expect((await store.reserve(SCOPE, costing(0), budget(20), new Date(clock.now))).counters.spentUSD['openai-api']).toBe(20);
    expect((await metrics.spendUSD.get()).values).toEqual([{ labels: { agent: 'finance-agent', tool: 'openai-api' }, value: 20 }]);
  });

  it('resets at local midnight in the budget zone, on a 23-hour DST day too, and says so', async () => {
    // 2026-03-08 is 23 hours long in New York; 2026-03-08T23:30-04:00 is 03:30Z on the 9th.
    const { store, clock } = storeAt('2026-03-09T03:30:00Z');
    await (await store.reserve(SCOPE, costing(15), budget(20, 'America/New_York'), new Date(clock.now))).settle(allow);
    const over = await store.reserve(SCOPE, costing(10), budget(20, 'America/New_York'), new Date(clock.now));
    expect(over.counters.spentUSD['openai-api']).toBe(15);
    expect(await over.settle(decided('deny', 'budgets[0]'))).toEqual({ retryAfterSeconds: 1800, resetsAt: '2026-03-09T00:00:00-04:00' });
    clock.advance(30 * 60_000);
    expect((await store.reserve(SCOPE, costing(10), budget(20, 'America/New_York'), new Date(clock.now))).counters.spentUSD['openai-api']).toBe(0);
  });

  it.each([
    ['a negative cost', -5],
    ['a cost given as a string', '5'],
    ['a missing cost', undefined],
    ['a cost that is not a number at all', { usd: 5 }],
  ])('reserves nothing for %s, which the policy counts as over budget, and gives no reset hint', async (_, cost) => {
    const { store, clock } = storeAt('2026-11-23T14:00:00Z');
    const r = await store.reserve(SCOPE, cost === undefined ? { tool: 'openai-api', params: {} } : costing(cost), budget(20), new Date(clock.now));
    expect(r.counters.spentUSD['openai-api']).toBe(0);
    expect(await r.settle(decided('deny', 'budgets[0]'))).toBeUndefined();
    expect((await store.reserve(SCOPE, costing(20), budget(20), new Date(clock.now))).counters.spentUSD['openai-api']).toBe(0);
  });

  it('gives back what a refused call reserved', async () => {
    const { store, clock } = storeAt('2026-11-23T14:00:00Z');
    await (await store.reserve(SCOPE, costing(12), budget(20), new Date(clock.now))).settle(decided('deny', 'no-gpt-at-night'));
    expect((await store.reserve(SCOPE, costing(12), budget(20), new Date(clock.now))).counters.spentUSD['openai-api']).toBe(0);
  });

  it('records a cost it could not reserve when the call goes ahead anyway (a budget that does not apply to this agent)', async () => {
    const { store, clock } = storeAt('2026-11-23T14:00:00Z');
    await (await store.reserve(SCOPE, costing(15), budget(20), new Date(clock.now))).settle(allow);
    await (await store.reserve(SCOPE, costing(15), budget(20), new Date(clock.now))).settle(allow);
    expect((await store.reserve(SCOPE, costing(0), budget(20), new Date(clock.now))).counters.spentUSD['openai-api']).toBe(30);
  });

  it('charges a fixed cost per call', async () => {
    const { store, clock } = storeAt('2026-11-23T14:00:00Z');
    const fixed: Obligations = { ...NONE, spend: [{ key: 'openai-api', dailyUSD: 1, timeZone: 'UTC', perCall: 0.4 }] };
    const seen: boolean[] = [];
    for (let i = 0; i < 3; i++) {
      const r = await store.reserve(SCOPE, { tool: 'openai-api' }, fixed, new Date(clock.now));
      seen.push((r.counters.spentUSD['openai-api'] ?? 0) + 0.4 <= 1);
      await r.settle(seen[i] === true ? allow : decided('deny', 'budgets[0]'));
    }
    expect(seen).toEqual([true, true, false]);
  });
});

describe('the memory store: scope and upkeep', () => {
  const rate: Obligations = { ...NONE, rate: [{ key: 'search', rps: 1, burst: 1 }] };

  it('keeps the counters of each agent apart', async () => {
    const { store, clock } = storeAt('2026-11-23T14:00:00Z');
    await (await store.reserve(SCOPE, { tool: 'search' }, rate, new Date(clock.now))).settle(allow);
    expect((await store.reserve({ ...SCOPE, agent: 'other-agent' }, { tool: 'search' }, rate, new Date(clock.now))).counters.rate.search).toBe(1);
    expect((await store.reserve({ ...SCOPE, tenant: 'other' }, { tool: 'search' }, rate, new Date(clock.now))).counters.rate.search).toBe(1);
  });

  it('drops buckets that refilled, windows that emptied and days that ended', async () => {
    const { store, backend, clock } = storeAt('2026-11-23T14:00:00Z');
    const all: Obligations = { calls: [{ tool: 'search', window: '1m' }], rate: rate.rate, spend: [{ key: 'search', dailyUSD: 1, timeZone: 'UTC', perCall: 0.1 }] };
    await (await store.reserve(SCOPE, { tool: 'search' }, all, new Date(clock.now))).settle(allow);
    expect(backend.size).toBe(3);
    clock.advance(86_400_000);
    await (await store.reserve(SCOPE, { tool: 'other' }, NONE, new Date(clock.now))).settle(allow);
    expect(backend.size).toBe(0);
  });
});

describe('the counting store: an unavailable backend', () => {
  it('rejects the reservation, says so once in the log and the metrics, and recovers', async () => {
    const lines: string[] = [];
    const log = pino({ level: 'info' }, { write: (line: string) => { lines.push(line); } });
    const memory = new MemoryBackend();
    let down = true;
    const flaky: CounterBackend = {
      kind: 'redis',
      reserve: (plan, member) => (down ? Promise.reject(new Error('Connection is closed.')) : memory.reserve(plan, member)),
      settle: (plan, reserved, member, adjustment) => memory.settle(plan, reserved, member, adjustment),
      ready: () => memory.ready(),
      close: () => memory.close(),
    };
    const metrics = createSidecarMetrics();
    const store = new CountingStore({ backend: flaky, metrics, log });
    const rate: Obligations = { ...NONE, rate: [{ key: 'search', rps: 1, burst: 1 }] };
    await expect(store.reserve(SCOPE, { tool: 'search' }, rate, new Date())).rejects.toThrow('Connection is closed.');
    await expect(store.reserve(SCOPE, { tool: 'search' }, rate, new Date())).rejects.toThrow('Connection is closed.');
    expect((await metrics.counterStoreUp.get()).values).toEqual([{ labels: { store: 'redis' }, value: 0 }]);
    expect((await metrics.counterStoreErrors.get()).values).toEqual([{ labels: { store: 'redis', operation: 'reserve' }, value: 2 }]);
    expect(lines.filter((l) => l.includes('counter store unavailable'))).toHaveLength(1);
    down = false;
    expect((await store.reserve(SCOPE, { tool: 'search' }, rate, new Date())).counters.rate.search).toBe(1);
    expect((await metrics.counterStoreUp.get()).values).toEqual([{ labels: { store: 'redis' }, value: 1 }]);
    expect(lines.filter((l) => l.includes('counter store available again'))).toHaveLength(1);
  });

  it('never rejects a settlement: a refund lost while the store is down stays reserved', async () => {
    const metrics = createSidecarMetrics();
    const memory = new MemoryBackend();
    const store = new CountingStore({
      backend: { kind: 'redis', reserve: (p, m) => memory.reserve(p, m), settle: () => Promise.reject(new Error('Command timed out')), ready: () => memory.ready(), close: () => memory.close() },
      metrics,
      log: pino({ level: 'silent' }),
    });
    const r = await store.reserve(SCOPE, { tool: 'search' }, { ...NONE, rate: [{ key: 'search', rps: 1, burst: 1 }] }, new Date());
    await expect(r.settle(decided('deny', 'rateLimits[0]'))).resolves.toBeUndefined();
    expect((await metrics.counterStoreErrors.get()).values).toEqual([{ labels: { store: 'redis', operation: 'settle' }, value: 1 }]);
  });
});
