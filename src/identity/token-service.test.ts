import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { pino } from 'pino';
import { Registry } from 'prom-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fromJwks } from '../bundle/index.ts';
import { IdentityError, PodLookupUnavailableError, TokenReviewUnavailableError } from './errors.ts';
import { tokenServiceHandler } from './http.ts';
import { createTokenServiceMetrics } from './metrics.ts';
import type { TokenKeyring } from './keyring.ts';
import { loadTokenKeyring, newTokenKey } from './keyring.ts';
import { agentRecordOf } from './kubernetes.ts';
import type { AgentRecord, PodRecord, ServiceAccountReview, TokenExchangeRequest, TokenServiceOptions } from './token-service.ts';
import { TokenService } from './token-service.ts';
import { mintAgentToken, verifyAgentToken } from './tokens.ts';

const NOW = new Date('2026-11-23T14:00:00Z');
const ISSUER = 'https://portcullis-operator.portcullis-system.svc';
const keyring: TokenKeyring = await loadTokenKeyring({ keys: [{ ...(await newTokenKey(NOW)), activatesAt: NOW.toISOString() }] });

const agentRecord = (name: string, overrides: Partial<AgentRecord> = {}): AgentRecord => ({
  namespace: 'finance',
  name,
  tenant: 'finance',
  serviceAccountName: name,
  roles: ['payments'],
  scopes: ['payments:write'],
  suspended: false,
  ...overrides,
});

interface FakeServiceAccountToken {
  issuedAt?: Date;
  expiresAt?: Date;
  /** The pod it is bound to; null for none (`kubectl create token`). */
  pod?: string | null;
}

/** A ServiceAccount token as the fake TokenReview knows it: its user, pod, iat and exp. */
const saToken = (namespace: string, serviceAccount: string, token: FakeServiceAccountToken = {}): string => {
  const { issuedAt = NOW, expiresAt = new Date(NOW.getTime() + 3600_000), pod = `${serviceAccount}-pod` } = token;
  const claims = { iat: issuedAt.getTime() / 1000, exp: expiresAt.getTime() / 1000, sa: `${namespace}:${serviceAccount}`, pod };
  return ['h', Buffer.from(JSON.stringify(claims)).toString('base64url'), 's'].join('.');
};
const uidOf = (pod: string): string => `uid-${pod}`;

const reviewOf = (token: string): ServiceAccountReview => {
  if (token === 'expired') return { authenticated: false, error: '[invalid bearer token, token has been invalidated]' };
  if (token === 'api-down') throw new TokenReviewUnavailableError('the TokenReview failed: connect ECONNREFUSED');
  if (token === 'a-person') return { authenticated: true, username: 'alice@example.com', audiences: ['portcullis'] };
  if (token === 'wrong-audience') return { authenticated: true, username: 'system:serviceaccount:finance:finance-agent', audiences: ['vault'] };
  const claims = JSON.parse(Buffer.from(token.split('.')[1] ?? '', 'base64url').toString()) as { sa: string; pod: string | null };
  const extra = claims.pod === null ? {} : { 'authentication.kubernetes.io/pod-name': [claims.pod], 'authentication.kubernetes.io/pod-uid': [uidOf(claims.pod)] };
  return { authenticated: true, username: `system:serviceaccount:${claims.sa}`, audiences: ['portcullis'], extra };
};

/** A running, injected pod of the ServiceAccount its name starts with (`finance-agent-pod` runs as finance-agent). */
const podRecord = (name: string, overrides: Partial<PodRecord> = {}): PodRecord => ({
  uid: uidOf(name),
  serviceAccountName: name.replace(/-pod$/, ''),
  phase: 'Running',
  deleting: false,
  injected: true,
  ...overrides,
});

/** The pods of the fake API server: every `*-pod` exists as podRecord makes it, unless listed here. */
const pods = (special: Record<string, PodRecord | undefined> = {}): TokenServiceOptions['lookupPod'] => (_namespace, name) =>
  Promise.resolve(name in special ? special[name] : podRecord(name));

const directory = (records: AgentRecord[]): TokenServiceOptions['agents'] => ({
  boundTo: (namespace, serviceAccount) => records.filter((r) => r.namespace === namespace && r.serviceAccountName === serviceAccount),
  get: (namespace, name) => records.find((r) => r.namespace === namespace && r.name === name),
});

