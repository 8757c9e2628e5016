import { describe, expect, it } from 'vitest';
import type { AuthorizationDecision } from '../compiler/index.ts';
import { InputError } from '../compiler/index.ts';
import { Authorizer, callOf, MAX_TOOL_LABELS, OTHER_TOOLS, SIDECAR_RULES } from './authorizer.ts';
import type { LoadedPolicy } from './bundle-verdict.ts';
import { createSidecarMetrics } from './metrics.ts';

const IDENTITY = { namespace: 'finance', agent: 'finance-agent' };

/** A policy that records the calls it was asked and answers with `answer`. */
function recordingPolicy(answer: (call: unknown) => AuthorizationDecision): LoadedPolicy & { calls: unknown[] } {
  const calls: unknown[] = [];
  return { revision: '7-aaaaaaaaaaaaaaaa', tenant: 'finance', calls, authorize: (call) => (calls.push(call), answer(call)), obligations: () => ({ calls: [], rate: [], spend: [] }), standing: () => undefined };
}

const allow: AuthorizationDecision = { decision: 'allow', enforced: true, policy: 'payments', rule: 'small-payments', revision: '7-aaaaaaaaaaaaaaaa', reasons: [] };

function authorizerWith(policy: LoadedPolicy | undefined): { authorizer: Authorizer; metrics: ReturnType<typeof createSidecarMetrics> } {
  const metrics = createSidecarMetrics();
  let ids = 0;
  return { authorizer: new Authorizer({ identity: IDENTITY, tenant: 'finance', policy: () => policy, metrics, newId: () => `id-${++ids}` }), metrics };
}

describe('callOf', () => {
  it('replaces the agent and namespace with the sidecar identity and drops what the caller may not assert', () => {
    const call = callOf(
      { namespace: 'other', agent: 'root-agent', tool: 't', action: 'a', params: { x: 1 }, user: { id: 'mallory' }, delegation: [], time: '2020-01-01T00:00:00Z', counters: { rate: { t: 99 } } },
      IDENTITY,
    );
    expect(call).toEqual({ tool: 't', action: 'a', params: { x: 1 }, namespace: 'finance', agent: 'finance-agent' });
  });
});

describe('Authorizer', () => {
  it('denies every call with portcullis:no-bundle and is not ready until a policy is loaded', async () => {
    const { authorizer } = authorizerWith(undefined);
    expect(authorizer.ready).toBe(false);
    expect(await authorizer.authorize({ tool: 'stripe-payments' }, { transport: 'http' })).toMatchObject({ decision: 'deny', enforced: true, rule: SIDECAR_RULES.noBundle, decisionId: 'id-1' });
  });

  it("answers with the policy's decision, under the sidecar's identity, with a fresh id each time", async () => {
    const policy = recordingPolicy(() => allow);
    const { authorizer } = authorizerWith(policy);
    expect(authorizer.ready).toBe(true);
    expect(await authorizer.authorize({ tool: 'stripe-payments', agent: 'root-agent' }, { transport: 'http' })).toEqual({ ...allow, decisionId: 'id-1' });
    expect((await authorizer.authorize({ tool: 'stripe-payments' }, { transport: 'grpc' })).decisionId).toBe('id-2');
    expect(policy.calls[0]).toEqual({ tool: 'stripe-payments', namespace: 'finance', agent: 'finance-agent' });
  });

  it('lets an InputError through for the transport to answer 400, and counts nothing', async () => {
    const { authorizer, metrics } = authorizerWith(recordingPolicy(() => { throw new InputError('tool', 'must be a string'); }));
    await expect(authorizer.authorize({ tool: 1 }, { transport: 'http' })).rejects.toThrow(InputError);
    expect((await metrics.decisions.get()).values).toEqual([]);
  });

  it('denies with portcullis:evaluation-error when the policy throws anything else', async () => {
    const { authorizer } = authorizerWith(recordingPolicy(() => { throw new Error('wasm trap'); }));
    expect(await authorizer.authorize({ tool: 't' }, { transport: 'http' })).toMatchObject({ decision: 'deny', rule: SIDECAR_RULES.evaluationError, reasons: ['evaluation failed: wasm trap'] });
  });

  it('counts each decision by decision, enforced, policy, rule and tool, and times it', async () => {
    const { authorizer, metrics } = authorizerWith(recordingPolicy(() => allow));
    await authorizer.authorize({ tool: 'stripe-payments' }, { transport: 'http' });
    await authorizer.authorize({ tool: 'stripe-payments' }, { transport: 'grpc' });
    const counted = (await metrics.decisions.get()).values;
    expect(counted).toEqual([{ labels: { decision: 'allow', enforced: 'true', policy: 'payments', rule: 'small-payments', tool: 'stripe-payments' }, value: 2 }]);
    const timed = (await metrics.decisionDuration.get()).values.filter((v) => v.metricName === 'portcullis_decision_duration_seconds_count');
    expect(timed.map((v) => [v.labels.transport, v.value])).toEqual([['http', 1], ['grpc', 1]]);
  });

  it('caps the distinct tool labels, counting tools past the cap as (other)', async () => {
    const { authorizer, metrics } = authorizerWith(recordingPolicy(() => allow));
    for (let i = 0; i < MAX_TOOL_LABELS + 5; i++) await authorizer.authorize({ tool: `tool-${String(i)}` }, { transport: 'http' });
    await authorizer.authorize({ tool: 'tool-0' }, { transport: 'http' });
    const counted = (await metrics.decisions.get()).values;
    expect(counted).toHaveLength(MAX_TOOL_LABELS + 1);
    expect(counted.find((v) => v.labels.tool === OTHER_TOOLS)?.value).toBe(5);
    expect(counted.find((v) => v.labels.tool === 'tool-0')?.value).toBe(2);
  });
});
