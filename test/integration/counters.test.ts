// Rate limits and budgets that hold across replicas: two deciders share one
// real redis-server — first two Authorizers in this process, each with its own
// Redis connection, then two spawned `portcullis sidecar` processes loading
// the operator's bundle — and concurrent calls never get more than the limits
// allow. Redis killed: stateful calls are denied, stateless ones allowed; back:
// the limits work again.
import { join } from 'node:path';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { stringify } from 'yaml';
import { compileTenant, PolicyEvaluator } from '../../src/compiler/index.ts';
import { agent, tenantOf, toolPolicy, withRoles } from '../../src/compiler/test-support.ts';
import type { Operator } from '../../src/operator/operator.ts';
import { Authorizer } from '../../src/sidecar/authorizer.ts';
import type { CountingStore } from '../../src/sidecar/counters/index.ts';
import { createCounterStore } from '../../src/sidecar/counters/index.ts';
import type { SidecarMetrics } from '../../src/sidecar/metrics.ts';
import { createSidecarMetrics } from '../../src/sidecar/metrics.ts';
import type { TrackedProcess } from '../harness/cluster.ts';
import { eventually, spawnTracked } from '../harness/cluster.ts';
import { ensureNamespace, freePort, kubectl, REPO_ROOT } from '../harness/control-plane.ts';
import { agentKubeconfigFile, startScopedOperator } from '../harness/local-parts.ts';
import type { RedisServer } from '../harness/redis.ts';
import { startRedis } from '../harness/redis.ts';

const plane = inject('controlPlane');
const OPERATOR_NS = 'counters-system';
const NS = 'counters-finance';
const AGENT = 'finance-agent';

/** DESIGN.md's payments limits, a budgeted LLM tool, and a tool with no stateful condition. */
const POLICY = toolPolicy(NS, 'payments', [
  { name: 'small-payments', tool: 'stripe-payments', actions: ['create_payment'], decision: 'allow', when: [{ param: 'amount', max: 5000 }] },
  { name: 'llm', tool: 'openai-api', decision: 'allow' },
  { name: 'crm-lookups', tool: 'crm', decision: 'allow' },
  { name: 'few-exports', tool: 'export_customer_data', decision: 'allow', when: [{ callsOver: { window: '1m', max: 2 } }] },
], (p) => {
  p.spec.subjects = { agents: [AGENT], roles: ['payments'] };
  p.spec.mode = 'enforce';
  p.spec.rateLimits = [{ tool: 'stripe-payments', rps: 3, burst: 3, onExceed: 'approval_needed' }];
  p.spec.budgets = [{ tool: 'openai-api', dailyUSD: 20, costParam: 'estimated_cost_usd', onExceed: 'deny' }];
});
const IDENTITY = agent(NS, AGENT, withRoles('payments'));

const payment = { tool: 'stripe-payments', action: 'create_payment', params: { amount: 100 } };
const llm = (cost: number): Record<string, unknown> => ({ tool: 'openai-api', params: { estimated_cost_usd: cost } });
const lookup = { tool: 'crm', params: { id: 7 } };

interface Answer { decision: string; rule: string; reasons: string[]; retryAfterSeconds?: number; resetsAt?: string }
type Decide = (call: Record<string, unknown>) => Promise<Answer>;

let redis: RedisServer;

beforeAll(async () => {
  redis = await startRedis(plane);
});

afterAll(async () => {
  await redis.stop();
});

/**
 * Sends waves of concurrent calls, `perWave` to each decider, for about
 * `seconds`; returns the answers and the time from the first send to the last
 * answer, which bounds the time the reservations were made in.
 */
async function load(deciders: Decide[], call: Record<string, unknown>, perWave: number, seconds: number): Promise<{ answers: Answer[]; elapsedSeconds: number }> {
  const answers: Answer[] = [];
  const started = performance.now();
  do {
    const wave = deciders.flatMap((decide) => Array.from({ length: perWave }, () => decide(call)));
    answers.push(...(await Promise.all(wave)));
  } while (performance.now() - started < seconds * 1000);
  return { answers, elapsedSeconds: (performance.now() - started) / 1000 };
}

