// npm run bench -- state
//
// What the sidecar's counters add to a decision: Authorizer.authorize, in
// process, for a call under a rate limit (allowed: one reservation) and one the
// limit refuses (a reservation and its give-back), with the counters in memory
// and in a real redis-server on loopback, next to a call with no stateful
// condition measured in the same run (the floor: no store is touched), and a
// bare Redis PING round trip (the floor of any Redis-backed decision).
// Latencies are per call, one call at a time, after a warm-up.
// Then what ext_proc adds before the request goes upstream, for a 4 KiB JSON
// body sanitized (rewritten) and allowed (passed), next to ext_authz's Check on
// the same server (parts/ext-proc.ts; `npm run bench -- ext-proc` has the
// answer-side figures too).

import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { Redis } from 'ioredis';
import { join } from 'node:path';
import { pino } from 'pino';
import { compileTenant, PolicyEvaluator } from '../src/compiler/index.ts';
import { agent, tenantOf, toolPolicy, withRoles } from '../src/compiler/test-support.ts';
import { Authorizer } from '../src/sidecar/authorizer.ts';
import type { CounterStoreConfig } from '../src/sidecar/counters/index.ts';
import { createCounterStore } from '../src/sidecar/counters/index.ts';
import { createSidecarMetrics } from '../src/sidecar/metrics.ts';
import { startRedis } from '../test/harness/redis.ts';
import type { Figure } from './lib.ts';
import { extProcFigures } from './parts/ext-proc.ts';
import { figure, percentile, report } from './lib.ts';

const WARMUP = 2000;
const CALLS = 5000;
const NS = 'bench-state';
const AGENT = 'bench-agent';

const LIMITED = { tool: 'stripe-payments', action: 'create_payment', params: { amount: 100 } };
const REFUSED = { tool: 'openai-api', params: { estimated_cost_usd: 5 } };
const UNLIMITED = { tool: 'crm', params: { id: 7 } };

async function loadPolicy(): Promise<PolicyEvaluator> {
  const policy = toolPolicy(NS, 'payments', [
    { name: 'small-payments', tool: 'stripe-payments', actions: ['create_payment'], decision: 'allow', when: [{ param: 'amount', max: 5000 }] },
    { name: 'llm', tool: 'openai-api', decision: 'allow' },
    { name: 'crm-lookups', tool: 'crm', decision: 'allow' },
  ], (p) => {
    p.spec.subjects = { agents: [AGENT] };
    // Every payment fits the bucket: the figure is the cost of counting, not of refusing.
    p.spec.rateLimits = [{ tool: 'stripe-payments', rps: 100_000, burst: 100_000 }];
    // Every LLM call is over this budget: reserved, refused, given back.
    p.spec.budgets = [{ tool: 'openai-api', dailyUSD: 1, costParam: 'estimated_cost_usd' }];
  });
  return PolicyEvaluator.load(await compileTenant(tenantOf([agent(NS, AGENT, withRoles('bench')), policy], NS)));
}

/** Milliseconds per call of `calls` sequential decisions of `call`, after a warm-up. */
async function latencies(authorizer: Authorizer, call: Record<string, unknown>, expected: string): Promise<number[]> {
  for (let i = 0; i < WARMUP; i++) await authorizer.authorize(call, { transport: 'http' });
  const samples: number[] = [];
  for (let i = 0; i < CALLS; i++) {
    const started = performance.now();
    const answer = await authorizer.authorize(call, { transport: 'http' });
    samples.push(performance.now() - started);
    if (answer.decision !== expected) throw new Error(`expected ${expected} for ${JSON.stringify(call)}, got ${JSON.stringify(answer)}`);
  }
  return samples.sort((a, b) => a - b);
}

/** p50 and p99 of sorted millisecond samples as µs figures, each next to the floor's same percentile. */
export function latencyFigures(what: string, sortedMs: readonly number[], floor?: { name: string; sortedMs: readonly number[] }): Figure[] {
  return [50, 99].map((p) => {
    const peer = floor === undefined ? undefined : { name: floor.name, value: percentile(floor.sortedMs, p) * 1000 };
    return figure(`${what}, p${String(p)}`, percentile(sortedMs, p) * 1000, 'µs', undefined, peer);
  });
}

/** Decision latency with the counters in each store, next to the unlimited call of the same store. */
export async function stateFigures(stores: { name: string; config: CounterStoreConfig }[]): Promise<Figure[]> {
  const evaluator = await loadPolicy();
  const figures: Figure[] = [];
  for (const { name, config } of stores) {
    const metrics = createSidecarMetrics();
    const counters = createCounterStore(config, { metrics, log: pino({ level: 'error' }) });
    await counters.ready();
    try {
      const authorizer = new Authorizer({ identity: { namespace: NS, agent: AGENT }, tenant: NS, policy: () => evaluator, metrics, counters });
      const floor = { name: 'unlimited call, same run', sortedMs: await latencies(authorizer, UNLIMITED, 'allow') };
      figures.push(
        ...latencyFigures(`unlimited call (${name} store configured)`, floor.sortedMs),
        ...latencyFigures(`rate-limited call, allowed, ${name} store`, await latencies(authorizer, LIMITED, 'allow'), floor),
        ...latencyFigures(`budgeted call, refused and given back, ${name} store`, await latencies(authorizer, REFUSED, 'deny'), floor),
      );
    } finally {
      await counters.close();
    }
  }
  return figures;
}

/** A bare PING round trip through ioredis: what any shared store costs at least. */
async function pingFigures(url: string): Promise<Figure[]> {
  const client = new Redis(url);
  try {
    for (let i = 0; i < WARMUP; i++) await client.ping();
    const samples: number[] = [];
    for (let i = 0; i < CALLS; i++) {
      const started = performance.now();
      await client.ping();
      samples.push(performance.now() - started);
    }
    return latencyFigures('Redis PING round trip (ioredis, loopback)', samples.sort((a, b) => a - b));
  } finally {
    client.disconnect();
  }
}

const runDir = await mkdtemp(join(tmpdir(), 'portcullis-bench-state-'));
await writeFile(join(runDir, 'pids'), '');
const redis = await startRedis({ runDir });
try {
  const figures = await stateFigures([
    { name: 'memory', config: { kind: 'memory' } },
    { name: 'redis', config: { kind: 'redis', url: redis.url } },
  ]);
  // What ext_proc adds to a call whose 4 KiB JSON body is sanitized or passed (the request side).
  const extProc = (await extProcFigures()).filter((f) => f.metric.startsWith('ext_proc request'));
  await report('state', [...figures, ...(await pingFigures(redis.url)), ...extProc]);
} finally {
  await redis.stop();
  await rm(runDir, { recursive: true, force: true });
}
