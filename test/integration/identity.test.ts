// The token service against the real API server: real ServiceAccount tokens (TokenRequest), real
// TokenReviews with the operator's own RBAC, JWKS-verified agent tokens, the kill switch, key
// rotation mid-run, and a delegated token deciding the DESIGN.md payments policy.

import { CoreV1Api, CustomObjectsApi } from '@kubernetes/client-node';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { stringify } from 'yaml';
import type { AgentIdentity } from '../../src/api/index.ts';
import { INJECTED_ANNOTATION } from '../../src/api/index.ts';
import type { BundleJwks } from '../../src/bundle/index.ts';
import { fromJwks } from '../../src/bundle/index.ts';
import { compileTenant, parseManifests, PolicyEvaluator, tenantResources } from '../../src/compiler/index.ts';
import type { RunningTokenService, TokenExchangeResponse, VerifiedAgentToken } from '../../src/identity/index.ts';
import { AGENT_TOKEN_AUDIENCE, rotateTokenKeyring, startTokenService, TOKEN_KEYS_SECRET, TokenServiceClient, tokenServiceEndpoint, verifyAgentToken } from '../../src/identity/index.ts';
import { tokenEndpoint } from '../../src/operator/main.ts';
import { createOperatorMetrics } from '../../src/operator/metrics.ts';
import { Operator } from '../../src/operator/operator.ts';
import { eventually, kubeConfigOf, kubeConfigWithToken } from '../harness/cluster.ts';
import { ensureNamespace, kubectl, REPO_ROOT } from '../harness/control-plane.ts';

const plane = inject('controlPlane');
const admin = kubeConfigOf(plane);
const core = admin.makeApiClient(CoreV1Api);
const custom = admin.makeApiClient(CustomObjectsApi);
const OPERATOR_NS = 'portcullis-system';
const NS = 'identity-finance';
const SERVICE_ACCOUNTS = ['finance-agent', 'planner-agent', 'paused-agent', 'kill-switch-agent', 'stranger'];

const owner = 'owner: { name: Dana Ruiz, email: dana@example.com }';
// The resources of DESIGN.md, in this test's namespace: what is applied is also what is compiled.
const MANIFESTS = `
apiVersion: portcullis.dev/v1alpha1
kind: AgentIdentity
metadata: { name: finance-agent, namespace: ${NS} }
spec:
  serviceAccountName: finance-agent
  ${owner}
  purpose: Pays approved invoices
  roles: [payments]
  scopes: ["payments:write"]
  attributes: { region: eu }
  autonomyLevel: 1
  tokenTTL: 5m
  suspended: false
---
apiVersion: portcullis.dev/v1alpha1
kind: AgentIdentity
metadata: { name: planner-agent, namespace: ${NS} }
spec: { serviceAccountName: planner-agent, ${owner}, roles: [planning] }
---
apiVersion: portcullis.dev/v1alpha1
kind: AgentIdentity
metadata: { name: paused-agent, namespace: ${NS} }
spec: { serviceAccountName: paused-agent, ${owner}, suspended: true }
---
apiVersion: portcullis.dev/v1alpha1
kind: AgentIdentity
metadata: { name: kill-switch-agent, namespace: ${NS} }
spec: { serviceAccountName: kill-switch-agent, ${owner} }
---
apiVersion: portcullis.dev/v1alpha1
kind: ToolPolicy
metadata: { name: payments, namespace: ${NS} }
spec:
  subjects: { agents: [finance-agent], roles: [payments] }
  mode: enforce
  rules:
    - name: small-payments
      tool: stripe-payments
      actions: [create_payment]
      decision: allow
      when:
        - { param: amount, max: 5000 }
        - { param: currency, oneOf: [USD, EUR] }
        - { param: account, regex: "^[0-9]{10,12}$" }
    - name: over-limit
      tool: stripe-payments
      actions: [create_payment]
      decision: approval_needed
      when: [ { param: amount, gt: 5000 } ]
      approval: { approvers: ["group:finance-leads"], ttl: 15m }
    - name: no-coerced-payments
      tool: stripe-payments
      decision: deny
      when: [ { delegatedBy: [planner-agent] } ]
  rateLimits:
    - { tool: stripe-payments, rps: 3, burst: 3, onExceed: approval_needed }
`;

let tokens: RunningTokenService;
let client: TokenServiceClient;

