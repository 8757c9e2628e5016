import { describe, expect, it } from 'vitest';
import type { SigningKeyPair } from '../bundle/index.ts';
import { generateSigningKey } from '../bundle/index.ts';
import type { AgentStanding } from '../compiler/index.ts';
import type { MintRequest } from '../identity/index.ts';
import { agentSubject, mintAgentToken } from '../identity/index.ts';
import type { OwnToken, TokenVerdict } from './agent-tokens.ts';
import { AGENT_TOKEN_HEADER, AgentTokens } from './agent-tokens.ts';
import type { LoadedPolicy } from './bundle-verdict.ts';

const NOW = new Date('2026-11-23T14:00:00Z');
const ISSUER = 'https://portcullis-operator.portcullis-system.svc:8443';
const key: SigningKeyPair = await generateSigningKey();
const stranger: SigningKeyPair = await generateSigningKey();

const mint = async (overrides: Partial<MintRequest> = {}, signer = key): Promise<string> =>
  (
    await mintAgentToken(
      { issuer: ISSUER, audience: 'portcullis-agent', tenant: 'finance', namespace: 'finance', agent: 'finance-agent', ttlMs: 600_000, now: new Date(NOW.getTime() - 60_000), ...overrides },
      signer,
    )
  ).token;

/** The finance agent acting for the planner: what the token service mints on a delegation exchange. */
const delegated = (overrides: Partial<MintRequest> = {}): Promise<string> =>
  mint({ agent: 'planner-agent', act: { sub: agentSubject('finance', 'finance-agent') }, ...overrides });

function policyWith(standings: Record<string, AgentStanding>): LoadedPolicy {
  return {
    revision: '1-aaaaaaaaaaaaaaaa',
    tenant: 'finance',
    authorize: () => { throw new Error('not under test'); },
    obligations: () => ({ calls: [], rate: [], spend: [] }),
    standing: (namespace, agent) => standings[`${namespace}/${agent}`],
  };
}

const ACTIVE = { suspended: false };
const everyoneActive = policyWith({ 'finance/finance-agent': ACTIVE, 'finance/planner-agent': ACTIVE, 'finance/ops-agent': ACTIVE });

interface Setup {
  policy?: LoadedPolicy | undefined;
  own?: OwnToken;
  maxDelegationDepth?: number;
}

function tokens(setup: Setup = {}): AgentTokens {
  const policy = 'policy' in setup ? setup.policy : everyoneActive;
  return new AgentTokens({
    identity: { namespace: 'finance', agent: 'finance-agent' },
    tenant: 'finance',
    issuer: ISSUER,
    jwks: { keysFor: () => Promise.resolve(new Map([[key.keyId, key.publicKey]])) },
    policy: () => policy,
    ...(setup.own === undefined ? {} : { own: setup.own }),
    ...(setup.maxDelegationDepth === undefined ? {} : { maxDelegationDepth: setup.maxDelegationDepth }),
    now: () => NOW,
  });
}

const carrying = (token: string): Map<string, string> => new Map([[AGENT_TOKEN_HEADER, token]]);

function refusal(verdict: TokenVerdict): string {
  if (!('refuse' in verdict)) throw new Error(`expected a refusal, got ${JSON.stringify(verdict)}`);
  return verdict.refuse;
}