const defaultAgents = [
  agentRecord('finance-agent', { tokenTTLMs: 5 * 60_000 }),
  agentRecord('planner-agent', { roles: ['planning'], scopes: [] }),
  agentRecord('paused-agent', { suspended: true }),
  agentRecord('revoked-agent', { revokedBefore: new Date(NOW.getTime() - 60_000) }),
  agentRecord('twin-a', { serviceAccountName: 'shared' }),
  agentRecord('twin-b', { serviceAccountName: 'shared' }),
  agentRecord('retail-agent', { namespace: 'retail', tenant: 'retail' }),
];

const service = (overrides: Partial<TokenServiceOptions> = {}, issued: string[] = []): TokenService =>
  new TokenService({
    issuer: ISSUER,
    reviewToken: (token) => Promise.resolve().then(() => reviewOf(token)),
    lookupPod: pods(),
    agents: directory(defaultAgents),
    keyring: () => keyring,
    now: () => NOW,
    onIssued: (agent) => { issued.push(agent.name); },
    ...overrides,
  });

const verify = (token: string, tenant = 'finance'): ReturnType<typeof verifyAgentToken> =>
  verifyAgentToken(token, { issuer: ISSUER, audience: 'portcullis-agent', keys: keyring.publicKeys, tenant, now: NOW });