beforeAll(async () => {
  await kubectl(plane, ['apply', '-f', '-'], { input: stringify({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: OPERATOR_NS } }) });
  await kubectl(plane, ['apply', '-k', join(REPO_ROOT, 'config', 'rbac')]);
  await ensureNamespace(plane, NS);
  for (const sa of SERVICE_ACCOUNTS) await kubectl(plane, ['create', 'serviceaccount', sa, '-n', NS]);
  await kubectl(plane, ['apply', '--validate=strict', '-f', '-'], { input: MANIFESTS });
  // A pod of each ServiceAccount, annotated as injection leaves it, for its tokens to be bound to (no scheduler runs: they stay Pending).
  for (const sa of SERVICE_ACCOUNTS) {
    await kubectl(plane, ['apply', '-f', '-'], {
      input: stringify({
        apiVersion: 'v1', kind: 'Pod', metadata: { name: `${sa}-0`, namespace: NS, annotations: { [INJECTED_ANNOTATION]: '{}' } },
        spec: { serviceAccountName: sa, automountServiceAccountToken: false, containers: [{ name: 'agent', image: 'example.com/agent:1' }] },
      }),
    });
  }
  // The service runs with exactly the permissions config/rbac grants the operator.
  const operatorToken = (await kubectl(plane, ['create', 'token', 'portcullis-operator', '-n', OPERATOR_NS, '--duration=2h'])).stdout.trim();
  const operatorClient = kubeConfigWithToken(plane, operatorToken);
  tokens = await startTokenService({
    kubeConfig: operatorClient,
    // Its certificate from the operator's own CA, in the Secret config/rbac lets it write, naming the loopback address.
    tls: tokenEndpoint({ 'token-url': 'https://127.0.0.1' }, OPERATOR_NS, operatorClient).tls,
    namespace: OPERATOR_NS,
    host: '127.0.0.1',
    port: 0,
    log: pino({ level: process.env.PORTCULLIS_TEST_LOG ?? 'silent' }),
    keyringRefreshMs: 200,
    rateLimit: { perSecond: 100, burst: 100 },
  });
  client = new TokenServiceClient(tokenServiceEndpoint(tokens.url, { ca: tokens.ca() }));
});

afterAll(async () => {
  client.close();
  await tokens.stop();
});

/** A ServiceAccount token bound to the ServiceAccount's pod, as the kubelet projects it. */
async function serviceAccountToken(serviceAccount: string): Promise<string> {
  const pod = ['--bound-object-kind', 'Pod', '--bound-object-name', `${serviceAccount}-0`];
  return (await kubectl(plane, ['create', 'token', serviceAccount, '-n', NS, '--audience', 'portcullis', '--duration', '10m', ...pod])).stdout.trim();
}

async function exchange(serviceAccountToken: string, body: Record<string, string> = {}): Promise<{ status: number; body: TokenExchangeResponse & { error?: string; message?: string } }> {
  const res = await client.request('POST', '/v1/token', { authorization: `Bearer ${serviceAccountToken}` }, body);
  return { status: res.status, body: res.body as TokenExchangeResponse & { error?: string; message?: string } };
}

async function servedJwks(): Promise<BundleJwks> {
  return (await client.request('GET', '/.well-known/jwks.json')).body as BundleJwks;
}

async function verifyWith(jwks: BundleJwks, token: string): Promise<VerifiedAgentToken> {
  return verifyAgentToken(token, { issuer: tokens.service.issuer, audience: AGENT_TOKEN_AUDIENCE, keys: await fromJwks(jwks), tenant: NS });
}

const kidOf = (token: string): string => (JSON.parse(Buffer.from(token.split('.')[0] ?? '', 'base64url').toString()) as { kid: string }).kid;

async function agentToken(serviceAccount: string): Promise<string> {
  const answer = await exchange(await serviceAccountToken(serviceAccount));
  expect(answer.status).toBe(200);
  return answer.body.access_token;
}