/** What every pair of deciders must show: shared limits hold, and Redis going away fails closed for stateful calls only. */
function sharedLimitTests(deciders: () => [Decide, Decide], afterOutage: () => Promise<void> = () => Promise.resolve()): void {
  it('holds 3 rps (burst 3) across both under concurrent load: allowed calls never exceed 3 + 3 per elapsed second', async () => {
    const [a, b] = deciders();
    const { answers, elapsedSeconds } = await load([a, b], payment, 10, 2);
    const allowed = answers.filter((x) => x.decision === 'allow').length;
    console.info(`counters: ${String(answers.length)} concurrent payments over ${elapsedSeconds.toFixed(2)} s through two deciders: ${String(allowed)} allowed (bound ${String(3 + Math.floor(3 * elapsedSeconds))})`);
    expect(allowed).toBeGreaterThanOrEqual(3);
    expect(allowed).toBeLessThanOrEqual(3 + Math.floor(3 * elapsedSeconds));
    const refused = answers.filter((x) => x.decision !== 'allow');
    expect(refused.length).toBeGreaterThan(0);
    expect(new Set(refused.map((x) => `${x.decision} ${x.rule} ${String(x.retryAfterSeconds)}`))).toEqual(new Set(['approval_needed rateLimits[0] 1']));
  });

  it('never spends past $20 a day under concurrency: exactly 28 calls of $0.70 go through, then $0.40 fits and $0.01 does not', async () => {
    const [a, b] = deciders();
    const answers = await Promise.all(Array.from({ length: 60 }, (_, i) => (i % 2 === 0 ? a : b)(llm(0.7))));
    expect(answers.filter((x) => x.decision === 'allow')).toHaveLength(28);
    const refused = answers.filter((x) => x.decision !== 'allow');
    expect(refused).toHaveLength(32);
    for (const x of refused) expect(x).toMatchObject({ decision: 'deny', rule: 'budgets[0]' });
    expect(refused[0]?.resetsAt).toMatch(/^\d{4}-\d{2}-\d{2}T00:00:00Z$/);
    expect((await b(llm(0.4))).decision).toBe('allow');
    expect(await a(llm(0.01))).toMatchObject({ decision: 'deny', rule: 'budgets[0]', reasons: ['daily budget $20 on openai-api exceeded: spent 20 + cost 0.01'] });
  });

  it('denies stateful calls and allows stateless ones while Redis is down, and limits again once it is back', async () => {
    const [a, b] = deciders();
    await redis.kill();
    try {
      for (const decide of [a, b]) {
        expect(await decide(payment)).toMatchObject({ decision: 'deny', rule: 'portcullis:state-unavailable' });
        expect(await decide(llm(0.1))).toMatchObject({ decision: 'deny', rule: 'portcullis:state-unavailable' });
        expect(await decide(lookup)).toMatchObject({ decision: 'allow', rule: 'crm-lookups' });
      }
      await afterOutage();
    } finally {
      await redis.start();
    }
    for (const decide of [a, b]) {
      await eventually('a payment to be decided by the limits again', async () => ((await decide(payment)).rule === 'portcullis:state-unavailable' ? undefined : true), 20_000, 100);
    }
    // Redis came back empty: the day's spend starts again, and the budget holds again.
    expect((await a(llm(19.5))).decision).toBe('allow');
    expect(await b(llm(1))).toMatchObject({ decision: 'deny', rule: 'budgets[0]' });
  });
}

