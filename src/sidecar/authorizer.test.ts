import { describe, expect, it } from 'vitest';
import type { AgentStanding, AuthorizationDecision, ToolData } from '../compiler/index.ts';
import { InputError } from '../compiler/index.ts';
import type { CounterStore, DecisionRecord, Reservation } from './authorizer.ts';
import { Authorizer, callOf, declaredAction, MAX_TOOL_LABELS, OTHER_TOOLS, SIDECAR_RULES } from './authorizer.ts';
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

describe('fail modes', () => {
  const readTool: ToolData = {
    name: 'files',
    http: {
      host: 'files.svc',
      actions: [
        { name: 'read', method: 'GET', path: '/files/*', readOnly: true, failOpen: ['counters_unavailable', 'evaluation_error'] },
        { name: 'list', method: 'GET', path: '/files', readOnly: true, failOpen: ['counters_unavailable'] },
        { name: 'stat', method: 'HEAD', path: '/files/*', readOnly: true },
        { name: 'delete', method: 'DELETE', path: '/files/*' },
      ],
    },
  };
  const mcpTool: ToolData = { name: 'ehr', mcp: { host: 'ehr.svc', path: '/mcp', actions: [{ name: 'search', readOnly: true, failOpen: ['counters_unavailable'] }] } };

  interface Setup {
    evaluation?: 'fails' | 'answers-evaluation-error';
    counters?: 'down' | 'up';
    standing?: AgentStanding | undefined;
    tools?: ToolData[];
  }

  /** A policy with tools whose calls all need counters (so the store is asked), and a store that may be down. */
  function setup(options: Setup = {}): { authorizer: Authorizer; metrics: ReturnType<typeof createSidecarMetrics> } {
    const metrics = createSidecarMetrics();
    const evaluationError: AuthorizationDecision = { decision: 'deny', enforced: true, policy: null, rule: SIDECAR_RULES.evaluationError, revision: '7-aaaaaaaaaaaaaaaa', reasons: ['evaluation failed: out of memory'] };
    const policy: LoadedPolicy = {
      revision: '7-aaaaaaaaaaaaaaaa',
      tenant: 'finance',
      tools: options.tools ?? [readTool, mcpTool],
      authorize: () => {
        if (options.evaluation === 'fails') throw new Error('wasm trap');
        return options.evaluation === 'answers-evaluation-error' ? evaluationError : allow;
      },
      obligations: (_namespace, tool) => ({ calls: [{ tool, window: '1m' }], rate: [], spend: [] }),
      standing: () => ('standing' in options ? options.standing : { suspended: false }),
    };
    const counters: CounterStore = {
      reserve: (): Promise<Reservation> => (options.counters === 'down' ? Promise.reject(new Error('ECONNREFUSED')) : Promise.resolve({ counters: { calls: {}, rate: {}, spentUSD: {} }, settle: () => Promise.resolve(undefined) })),
    };
    return { authorizer: new Authorizer({ identity: IDENTITY, tenant: 'finance', policy: () => policy, metrics, counters, newId: () => 'id' }), metrics };
  }

  const failedOpen = (cause: string): Record<string, unknown> => ({ decision: 'allow', enforced: true, policy: null, rule: SIDECAR_RULES.failOpen, failOpen: cause });

  it.each([
    { name: 'a read-only action declared fail-open for counters_unavailable fails open when the counter store is down', setup: { counters: 'down' }, call: { tool: 'files', action: 'read' }, expected: failedOpen('counters_unavailable') },
    { name: 'a read-only MCP tool declared fail-open fails open when the counter store is down', setup: { counters: 'down' }, call: { tool: 'ehr', action: 'search' }, expected: failedOpen('counters_unavailable') },
    { name: 'a read-only action declared fail-open for evaluation_error fails open when the policy throws', setup: { evaluation: 'fails' }, call: { tool: 'files', action: 'read' }, expected: failedOpen('evaluation_error') },
    { name: 'a read-only action declared fail-open for evaluation_error fails open when the policy answers an evaluation error', setup: { evaluation: 'answers-evaluation-error' }, call: { tool: 'files', action: 'read' }, expected: failedOpen('evaluation_error') },
    { name: 'a read-only action fail-open only for counters_unavailable fails closed on an evaluation error', setup: { evaluation: 'fails' }, call: { tool: 'files', action: 'list' }, expected: { decision: 'deny', rule: SIDECAR_RULES.evaluationError } },
    { name: 'a read-only action not declared fail-open fails closed', setup: { counters: 'down' }, call: { tool: 'files', action: 'stat' }, expected: { decision: 'deny', rule: SIDECAR_RULES.stateUnavailable } },
    { name: 'a write fails closed', setup: { counters: 'down' }, call: { tool: 'files', action: 'delete' }, expected: { decision: 'deny', rule: SIDECAR_RULES.stateUnavailable } },
    { name: 'an MCP tool the server does not declare fails closed', setup: { counters: 'down' }, call: { tool: 'ehr', action: 'delete_record' }, expected: { decision: 'deny', rule: SIDECAR_RULES.stateUnavailable } },
    { name: 'a call without an action fails closed', setup: { counters: 'down' }, call: { tool: 'files' }, expected: { decision: 'deny', rule: SIDECAR_RULES.stateUnavailable } },
    { name: 'an undeclared tool naming a fail-open action fails closed', setup: { counters: 'down' }, call: { tool: 'other', action: 'read' }, expected: { decision: 'deny', rule: SIDECAR_RULES.stateUnavailable } },
    { name: 'a suspended agent fails closed even on a fail-open action', setup: { counters: 'down', standing: { suspended: true } }, call: { tool: 'files', action: 'read' }, expected: { decision: 'deny', rule: SIDECAR_RULES.stateUnavailable } },
    { name: 'an agent the bundle does not know fails closed even on a fail-open action', setup: { counters: 'down', standing: undefined }, call: { tool: 'files', action: 'read' }, expected: { decision: 'deny', rule: SIDECAR_RULES.stateUnavailable } },
    { name: 'a fail-open action the policy decides is decided by the policy', setup: {}, call: { tool: 'files', action: 'read' }, expected: { ...allow } },
  ] satisfies { name: string; setup: Setup; call: Record<string, unknown>; expected: Record<string, unknown> }[])('$name', async ({ setup: options, call, expected }) => {
    const { authorizer } = setup(options);
    const decision = await authorizer.authorize(call, { transport: 'http' });
    expect(decision).toMatchObject(expected);
    if (expected.rule !== SIDECAR_RULES.failOpen) expect(decision).not.toHaveProperty('failOpen');
  });

  it('fails closed with no bundle loaded, whatever the call: nothing is declared fail-open yet', async () => {
    const { authorizer } = authorizerWith(undefined);
    expect(await authorizer.authorize({ tool: 'files', action: 'read' }, { transport: 'http' })).toMatchObject({ decision: 'deny', rule: SIDECAR_RULES.noBundle });
  });

  it('says why in the reasons, and counts each fail-open decision by cause', async () => {
    const { authorizer, metrics } = setup({ counters: 'down' });
    const decision = await authorizer.authorize({ tool: 'files', action: 'read' }, { transport: 'http' });
    expect(decision.reasons).toEqual([
      'the counters of a stateful condition cannot be read: the counter store is unavailable',
      'tool files action read is read-only and declared failOpen for counters_unavailable: let through unchecked',
    ]);
    await authorizer.authorize({ tool: 'files', action: 'delete' }, { transport: 'http' });
    expect((await metrics.failOpen.get()).values).toEqual([{ labels: { cause: 'counters_unavailable' }, value: 1 }]);
    expect((await metrics.decisions.get()).values.map((v) => [v.labels.rule, v.value])).toEqual([[SIDECAR_RULES.failOpen, 1], [SIDECAR_RULES.stateUnavailable, 1]]);
  });

  it('records the fail-open decision for the observers (the audit trail) like any other', async () => {
    const { authorizer } = setup({ counters: 'down' });
    const records: DecisionRecord[] = [];
    authorizer.observe((record) => records.push(record));
    await authorizer.authorize({ tool: 'files', action: 'read' }, { transport: 'grpc' });
    expect(records.map((r) => [r.tool, r.decision.rule, r.decision.failOpen])).toEqual([['files', SIDECAR_RULES.failOpen, 'counters_unavailable']]);
  });
});

describe('declaredAction', () => {
  it('finds HTTP actions and MCP tools by name, and nothing for a call without an action', () => {
    const tools: ToolData[] = [
      { name: 'files', http: { host: 'files.svc', actions: [{ name: 'read', method: 'GET', path: '/f', readOnly: true }] } },
      { name: 'ehr', mcp: { host: 'ehr.svc', actions: [{ name: 'search', readOnly: true, failOpen: ['counters_unavailable'] }] } },
    ];
    expect(declaredAction(tools, 'files', 'read')).toMatchObject({ readOnly: true });
    expect(declaredAction(tools, 'ehr', 'search')).toMatchObject({ failOpen: ['counters_unavailable'] });
    expect(declaredAction(tools, 'files', undefined)).toBeUndefined();
    expect(declaredAction(tools, 'ehr', 'read')).toBeUndefined();
    expect(declaredAction(undefined, 'files', 'read')).toBeUndefined();
  });
});