describe('token exchange', () => {
  it("exchanges a pod's ServiceAccount token for its agent's token, with the pod, roles, scopes and the agent's TTL", async () => {
    const issued: string[] = [];
    const { response, claims } = await service({}, issued).exchange({ serviceAccountToken: saToken('finance', 'finance-agent') });
    expect(response).toMatchObject({ token_type: 'Bearer', expires_in: 300, issued_token_type: 'urn:ietf:params:oauth:token-type:jwt' });
    const verified = await verify(response.access_token);
    expect(verified.claims).toEqual(claims);
    expect(claims).toMatchObject({ sub: 'agent:finance:finance-agent', tenant: 'finance', pod: { name: 'finance-agent-pod', uid: 'uid-finance-agent-pod' }, roles: ['payments'], scopes: ['payments:write'] });
    expect(issued).toEqual(['finance-agent']);
  });

  it('ends the agent token no later than the ServiceAccount token it came from', async () => {
    const expiresAt = new Date(NOW.getTime() + 120_000);
    const { claims } = await service().exchange({ serviceAccountToken: saToken('finance', 'finance-agent', { expiresAt }) });
    expect(claims.exp).toBe(expiresAt.getTime() / 1000);
  });

  it('exchanges the same ServiceAccount token again, as the sidecar does at every refresh', async () => {
    const request = { serviceAccountToken: saToken('finance', 'finance-agent') };
    const first = await service().exchange(request);
    const again = await service().exchange(request);
    expect(again.claims.jti).not.toBe(first.claims.jti);
  });

  it('reads the pod the token is bound to once per exchange, after the cheap checks', async () => {
    const looked: string[] = [];
    const counting = service({ lookupPod: (namespace, name) => { looked.push(`${namespace}/${name}`); return pods()(namespace, name); } });
    await counting.exchange({ serviceAccountToken: saToken('finance', 'finance-agent') });
    await counting.exchange({ serviceAccountToken: saToken('finance', 'paused-agent') }).catch(() => undefined);
    expect(looked).toEqual(['finance/finance-agent-pod']);
  });

  it('picks the named agent when several share the ServiceAccount', async () => {
    const { claims } = await service().exchange({ serviceAccountToken: saToken('finance', 'shared'), agent: 'twin-b' });
    expect(claims.agent_id).toBe('twin-b');
  });

  const refusals: [string, TokenExchangeRequest, string, number][] = [
    ['a ServiceAccount token the TokenReview does not authenticate is refused', { serviceAccountToken: 'expired' }, 'service_account_unauthenticated', 401],
    ['a TokenReview that fails refuses the request as unavailable', { serviceAccountToken: 'api-down' }, 'token_review_unavailable', 503],
    ['a ServiceAccount token for another audience is refused', { serviceAccountToken: 'wrong-audience' }, 'service_account_unauthenticated', 401],
    ['a token of a user that is not a ServiceAccount is refused', { serviceAccountToken: 'a-person' }, 'not_a_service_account', 403],
    ["a token for another ServiceAccount than the agent's is refused", { serviceAccountToken: saToken('finance', 'planner-agent'), agent: 'finance-agent' }, 'service_account_mismatch', 403],
    ['a ServiceAccount no AgentIdentity binds is refused as an unknown agent', { serviceAccountToken: saToken('finance', 'default') }, 'agent_unknown', 404],
    ['an agent of another namespace cannot be named', { serviceAccountToken: saToken('finance', 'finance-agent'), agent: 'retail-agent' }, 'agent_unknown', 404],
    ['a ServiceAccount bound to two agents without naming one is refused as ambiguous', { serviceAccountToken: saToken('finance', 'shared') }, 'agent_ambiguous', 409],
    ['a suspended agent is refused', { serviceAccountToken: saToken('finance', 'paused-agent') }, 'agent_suspended', 403],
    ['a ServiceAccount token issued before revokedBefore is refused', { serviceAccountToken: saToken('finance', 'revoked-agent', { issuedAt: new Date(NOW.getTime() - 120_000) }) }, 'agent_revoked', 403],
    ['a ServiceAccount token bound to no pod (kubectl create token) is refused', { serviceAccountToken: saToken('finance', 'finance-agent', { pod: null }) }, 'pod_unbound', 403],
    ['a token bound to a pod that no longer exists is refused', { serviceAccountToken: saToken('finance', 'finance-agent', { pod: 'deleted-pod' }) }, 'pod_unknown', 403],
    ['a token bound to an earlier pod of the same name is refused', { serviceAccountToken: saToken('finance', 'finance-agent', { pod: 'recreated-pod' }) }, 'pod_unknown', 403],
    ['a token whose pod runs as another ServiceAccount is refused', { serviceAccountToken: saToken('finance', 'finance-agent', { pod: 'planner-agent-pod' }) }, 'pod_ineligible', 403],
    ['a token of a pod being deleted is refused', { serviceAccountToken: saToken('finance', 'finance-agent', { pod: 'terminating-pod' }) }, 'pod_ineligible', 403],
    ['a token of a pod that has finished is refused', { serviceAccountToken: saToken('finance', 'finance-agent', { pod: 'completed-pod' }) }, 'pod_ineligible', 403],
    ['a token of a pod without the Portcullis sidecar is refused', { serviceAccountToken: saToken('finance', 'finance-agent', { pod: 'plain-pod' }) }, 'pod_ineligible', 403],
    ['a pod that cannot be read refuses the request as unavailable', { serviceAccountToken: saToken('finance', 'finance-agent', { pod: 'unreadable-pod' }) }, 'pod_lookup_unavailable', 503],
  ];

  const specialPods: Record<string, PodRecord | undefined> = {
    'deleted-pod': undefined,
    'recreated-pod': podRecord('recreated-pod', { uid: 'uid-of-its-successor', serviceAccountName: 'finance-agent' }),
    'terminating-pod': podRecord('terminating-pod', { serviceAccountName: 'finance-agent', deleting: true }),
    'completed-pod': podRecord('completed-pod', { serviceAccountName: 'finance-agent', phase: 'Succeeded' }),
    'plain-pod': podRecord('plain-pod', { serviceAccountName: 'finance-agent', injected: false }),
  };
  const lookupPod: TokenServiceOptions['lookupPod'] = (namespace, name) =>
    name === 'unreadable-pod' ? Promise.reject(new PodLookupUnavailableError('reading pod finance/unreadable-pod failed: connect ECONNREFUSED')) : pods(specialPods)(namespace, name);

  it.each(refusals)('%s', async (_name, request, code, status) => {
    const issued: string[] = [];
    const error = await service({ lookupPod }, issued).exchange(request).then(() => undefined, (e: unknown) => e);
    expect(error).toBeInstanceOf(IdentityError);
    expect(error).toMatchObject({ code, status });
    expect(issued).toEqual([]);
  });

  it('accepts a ServiceAccount token issued after revokedBefore', async () => {
    const { claims } = await service().exchange({ serviceAccountToken: saToken('finance', 'revoked-agent') });
    expect(claims.agent_id).toBe('revoked-agent');
  });

  it('refuses a ServiceAccount asking faster than its rate limit, and serves it again once the bucket refills', async () => {
    let now = NOW;
    const limited = service({ rateLimit: { perSecond: 1, burst: 2 }, now: () => now });
    const request = { serviceAccountToken: saToken('finance', 'finance-agent') };
    await limited.exchange(request);
    await limited.exchange(request);
    await expect(limited.exchange(request)).rejects.toMatchObject({ code: 'rate_limited', status: 429 });
    now = new Date(NOW.getTime() + 1000);
    await expect(limited.exchange(request)).resolves.toBeDefined();
  });
});