describe('two Authorizers in one process, each with its own Redis connection', () => {
  const stores: CountingStore[] = [];
  const metrics: SidecarMetrics[] = [];
  let pair: [Decide, Decide];

  beforeAll(async () => {
    const evaluator = await PolicyEvaluator.load(await compileTenant(tenantOf([IDENTITY, POLICY], NS), plane.tools.opa));
    const replica = (): Decide => {
      const m = createSidecarMetrics();
      const counters = createCounterStore({ kind: 'redis', url: redis.url }, { metrics: m, log: pino({ level: 'silent' }) });
      stores.push(counters);
      metrics.push(m);
      const authorizer = new Authorizer({ identity: { namespace: NS, agent: AGENT }, tenant: NS, policy: () => evaluator, metrics: m, counters });
      return (call) => authorizer.authorize(call, { transport: 'http' });
    };
    pair = [replica(), replica()];
    await Promise.all(stores.map((s) => s.ready()));
  });

  afterAll(async () => {
    await Promise.all(stores.map((s) => s.close()));
  });

  sharedLimitTests(() => pair, async () => {
    for (const m of metrics) {
      expect((await m.counterStoreUp.get()).values).toEqual([{ labels: { store: 'redis' }, value: 0 }]);
      expect((await m.counterStoreErrors.get()).values.find((v) => v.labels.operation === 'reserve')?.value).toBeGreaterThan(0);
    }
  });

  it('counts calls in a sliding window across both (callsOver max 2 in 1m), forgets refused ones, and says when to retry', async () => {
    const [a, b] = pair;
    const exportCall = { tool: 'export_customer_data', params: {} };
    expect((await a(exportCall)).decision).toBe('allow');
    expect((await b(exportCall)).decision).toBe('allow');
    for (const decide of [a, b, a]) {
      const refused = await decide(exportCall);
      expect(refused).toMatchObject({ decision: 'deny', rule: 'portcullis:default-deny' });
      expect(refused.reasons).toEqual(['payments/few-exports: calls to the tool in the last 1m: 2 before this one, over max 2']);
      expect(refused.retryAfterSeconds).toBeGreaterThanOrEqual(55);
      expect(refused.retryAfterSeconds).toBeLessThanOrEqual(60);
    }
  });

  it('counts spend by agent and tool and limiter rejections in the metrics', async () => {
    const spent = await Promise.all(metrics.map(async (m) => (await m.spendUSD.get()).values.find((v) => v.labels.tool === 'openai-api')?.value ?? 0));
    // 28 × $0.70 + $0.40 before the outage, $19.50 after it.
    expect(spent.reduce((x, y) => x + y, 0)).toBeCloseTo(39.5, 6);
    const rejections = await Promise.all(metrics.map(async (m) => (await m.limitRejections.get()).values));
    expect(rejections.flat().map((v) => v.labels.limit)).toEqual(expect.arrayContaining(['rate', 'budget', 'calls']));
  });
});

describe('two portcullis sidecar processes sharing one Redis', () => {
  let operator: Operator;
  const sidecars: { process: TrackedProcess; base: string }[] = [];

  const decideAt = (base: string): Decide => async (call) => {
    const response = await fetch(`${base}/v1/authorize`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(call) });
    return (await response.json()) as Answer;
  };

  beforeAll(async () => {
    // Redis starts empty for these sidecars: the in-process replicas' counters are gone.
    await redis.kill();
    await redis.start();
    operator = await startScopedOperator(plane, 'counters', OPERATOR_NS);
    await ensureNamespace(plane, NS);
    await kubectl(plane, ['apply', '--validate=strict', '-f', '-'], { input: [IDENTITY, POLICY].map((d) => stringify(d)).join('---\n') });
    const kubeconfig = await agentKubeconfigFile(plane, NS, AGENT);
    for (let i = 0; i < 2; i++) {
      const [httpPort, grpcPort] = [await freePort(), await freePort()];
      const process = await spawnTracked(plane, globalThis.process.execPath, [
        join(REPO_ROOT, 'bin', 'portcullis.js'), 'sidecar', '--kubeconfig', kubeconfig, '--agent', AGENT, '--namespace', NS, '--trust-namespace', OPERATOR_NS,
        '--http-address', `127.0.0.1:${String(httpPort)}`, '--grpc-address', `127.0.0.1:${String(grpcPort)}`, '--counters', 'redis', '--redis-url', redis.url,
      ]);
      sidecars.push({ process, base: `http://127.0.0.1:${String(httpPort)}` });
    }
    for (const { base, process } of sidecars) {
      await eventually(`sidecar ${base} to load the bundle`, async () => ((await fetch(`${base}/readyz`).catch(() => undefined))?.status === 200 ? true : undefined), 60_000)
        .catch((error: unknown) => { throw new Error(`${String(error)}\nsidecar output:\n${process.output()}`); });
    }
  });

  afterAll(async () => {
    await Promise.all(sidecars.map(({ process }) => process.kill('SIGTERM')));
    await operator.stop();
  });

  sharedLimitTests(() => [decideAt(sidecars[0]?.base ?? ''), decideAt(sidecars[1]?.base ?? '')], async () => {
    for (const { base } of sidecars) {
      const metrics = await (await fetch(`${base}/metrics`)).text();
      expect(metrics).toContain('portcullis_counter_store_up{store="redis"} 0');
    }
  });
});