describe('forwarded agent tokens', () => {
  it('takes no token as the agent acting for itself', async () => {
    expect(await tokens().verify(new Map())).toEqual({ facts: {}, forwarded: false });
  });

  it("turns a planner's token delegated to this agent into delegation [planner-agent]", async () => {
    expect(await tokens().verify(carrying(await delegated()))).toEqual({ facts: { delegation: ['planner-agent'] }, forwarded: true });
  });

  it('keeps the whole chain, nearest asker first', async () => {
    // The planner asked ops, ops asked finance: finance acts (the top-level act), delegation [ops-agent, planner-agent].
    const chain = await mint({ agent: 'planner-agent', act: { sub: agentSubject('finance', 'finance-agent'), act: { sub: agentSubject('finance', 'ops-agent') } } });
    expect(await tokens().verify(carrying(chain))).toEqual({ facts: { delegation: ['ops-agent', 'planner-agent'] }, forwarded: true });
  });

  it.each([
    ['another agent acting', () => mint({ agent: 'planner-agent', act: { sub: agentSubject('finance', 'ops-agent') } }), /is for agent:finance:ops-agent to act, not for this agent/],
    ['another agent of the same name in another namespace', () => mint({ agent: 'planner-agent', act: { sub: agentSubject('sales', 'finance-agent') } }), /agent:sales:finance-agent to act/],
    ["another tenant's token", () => delegated({ tenant: 'sales' }), /token_tenant/],
    ['an unknown key', () => mint({ agent: 'planner-agent', act: { sub: agentSubject('finance', 'finance-agent') } }, stranger), /key_unknown/],
    ['an expired token', () => delegated({ now: new Date(NOW.getTime() - 3_600_000), ttlMs: 600_000 }), /token_expired/],
    ['a chain deeper than allowed', () => mint({ agent: 'planner-agent', act: { sub: agentSubject('finance', 'finance-agent'), act: { sub: agentSubject('finance', 'ops-agent') } } }), /delegation_too_deep/],
    ['garbage', () => Promise.resolve('not.a.token'), /token_malformed/],
  ])('refuses %s', async (_, token, reason) => {
    expect(refusal(await tokens({ maxDelegationDepth: 1 }).verify(carrying(await token())))).toMatch(reason);
  });

  it('refuses a token naming a suspended agent, an agent of no AgentIdentity, or one revoked since it was issued', async () => {
    const token = await delegated();
    expect(refusal(await tokens({ policy: policyWith({ 'finance/finance-agent': ACTIVE, 'finance/planner-agent': { suspended: true } }) }).verify(carrying(token)))).toMatch(/agent:finance:planner-agent, which is suspended/);
    expect(refusal(await tokens({ policy: policyWith({ 'finance/finance-agent': ACTIVE }) }).verify(carrying(token)))).toMatch(/planner-agent, which is not an agent of tenant finance/);
    const revoked = policyWith({ 'finance/finance-agent': ACTIVE, 'finance/planner-agent': { suspended: false, revokedBefore: NOW } });
    expect(refusal(await tokens({ policy: revoked }).verify(carrying(token)))).toMatch(/issued before agent:finance:planner-agent's tokens were revoked/);
    const revokedEarlier = policyWith({ 'finance/finance-agent': ACTIVE, 'finance/planner-agent': { suspended: false, revokedBefore: new Date(NOW.getTime() - 120_000) } });
    expect(await tokens({ policy: revokedEarlier }).verify(carrying(token))).toMatchObject({ forwarded: true });
    expect(refusal(await tokens({ policy: undefined }).verify(carrying(token)))).toMatch(/no valid policy bundle/);
  });

  it('accepts a one-time token once', async () => {
    const once = await delegated({ oneTime: true });
    const verifier = tokens();
    expect(await verifier.verify(carrying(once))).toMatchObject({ forwarded: true });
    expect(refusal(await verifier.verify(carrying(once)))).toMatch(/token_replayed/);
  });
});

describe("the sidecar's own token", () => {
  function ownToken(token: string | undefined): OwnToken & { renewals: number } {
    const own = { current: token, renewals: 0, renew: (): void => { own.renewals += 1; } };
    return own;
  }

  it('refuses every call while the sidecar holds no token', async () => {
    expect(refusal(await tokens({ own: ownToken(undefined) }).verify(new Map()))).toMatch(/holds no current agent token/);
  });

  it('refuses calls and asks for a new token when its token was issued before revokedBefore', async () => {
    const own = ownToken(await mint());
    const revoked = policyWith({ 'finance/finance-agent': { suspended: false, revokedBefore: NOW } });
    expect(refusal(await tokens({ own, policy: revoked }).verify(new Map()))).toMatch(/issued before 2026-11-23T14:00:00.000Z are revoked/);
    expect(own.renewals).toBe(1);
    expect(await tokens({ own, policy: everyoneActive }).verify(new Map())).toEqual({ facts: {}, forwarded: false });
  });

  it('sends its own token upstream, unless the call carries a verified delegated one', async () => {
    const ownValue = await mint();
    const verifier = tokens({ own: ownToken(ownValue) });
    expect(verifier.upstreamHeaders(new Map())).toEqual({ [AGENT_TOKEN_HEADER]: ownValue });
    expect(verifier.upstreamHeaders(new Map([[AGENT_TOKEN_HEADER, '']]))).toEqual({ [AGENT_TOKEN_HEADER]: ownValue });
    expect(verifier.upstreamHeaders(carrying(await delegated()))).toEqual({});
    expect(tokens().upstreamHeaders(new Map())).toEqual({});
  });
});

describe('tokens of this pod only', () => {
  const THIS_POD = { name: 'finance-agent-7d9f', uid: 'uid-7d9f' };
  const OTHER_POD = { name: 'finance-agent-2c4e', uid: 'uid-2c4e' };
  const PLANNER_POD = { name: 'planner-agent-5b1a', uid: 'uid-5b1a' };

  function inPod(own?: string, podUid?: string): AgentTokens {
    return new AgentTokens({
      identity: { namespace: 'finance', agent: 'finance-agent' },
      tenant: 'finance',
      issuer: ISSUER,
      jwks: { keysFor: () => Promise.resolve(new Map([[key.keyId, key.publicKey]])) },
      policy: () => everyoneActive,
      ...(own === undefined ? {} : { own: { current: own, renew: (): void => undefined } }),
      pod: THIS_POD.name,
      ...(podUid === undefined ? {} : { podUid }),
      now: () => NOW,
    });
  }

  it('accepts its own token issued to this pod, and a delegated token whose acting agent exchanged from this pod', async () => {
    expect(await inPod(await mint({ pod: THIS_POD })).verify(new Map())).toEqual({ facts: {}, forwarded: false });
    const forwarded = await delegated({ pod: PLANNER_POD, act: { sub: agentSubject('finance', 'finance-agent'), pod: THIS_POD } });
    expect(await inPod().verify(carrying(forwarded))).toEqual({ facts: { delegation: ['planner-agent'] }, forwarded: true });
  });

  it.each([
    ['its own token issued to another pod of the agent', { pod: OTHER_POD }, /own agent token was issued to pod finance-agent-2c4e, not to this pod \(finance-agent-7d9f\)/],
    ['its own token bound to no pod (from an unbound ServiceAccount token)', {}, /own agent token was issued to no pod, not to this pod/],
  ])('refuses every call with %s', async (_name, overrides: Partial<MintRequest>, reason) => {
    expect(refusal(await inPod(await mint(overrides)).verify(new Map()))).toMatch(reason);
  });

  it.each([
    ['exchanged by the agent in another pod', () => delegated({ pod: PLANNER_POD, act: { sub: agentSubject('finance', 'finance-agent'), pod: OTHER_POD } }), /from pod finance-agent-2c4e, not from this pod/],
    ['whose actor names no pod', () => delegated({ pod: PLANNER_POD }), /from no pod, not from this pod/],
    ["of this agent's own, issued to another pod", () => mint({ pod: OTHER_POD }), /from pod finance-agent-2c4e, not from this pod/],
  ])('refuses a forwarded token %s', async (_name, token, reason) => {
    expect(refusal(await inPod().verify(carrying(await token())))).toMatch(reason);
  });

  it('compares uids when the sidecar knows its own: a pod re-created under the same name is another pod', async () => {
    const earlier = { name: THIS_POD.name, uid: 'uid-of-an-earlier-pod' };
    expect(await inPod(await mint({ pod: THIS_POD }), THIS_POD.uid).verify(new Map())).toEqual({ facts: {}, forwarded: false });
    expect(refusal(await inPod(await mint({ pod: earlier }), THIS_POD.uid).verify(new Map()))).toMatch(
      /own agent token was issued to pod finance-agent-7d9f \(uid uid-of-an-earlier-pod\), an earlier pod of that name, not to this pod \(uid uid-7d9f\)/,
    );
    const forwarded = await delegated({ pod: PLANNER_POD, act: { sub: agentSubject('finance', 'finance-agent'), pod: earlier } });
    expect(refusal(await inPod(undefined, THIS_POD.uid).verify(carrying(forwarded)))).toMatch(/act from pod finance-agent-7d9f \(uid uid-of-an-earlier-pod\), an earlier pod of that name, not from this pod/);
  });

  it('refuses a forwarded token in which this agent acts for itself', async () => {
    const self = await mint({ pod: THIS_POD, act: { sub: agentSubject('finance', 'finance-agent'), pod: THIS_POD } });
    expect(refusal(await inPod().verify(carrying(self)))).toMatch(/self_delegation/);
  });
});