describe('delegation through the exchange', () => {
  const plannerToken = async (): Promise<string> => (await service().exchange({ serviceAccountToken: saToken('finance', 'planner-agent') })).response.access_token;

  it("a planner's token exchanged by the finance agent is about the planner with the finance agent acting", async () => {
    const { response, claims } = await service().exchange({ serviceAccountToken: saToken('finance', 'finance-agent'), subjectToken: await plannerToken() });
    expect(claims).toMatchObject({
      sub: 'agent:finance:planner-agent',
      pod: { name: 'planner-agent-pod', uid: 'uid-planner-agent-pod' },
      act: { sub: 'agent:finance:finance-agent', pod: { name: 'finance-agent-pod', uid: 'uid-finance-agent-pod' } },
      roles: ['planning'],
    });
    const verified = await verify(response.access_token);
    expect({ actor: verified.actor, delegation: verified.delegation }).toEqual({ actor: 'finance-agent', delegation: ['planner-agent'] });
  });

  it('ends the delegated token no later than the subject token', async () => {
    const subject = await mintAgentToken({ issuer: ISSUER, audience: 'portcullis-agent', tenant: 'finance', namespace: 'finance', agent: 'planner-agent', ttlMs: 60_000, now: NOW }, keyring.signingKey(NOW));
    const { claims } = await service().exchange({ serviceAccountToken: saToken('finance', 'finance-agent'), subjectToken: subject.token });
    expect(claims.exp).toBe(subject.claims.exp);
  });

  it("refuses another tenant's subject token", async () => {
    const retail = (await service().exchange({ serviceAccountToken: saToken('retail', 'retail-agent') })).response.access_token;
    await expect(service().exchange({ serviceAccountToken: saToken('finance', 'finance-agent'), subjectToken: retail })).rejects.toMatchObject({ code: 'token_tenant' });
  });

  it('refuses to add a level to a chain already at the depth limit', async () => {
    const shallow = service({ maxDelegationDepth: 1 });
    const once = (await shallow.exchange({ serviceAccountToken: saToken('finance', 'finance-agent'), subjectToken: await plannerToken() })).response.access_token;
    await expect(shallow.exchange({ serviceAccountToken: saToken('finance', 'revoked-agent'), subjectToken: once })).rejects.toMatchObject({ code: 'delegation_too_deep' });
  });

  it('refuses an agent acting for its own token', async () => {
    const own = (await service().exchange({ serviceAccountToken: saToken('finance', 'finance-agent') })).response.access_token;
    const error = await service().exchange({ serviceAccountToken: saToken('finance', 'finance-agent'), subjectToken: own }).then(() => undefined, (e: unknown) => e);
    expect(error).toMatchObject({ code: 'self_delegation', status: 403 });
    expect((error as Error).message).toMatch(/agent:finance:finance-agent cannot act for a token whose delegation chain it is already part of/);
  });

  it('refuses an agent acting again for a chain it already acted in', async () => {
    const once = (await service().exchange({ serviceAccountToken: saToken('finance', 'finance-agent'), subjectToken: await plannerToken() })).response.access_token;
    const twice = (await service().exchange({ serviceAccountToken: saToken('finance', 'revoked-agent'), subjectToken: once })).response.access_token;
    await expect(service().exchange({ serviceAccountToken: saToken('finance', 'finance-agent'), subjectToken: twice })).rejects.toMatchObject({ code: 'self_delegation' });
  });

  it('refuses a delegation exchange from a ServiceAccount token bound to no pod', async () => {
    await expect(service().exchange({ serviceAccountToken: saToken('finance', 'finance-agent', { pod: null }), subjectToken: await plannerToken() })).rejects.toMatchObject({ code: 'pod_unbound' });
  });

  it('refuses to act for a principal that has been suspended since its token was issued', async () => {
    const token = await plannerToken();
    const suspendedPlanner = service({ agents: directory([...defaultAgents.filter((a) => a.name !== 'planner-agent'), agentRecord('planner-agent', { suspended: true })]) });
    await expect(suspendedPlanner.exchange({ serviceAccountToken: saToken('finance', 'finance-agent'), subjectToken: token })).rejects.toMatchObject({ code: 'agent_suspended' });
  });
});

describe('AgentIdentity records', () => {
  const identity = { metadata: { name: 'a', namespace: 'n' }, spec: { serviceAccountName: 'sa', owner: { name: 'D', email: 'd@example.com' } } };

  it('reads tokenTTL as a duration and a missing one as the default', () => {
    expect(agentRecordOf({ ...identity, spec: { ...identity.spec, tokenTTL: '2m' } }, 't').tokenTTLMs).toBe(120_000);
    expect(agentRecordOf(identity, 't').tokenTTLMs).toBeUndefined();
  });

  it('reads an unparseable revokedBefore as revoking everything', () => {
    expect(agentRecordOf({ ...identity, spec: { ...identity.spec, revokedBefore: 'yesterday' } }, 't').revokedBefore?.getTime()).toBeGreaterThan(Date.now());
  });
});