describe('token exchange on the real API server', () => {
  it('exchanges a TokenRequest ServiceAccount token bound to a pod for an agent token that verifies against the served JWKS', async () => {
    const answer = await exchange(await serviceAccountToken('finance-agent'));
    expect(answer.status).toBe(200);
    expect(answer.body).toMatchObject({ token_type: 'Bearer', expires_in: 300 });
    const { claims, actor, delegation } = await verifyWith(await servedJwks(), answer.body.access_token);
    expect(claims).toMatchObject({ sub: `agent:${NS}:finance-agent`, tenant: NS, agent_id: 'finance-agent', roles: ['payments'], scopes: ['payments:write'], pod: { name: 'finance-agent-0' } });
    expect({ actor, delegation }).toEqual({ actor: 'finance-agent', delegation: [] });
  });

  it("records when the agent's last token was issued in its status", async () => {
    await agentToken('planner-agent');
    const lastIssued = await eventually('status.lastTokenIssued of planner-agent', async () => {
      const identity = (await custom.getNamespacedCustomObject({ group: 'portcullis.dev', version: 'v1alpha1', namespace: NS, plural: 'agentidentities', name: 'planner-agent' })) as AgentIdentity;
      return identity.status?.lastTokenIssued;
    });
    expect(Math.abs(Date.parse(lastIssued) - Date.now())).toBeLessThan(60_000);
  });

  it("keeps lastTokenIssued when the operator rewrites the agent's status after a spec change", async () => {
    const operator = new Operator({
      kubeConfig: admin,
      namespace: OPERATOR_NS,
      identity: 'identity-test',
      signingKeySecret: 'portcullis-signing-keys',
      leaseName: 'identity-test-operator',
      leaseTimings: { leaseDurationMs: 3_000, renewDeadlineMs: 2_000, retryPeriodMs: 500 },
      resyncMs: 600_000,
      compile: (resources) => compileTenant(resources, plane.tools.opa),
      log: pino({ level: 'silent' }),
      metrics: createOperatorMetrics(),
    });
    await operator.start();
    try {
      const read = async (): Promise<AgentIdentity> =>
        (await custom.getNamespacedCustomObject({ group: 'portcullis.dev', version: 'v1alpha1', namespace: NS, plural: 'agentidentities', name: 'planner-agent' })) as AgentIdentity;
      await agentToken('planner-agent');
      const issued = await eventually('status.lastTokenIssued of planner-agent', async () => (await read()).status?.lastTokenIssued);
      await kubectl(plane, ['patch', 'agentidentity', 'planner-agent', '-n', NS, '--type=merge', '-p', '{"spec":{"purpose":"Plans the week"}}']);
      const generation = (await read()).metadata?.generation;
      const status = await eventually('the operator to write the status of the new generation', async () => {
        const current = await read();
        return current.status?.observedGeneration === generation && current.status?.conditions?.some((c) => c.type === 'Ready') ? current.status : undefined;
      }, 30_000);
      expect(status.lastTokenIssued).toBe(issued);
    } finally {
      await operator.stop();
    }
  });

  it('refuses a suspended agent with 403 agent_suspended', async () => {
    const answer = await exchange(await serviceAccountToken('paused-agent'));
    expect(answer.status).toBe(403);
    expect(answer.body.error).toBe('agent_suspended');
  });

  it('refuses an agent as soon as it is suspended with kubectl patch, and serves it again when resumed', async () => {
    const saToken = await serviceAccountToken('kill-switch-agent');
    expect((await exchange(saToken)).status).toBe(200);
    await kubectl(plane, ['patch', 'agentidentity', 'kill-switch-agent', '-n', NS, '--type=merge', '-p', '{"spec":{"suspended":true}}']);
    await eventually('the suspended agent to be refused', async () => ((await exchange(saToken)).body.error === 'agent_suspended' ? true : undefined), 10_000, 50);
    await kubectl(plane, ['patch', 'agentidentity', 'kill-switch-agent', '-n', NS, '--type=merge', '-p', '{"spec":{"suspended":false}}']);
    await eventually('the resumed agent to be served', async () => ((await exchange(saToken)).status === 200 ? true : undefined), 10_000, 50);
  });

  it('refuses a ServiceAccount token issued before revokedBefore, and serves one issued after', async () => {
    const before = await serviceAccountToken('kill-switch-agent');
    // iat has whole seconds: revoke from the second after it, and ask again once that second has passed.
    const { iat } = JSON.parse(Buffer.from(before.split('.')[1] ?? '', 'base64url').toString()) as { iat: number };
    const revokedBefore = new Date((iat + 1) * 1000);
    await kubectl(plane, ['patch', 'agentidentity', 'kill-switch-agent', '-n', NS, '--type=merge', '-p', JSON.stringify({ spec: { revokedBefore: revokedBefore.toISOString() } })]);
    await eventually('the revoked credential to be refused', async () => ((await exchange(before)).body.error === 'agent_revoked' ? true : undefined), 10_000, 50);
    await new Promise((r) => setTimeout(r, Math.max(0, revokedBefore.getTime() - Date.now() + 50)));
    expect((await exchange(await serviceAccountToken('kill-switch-agent'))).status).toBe(200);
  });

  it('refuses a ServiceAccount no AgentIdentity binds with 404 agent_unknown', async () => {
    const answer = await exchange(await serviceAccountToken('stranger'));
    expect(answer).toMatchObject({ status: 404, body: { error: 'agent_unknown' } });
  });

  it("refuses a token for another ServiceAccount than the named agent's with 403 service_account_mismatch", async () => {
    const answer = await exchange(await serviceAccountToken('stranger'), { agent: 'finance-agent' });
    expect(answer).toMatchObject({ status: 403, body: { error: 'service_account_mismatch' } });
  });

  it('refuses a ServiceAccount token for another audience, as the TokenReview does not authenticate it', async () => {
    const vaultToken = (await kubectl(plane, ['create', 'token', 'finance-agent', '-n', NS, '--audience', 'vault', '--duration', '10m'])).stdout.trim();
    const answer = await exchange(vaultToken);
    expect(answer).toMatchObject({ status: 401, body: { error: 'service_account_unauthenticated' } });
  });

  it('refuses an admin credential that is not a ServiceAccount token', async () => {
    const answer = await exchange('not-a-token-at-all');
    expect(answer).toMatchObject({ status: 401, body: { error: 'service_account_unauthenticated' } });
  });
});

