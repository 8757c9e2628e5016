// The compiled policy (the real opa) and the memory counters, through the
// sidecar's Authorizer on a clock the test moves: the limits of DESIGN.md's
// payments policy decide the calls their counters say are over.
import { pino } from 'pino';
import { beforeAll, describe, expect, it } from 'vitest';
import type { PolicyEvaluator } from '../../compiler/evaluate.ts';
import { agent, compiledEvaluator, toolPolicy, withRoles } from '../../compiler/test-support.ts';
import { Authorizer } from '../authorizer.ts';
import { createSidecarMetrics } from '../metrics.ts';
import { MemoryBackend } from './memory.ts';
import { CountingStore } from './store.ts';

const NS = 'finance';
let evaluator: PolicyEvaluator;

beforeAll(async () => {
  const payments = toolPolicy(NS, 'payments', [
    { name: 'small-payments', tool: 'stripe-payments', actions: ['create_payment'], decision: 'allow', when: [{ param: 'amount', max: 5000 }] },
    { name: 'llm', tool: 'openai-api', decision: 'allow' },
    { name: 'few-exports', tool: 'export_customer_data', decision: 'allow', when: [{ callsOver: { window: '1m', max: 2 } }] },
  ], (p) => {
    p.spec.subjects = { agents: ['finance-agent'], roles: ['payments'] };
    // DESIGN.md's limits, as written there.
    p.spec.rateLimits = [{ tool: 'stripe-payments', rps: 3, burst: 3, onExceed: 'approval_needed' }];
    p.spec.budgets = [{ tool: 'openai-api', dailyUSD: 20, costParam: 'estimated_cost_usd', onExceed: 'deny' }];
  });
  ({ evaluator } = await compiledEvaluator([agent(NS, 'finance-agent', withRoles('payments')), payments], NS));
});

function sidecarAt(iso: string): { authorizer: Authorizer; advance: (ms: number) => void } {
  let now = Date.parse(iso);
  const clock = (): Date => new Date(now);
  const metrics = createSidecarMetrics();
  const counters = new CountingStore({ backend: new MemoryBackend({ now: () => now }), metrics, log: pino({ level: 'silent' }) });
  const authorizer = new Authorizer({ identity: { namespace: NS, agent: 'finance-agent' }, tenant: NS, policy: () => evaluator, metrics, counters, now: clock });
  return { authorizer, advance: (ms) => { now += ms; } };
}

const payment = { tool: 'stripe-payments', action: 'create_payment', params: { amount: 100 } };

describe('the compiled policy with the memory counters', () => {
  it('asks for approval for the 4th payment in a second (rateLimits[0], rps 3, burst 3), with a retry hint', async () => {
    const { authorizer } = sidecarAt('2026-11-23T14:00:00Z');
    const answers = [];
    for (let i = 0; i < 4; i++) answers.push(await authorizer.authorize(payment, { transport: 'http' }));
    expect(answers.map((a) => [a.decision, a.rule])).toEqual([
      ['allow', 'small-payments'], ['allow', 'small-payments'], ['allow', 'small-payments'], ['approval_needed', 'rateLimits[0]'],
    ]);
    expect(answers[3]).toMatchObject({ retryAfterSeconds: 1, reasons: ['rate limit 3/s (burst 3) on stripe-payments exceeded: 0 tokens left'] });
    expect(answers[2]?.retryAfterSeconds).toBeUndefined();
  });

  it('allows the next payment once a token has come back, and never counts the refused one', async () => {
    const { authorizer, advance } = sidecarAt('2026-11-23T14:00:00Z');
    for (let i = 0; i < 4; i++) await authorizer.authorize(payment, { transport: 'http' });
    advance(334);
    expect((await authorizer.authorize(payment, { transport: 'http' })).decision).toBe('allow');
    expect((await authorizer.authorize(payment, { transport: 'http' })).decision).toBe('approval_needed');
  });

  it('gives a token back when a rule refuses the call: a denied payment does not use the rate', async () => {
    const { authorizer } = sidecarAt('2026-11-23T14:00:00Z');
    const tooLarge = { ...payment, params: { amount: 900_000 } };
    for (let i = 0; i < 5; i++) expect((await authorizer.authorize(tooLarge, { transport: 'http' })).rule).toBe('portcullis:default-deny');
    for (let i = 0; i < 3; i++) expect((await authorizer.authorize(payment, { transport: 'http' })).decision).toBe('allow');
  });

  it('denies the call that would take the day past $20 (budgets[0]) and says when the budget resets', async () => {
    const { authorizer, advance } = sidecarAt('2026-11-23T14:00:00Z');
    const llm = (cost: unknown): Record<string, unknown> => ({ tool: 'openai-api', params: { estimated_cost_usd: cost } });
    expect((await authorizer.authorize(llm(12.5), { transport: 'http' })).decision).toBe('allow');
    expect((await authorizer.authorize(llm(7.5), { transport: 'http' })).decision).toBe('allow');
    const over = await authorizer.authorize(llm(0.01), { transport: 'http' });
    expect(over).toMatchObject({ decision: 'deny', rule: 'budgets[0]', resetsAt: '2026-11-24T00:00:00Z', retryAfterSeconds: 36_000 });
    const invalid = await authorizer.authorize(llm(-1), { transport: 'http' });
    expect(invalid).toMatchObject({ decision: 'deny', rule: 'budgets[0]' });
    expect(invalid.resetsAt).toBeUndefined();
    advance(10 * 3_600_000);
    expect((await authorizer.authorize(llm(19), { transport: 'http' })).decision).toBe('allow');
  });

  it('denies the 3rd export in a minute (callsOver max 2) and says when the oldest call leaves the window', async () => {
    const { authorizer, advance } = sidecarAt('2026-11-23T14:00:00Z');
    const exportCall = { tool: 'export_customer_data', params: {} };
    expect((await authorizer.authorize(exportCall, { transport: 'http' })).decision).toBe('allow');
    advance(15_000);
    expect((await authorizer.authorize(exportCall, { transport: 'http' })).decision).toBe('allow');
    const third = await authorizer.authorize(exportCall, { transport: 'http' });
    expect(third).toMatchObject({ decision: 'deny', rule: 'portcullis:default-deny', retryAfterSeconds: 45 });
    advance(45_000);
    expect((await authorizer.authorize(exportCall, { transport: 'http' })).decision).toBe('allow');
  });
});