describe('HTTP edge', () => {
  let url = '';
  const metrics = createTokenServiceMetrics(new Registry());
  const server = createServer(tokenServiceHandler(service(), pino({ level: 'silent' }), metrics));
  beforeAll(async () => {
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    url = `http://127.0.0.1:${String((server.address() as AddressInfo).port)}`;
  });
  afterAll(() => {
    server.close();
  });

  it('answers POST /v1/token with the bearer ServiceAccount token as an RFC 8693 response, not cached', async () => {
    const res = await fetch(`${url}/v1/token`, { method: 'POST', headers: { authorization: `Bearer ${saToken('finance', 'finance-agent')}` } });
    expect(res.status).toBe(200);
    expect(res.headers.get('cache-control')).toBe('no-store');
    const body = (await res.json()) as { access_token: string };
    await expect(verify(body.access_token)).resolves.toBeDefined();
  });

  it('takes the ServiceAccount token from the body too', async () => {
    const res = await fetch(`${url}/v1/token`, { method: 'POST', body: JSON.stringify({ service_account_token: saToken('finance', 'shared'), agent: 'twin-a' }) });
    expect(res.status).toBe(200);
  });

  const httpRefusals: [string, RequestInit, number, string][] = [
    ['a request without a ServiceAccount token gets 401 credentials_missing', { method: 'POST' }, 401, 'credentials_missing'],
    ['a body that is not JSON gets 400 request_invalid', { method: 'POST', body: '{nope', headers: { authorization: 'Bearer x' } }, 400, 'request_invalid'],
    ['a field of the wrong type gets 400 request_invalid', { method: 'POST', body: '{"agent": 7}', headers: { authorization: 'Bearer x' } }, 400, 'request_invalid'],
    ['a suspended agent gets 403 agent_suspended', { method: 'POST', headers: { authorization: `Bearer ${saToken('finance', 'paused-agent')}` } }, 403, 'agent_suspended'],
    ['an unknown agent gets 404 agent_unknown', { method: 'POST', headers: { authorization: `Bearer ${saToken('finance', 'nobody')}` } }, 404, 'agent_unknown'],
    ['a failing TokenReview gets 503 token_review_unavailable', { method: 'POST', headers: { authorization: 'Bearer api-down' } }, 503, 'token_review_unavailable'],
    ['GET /v1/token gets 405', { method: 'GET' }, 405, 'method_not_allowed'],
  ];

  it.each(httpRefusals)('%s', async (_name, init, status, code) => {
    const res = await fetch(`${url}/v1/token`, init);
    expect(res.status).toBe(status);
    const body = (await res.json()) as { error: string; message: string };
    expect(body.error).toBe(code);
    expect(body.message).not.toBe('');
  });

  it('counts exchanges by result and times them, and nothing for the JWKS', async () => {
    await fetch(`${url}/.well-known/jwks.json`);
    const counted: Record<string, number> = Object.fromEntries((await metrics.exchanges.get()).values.map((v) => [String(v.labels.result), v.value]));
    // Every test above ran first: two issued, one of each refusal.
    expect(counted).toMatchObject({ issued: 2, credentials_missing: 1, request_invalid: 2, agent_suspended: 1, agent_unknown: 1, token_review_unavailable: 1, method_not_allowed: 1 });
    const timed = (await metrics.exchangeDuration.get()).values.find((v) => v.metricName === 'portcullis_token_exchange_duration_seconds_count' && v.labels.result === 'issued');
    expect(timed?.value).toBe(2);
  });

  it('serves the keys as a JWKS that verifies the tokens it issues', async () => {
    const jwks = (await (await fetch(`${url}/.well-known/jwks.json`)).json()) as { keys: { kid: string; alg: string }[] };
    expect(jwks.keys.map((k) => k.alg)).toEqual(['EdDSA']);
    const token = (await service().exchange({ serviceAccountToken: saToken('finance', 'finance-agent') })).response.access_token;
    await expect(verifyAgentToken(token, { issuer: ISSUER, audience: 'portcullis-agent', keys: await fromJwks(jwks), now: NOW })).resolves.toBeDefined();
  });

  it('serves a discovery document naming the issuer, the JWKS and EdDSA', async () => {
    const doc = (await (await fetch(`${url}/.well-known/openid-configuration`)).json()) as Record<string, unknown>;
    expect(doc).toMatchObject({ issuer: ISSUER, jwks_uri: `${ISSUER}/.well-known/jwks.json`, id_token_signing_alg_values_supported: ['EdDSA'] });
  });
});