describe('rotation mid-run', () => {
  it('publishes the new key before signing with it, and keeps every token of the old key valid', async () => {
    const oldToken = await agentToken('finance-agent');
    const oldKid = kidOf(oldToken);
    const publishDelayMs = 3_000;
    const newKid = await rotateTokenKeyring(core, OPERATOR_NS, TOKEN_KEYS_SECRET, { publishDelayMs });
    const rotatedAt = Date.now();
    // A verifier that fetched the JWKS once, right after the new key appeared, and caches it.
    const cachedJwks = await eventually('the new key in the served JWKS', async () => {
      const jwks = await servedJwks();
      return jwks.keys.some((k) => k.kid === newKid) ? jwks : undefined;
    }, 10_000, 50);
    // Until the delay has passed, tokens are still signed with the old key.
    const during = await agentToken('finance-agent');
    if (Date.now() - rotatedAt < publishDelayMs - 500) expect(kidOf(during)).toBe(oldKid);
    const after = await eventually('a token signed with the new key', async () => {
      const token = await agentToken('finance-agent');
      return kidOf(token) === newKid ? token : undefined;
    }, 15_000, 250);
    // Every token still verifies: the old ones against the current JWKS, the new one against the cached one.
    for (const token of [oldToken, during, after]) await expect(verifyWith(await servedJwks(), token)).resolves.toBeDefined();
    await expect(verifyWith(cachedJwks, after)).resolves.toBeDefined();
    expect((await servedJwks()).keys.map((k) => k.kid)).toContain(oldKid);
  });
});

describe('delegation deciding policy', () => {
  it("a planner's token delegated to the finance agent yields delegation [planner-agent], and no-coerced-payments denies", async () => {
    const plannerToken = await agentToken('planner-agent');
    const answer = await exchange(await serviceAccountToken('finance-agent'), { subject_token: plannerToken });
    expect(answer.status).toBe(200);
    const verified = await verifyWith(await servedJwks(), answer.body.access_token);
    expect(verified.claims.act).toMatchObject({ sub: `agent:${NS}:finance-agent`, pod: { name: 'finance-agent-0' } });
    expect({ actor: verified.actor, delegation: verified.delegation }).toEqual({ actor: 'finance-agent', delegation: ['planner-agent'] });

    const compiled = await compileTenant(tenantResources(parseManifests(MANIFESTS, 'identity.test.ts'), NS), plane.tools.opa);
    const evaluator = await PolicyEvaluator.load(compiled);
    const call = { namespace: NS, agent: verified.actor, tool: 'stripe-payments', action: 'create_payment', params: { amount: 4200, currency: 'USD', account: '1234567890' } };
    expect(evaluator.authorize({ ...call, delegation: verified.delegation })).toMatchObject({ decision: 'deny', rule: 'no-coerced-payments', policy: 'payments' });
    // The same call made by the finance agent on its own is a small payment.
    const own = await verifyWith(await servedJwks(), await agentToken('finance-agent'));
    expect(evaluator.authorize({ ...call, agent: own.actor, delegation: own.delegation })).toMatchObject({ decision: 'allow', rule: 'small-payments' });
  });

  it('refuses a subject token that is not signed (alg none) for its algorithm', async () => {
    const forged = await exchange(await serviceAccountToken('finance-agent'), { subject_token: 'eyJhbGciOiJub25lIn0.e30.' });
    expect(forged).toMatchObject({ status: 401, body: { error: 'token_algorithm' } });
  });
});
