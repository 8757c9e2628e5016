import { exportSPKI, SignJWT } from 'jose';
import type { JWTPayload } from 'jose';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { SigningKeyPair } from '../bundle/index.ts';
import { generateSigningKey } from '../bundle/index.ts';
import { AgentTokenError } from './errors.ts';
import { ReplayCache } from './replay-cache.ts';
import type { Actor, MintRequest, VerifyOptions } from './tokens.ts';
import { actingPod, delegationChain, mintAgentToken, parseAgentSubject, verifyAgentToken } from './tokens.ts';

const NOW = new Date('2026-11-23T14:00:00Z');
const POD = { name: 'finance-agent-7d9f', uid: '0b5e5f3c-1c1d-4e4b-9a55-3f7f2f6c7a10' };
const key: SigningKeyPair = await generateSigningKey();
const otherKey: SigningKeyPair = await generateSigningKey();

const request = (overrides: Partial<MintRequest> = {}): MintRequest => ({
  issuer: 'https://portcullis.example',
  audience: 'portcullis-agent',
  tenant: 'finance',
  namespace: 'finance',
  agent: 'finance-agent',
  roles: ['payments'],
  scopes: ['payments:write'],
  pod: POD,
  ttlMs: 10 * 60_000,
  now: NOW,
  ...overrides,
});

const options = (overrides: Partial<VerifyOptions> = {}): VerifyOptions => ({
  issuer: 'https://portcullis.example',
  audience: 'portcullis-agent',
  keys: new Map([[key.keyId, key.publicKey]]),
  tenant: 'finance',
  now: NOW,
  ...overrides,
});

const mint = async (overrides: Partial<MintRequest> = {}): Promise<string> => (await mintAgentToken(request(overrides), key)).token;
const b64 = (value: unknown): string => Buffer.from(JSON.stringify(value)).toString('base64url');
const payloadOf = (token: string): JWTPayload => JSON.parse(Buffer.from(token.split('.')[1] ?? '', 'base64url').toString('utf8')) as JWTPayload;
const chainOf = (...subjects: string[]): Actor | undefined =>
  subjects.reduceRight<Actor | undefined>((inner, sub) => ({ sub, ...(inner ? { act: inner } : {}) }), undefined);

describe('minting', () => {
  it('carries every claim the design names, with exp at most the TTL after iat', async () => {
    const { claims } = await mintAgentToken(request(), key);
    expect(claims).toMatchObject({
      iss: 'https://portcullis.example',
      sub: 'agent:finance:finance-agent',
      aud: 'portcullis-agent',
      tenant: 'finance',
      agent_id: 'finance-agent',
      namespace: 'finance',
      roles: ['payments'],
      scopes: ['payments:write'],
      pod: { name: 'finance-agent-7d9f', uid: '0b5e5f3c-1c1d-4e4b-9a55-3f7f2f6c7a10' },
      iat: NOW.getTime() / 1000,
      nbf: NOW.getTime() / 1000,
      exp: NOW.getTime() / 1000 + 600,
    });
    expect(claims.jti).toMatch(/^[0-9a-f-]{36}$/);
  });

  it('caps the lifetime at one hour whatever the TTL asks', async () => {
    const { claims } = await mintAgentToken(request({ ttlMs: 24 * 3600_000 }), key);
    expect(claims.exp - claims.iat).toBe(3600);
  });

  it('ends a token no later than notAfter, so a delegated token never outlives the one it came from', async () => {
    const { claims } = await mintAgentToken(request({ notAfter: new Date(NOW.getTime() + 60_000) }), key);
    expect(claims.exp - claims.iat).toBe(60);
  });

  it('signs with EdDSA and names the key and the JWT type in the header', async () => {
    const header = JSON.parse(Buffer.from((await mint()).split('.')[0] ?? '', 'base64url').toString('utf8')) as unknown;
    expect(header).toEqual({ alg: 'EdDSA', kid: key.keyId, typ: 'JWT' });
  });
});

describe('verification', () => {
  it('accepts a token it minted and reports no delegation', async () => {
    const verified = await verifyAgentToken(await mint(), options());
    expect(verified.actor).toBe('finance-agent');
    expect(verified.delegation).toEqual([]);
    expect(verified.claims.sub).toBe('agent:finance:finance-agent');
  });

  it('accepts a token expired less than the 30 s skew ago', async () => {
    const token = await mint({ ttlMs: 60_000 });
    await expect(verifyAgentToken(token, options({ now: new Date(NOW.getTime() + 80_000) }))).resolves.toBeDefined();
  });

  const badTokens: [string, () => Promise<[string, VerifyOptions]>, string][] = [
    ['a token with alg none is refused for its algorithm', async () => {
      const payload = payloadOf(await mint());
      return [`${b64({ alg: 'none', kid: key.keyId, typ: 'JWT' })}.${b64(payload)}.`, options()];
    }, 'token_algorithm'],
    ['an HS256 token signed with the public key as the HMAC secret is refused for its algorithm', async () => {
      const secret = new TextEncoder().encode(await exportSPKI(key.publicKey));
      const token = await new SignJWT(payloadOf(await mint())).setProtectedHeader({ alg: 'HS256', kid: key.keyId }).sign(secret);
      return [token, options()];
    }, 'token_algorithm'],
    ['a token signed by a key the verifier does not trust is refused as an unknown key', async () => [(await mintAgentToken(request(), otherKey)).token, options()], 'token_key_unknown'],
    ['a token without a key id is refused as an unknown key', async () => {
      const token = await new SignJWT(payloadOf(await mint())).setProtectedHeader({ alg: 'EdDSA' }).sign(key.privateKey);
      return [token, options()];
    }, 'token_key_unknown'],
    ['a token expired more than the skew ago is refused as expired', async () => [await mint({ now: new Date(NOW.getTime() - 11 * 60_000) }), options()], 'token_expired'],
    ['a token whose nbf is a minute ahead is refused as not yet valid', async () => [await mint({ now: new Date(NOW.getTime() + 60_000) }), options()], 'token_not_yet_valid'],
    ['a token for another audience is refused for its audience', async () => [await mint({ audience: 'someone-else' }), options()], 'token_audience'],
    ['a token from another issuer is refused for its issuer', async () => [await mint({ issuer: 'https://evil.example' }), options()], 'token_issuer'],
    ["another tenant's token is refused for its tenant", async () => [await mint({ tenant: 'retail', namespace: 'retail' }), options()], 'token_tenant'],
    ['a token with a tampered signature is refused for its signature', async () => {
      const token = await mint();
      const signature = token.split('.')[2] ?? '';
      const flipped = signature.slice(0, 10) + (signature[10] === 'A' ? 'B' : 'A') + signature.slice(11);
      return [token.split('.').slice(0, 2).join('.') + '.' + flipped, options()];
    }, 'token_signature_invalid'],
    ['a token whose payload was edited after signing is refused for its signature', async () => {
      const [header, payload, signature] = (await mint()).split('.');
      const edited = { ...(JSON.parse(Buffer.from(payload ?? '', 'base64url').toString()) as object), roles: ['admin'] };
      return [`${header ?? ''}.${b64(edited)}.${signature ?? ''}`, options()];
    }, 'token_signature_invalid'],
    ['a delegation chain deeper than allowed is refused', async () => [await mint({ act: chainOf('agent:finance:a', 'agent:finance:b', 'agent:finance:c') }), options({ maxDelegationDepth: 2 })], 'delegation_too_deep'],
    ['a token whose sub is not an agent subject is refused for its claims', async () => {
      const token = await new SignJWT({ ...payloadOf(await mint()), sub: 'system:admin' }).setProtectedHeader({ alg: 'EdDSA', kid: key.keyId }).sign(key.privateKey);
      return [token, options()];
    }, 'token_claims_invalid'],
    ['a token that lives longer than an hour is refused for its claims', async () => {
      const payload = payloadOf(await mint());
      const token = await new SignJWT({ ...payload, exp: (payload.iat ?? 0) + 7200 }).setProtectedHeader({ alg: 'EdDSA', kid: key.keyId }).sign(key.privateKey);
      return [token, options()];
    }, 'token_claims_invalid'],
    ['a token whose pod is a bare name rather than {name, uid} is refused for its claims', async () => {
      const token = await new SignJWT({ ...payloadOf(await mint()), pod: 'finance-agent-7d9f' }).setProtectedHeader({ alg: 'EdDSA', kid: key.keyId }).sign(key.privateKey);
      return [token, options()];
    }, 'token_claims_invalid'],
    ['a token whose actor names its pod without a uid is refused for its claims', async () =>
      [await mint({ agent: 'planner-agent', act: { sub: 'agent:finance:finance-agent', pod: { name: 'finance-agent-7d9f' } as typeof POD } }), options()], 'token_claims_invalid'],
    ['a token in which the finance agent acts for itself is refused as self-delegation', async () =>
      [await mint({ act: chainOf('agent:finance:finance-agent') }), options()], 'self_delegation'],
    ['a one-time token is refused by a verifier without a replay cache', async () => [await mint({ oneTime: true }), options()], 'token_replay_unchecked'],
    ['three parts that are not base64url JSON are refused as malformed', () => Promise.resolve<[string, VerifyOptions]>(['a.b.c', options()]), 'token_malformed'],
  ];

  it.each(badTokens)('%s', async (_name, build, code) => {
    const [token, verifyOptions] = await build();
    const error = await verifyAgentToken(token, verifyOptions).then(() => undefined, (e: unknown) => e);
    expect(error).toBeInstanceOf(AgentTokenError);
    expect((error as AgentTokenError).code).toBe(code);
  });

  it('accepts a one-time token once and refuses its replay', async () => {
    const token = await mint({ oneTime: true });
    const replayCache = new ReplayCache();
    await verifyAgentToken(token, options({ replayCache }));
    await expect(verifyAgentToken(token, options({ replayCache }))).rejects.toMatchObject({ code: 'token_replayed' });
  });
});

describe('delegation', () => {
  it('a planner token delegated to the finance agent makes the finance agent the actor, asked by the planner', async () => {
    const token = await mint({ agent: 'planner-agent', act: chainOf('agent:finance:finance-agent') });
    const verified = await verifyAgentToken(token, options());
    expect(verified.actor).toBe('finance-agent');
    expect(verified.delegation).toEqual(['planner-agent']);
  });

  it('lists the agents that asked the actor nearest first, the principal last', () => {
    const chain = delegationChain({ sub: 'agent:finance:planner', act: chainOf('agent:finance:payer', 'agent:finance:researcher', 'agent:finance:triage') }, 4);
    expect(chain).toEqual({ actor: 'payer', delegation: ['researcher', 'triage', 'planner'] });
  });

  it('accepts a chain exactly as deep as the limit', () => {
    expect(delegationChain({ sub: 'agent:a:p', act: chainOf('agent:a:x', 'agent:a:y') }, 2).delegation).toEqual(['y', 'p']);
  });

  const selfDelegations: [string, Parameters<typeof delegationChain>[0]][] = [
    ['the principal acting for itself', { sub: 'agent:a:p', act: chainOf('agent:a:p') }],
    ['the principal acting for a chain that started with it, two levels down', { sub: 'agent:a:p', act: chainOf('agent:a:p', 'agent:a:x') }],
    ['an actor acting again further up the chain', { sub: 'agent:a:p', act: chainOf('agent:a:x', 'agent:a:y', 'agent:a:x') }],
  ];

  it.each(selfDelegations)('refuses an agent appearing twice in a chain: %s', (_name, claims) => {
    expect(() => delegationChain(claims, 4)).toThrow(expect.objectContaining({ code: 'self_delegation' }) as Error);
  });

  it('keeps agents of the same name in different namespaces apart', () => {
    expect(delegationChain({ sub: 'agent:a:p', act: chainOf('agent:b:p') }, 4)).toEqual({ actor: 'p', delegation: ['p'] });
  });

  it("names the acting pod: the outermost actor's on a delegated token, the subject's otherwise", () => {
    const actor = { name: 'finance-agent-1', uid: 'u-1' };
    expect(actingPod({ pod: POD })).toEqual(POD);
    expect(actingPod({ pod: POD, act: { sub: 'agent:finance:finance-agent', pod: actor } })).toEqual(actor);
    expect(actingPod({ pod: POD, act: { sub: 'agent:finance:finance-agent' } })).toBeUndefined();
  });

  it('refuses an act level without an agent subject', () => {
    expect(() => delegationChain({ sub: 'agent:a:p', act: { sub: 'mallory' } }, 4)).toThrow(expect.objectContaining({ code: 'token_claims_invalid' }) as Error);
  });

  it('parses only agent:NAMESPACE:NAME subjects', () => {
    expect(parseAgentSubject('agent:finance:planner-agent')).toEqual({ namespace: 'finance', name: 'planner-agent' });
    expect(parseAgentSubject('agent:finance')).toBeUndefined();
    expect(parseAgentSubject('agent:Finance:x')).toBeUndefined();
  });
});

describe('fuzzing', () => {
  const verifyOnly = async (token: string): Promise<void> => {
    try {
      await verifyAgentToken(token, options({ replayCache: new ReplayCache(4) }));
    } catch (error) {
      if (!(error instanceof AgentTokenError)) throw error;
    }
  };

  it('never throws anything but a named token error for arbitrary strings', async () => {
    await fc.assert(fc.asyncProperty(fc.string({ unit: 'binary' }), verifyOnly), { numRuns: 300 });
  });

  it('never throws anything but a named token error for arbitrary JSON headers and payloads, signed or not', async () => {
    const json = fc.jsonValue({ maxDepth: 4 });
    const header = fc.oneof(json, fc.record({ alg: fc.constantFrom('EdDSA', 'none', 'HS256', 'RS256'), kid: fc.oneof(fc.constant(key.keyId), fc.string()) }));
    const payload = fc.oneof(json, fc.record({ sub: fc.string(), act: json, exp: json, nbf: json, iat: json, aud: json, tenant: json, one_time: json }, { requiredKeys: [] }));
    await fc.assert(
      fc.asyncProperty(header, payload, fc.string(), async (h, p, signature) => {
        await verifyOnly(`${b64(h)}.${b64(p)}.${Buffer.from(signature).toString('base64url')}`);
      }),
      { numRuns: 300 },
    );
  });

  it('never throws anything but a named token error for well-signed tokens with arbitrary claims', async () => {
    const claim = fc.oneof(fc.jsonValue({ maxDepth: 3 }), fc.constant(undefined));
    await fc.assert(
      fc.asyncProperty(fc.record({ sub: claim, act: claim, pod: claim, exp: claim, nbf: claim, iat: claim, aud: claim, tenant: claim, roles: claim, one_time: claim, jti: claim }), async (claims) => {
        const base = payloadOf(await mint());
        const defined = Object.fromEntries(Object.entries(claims).filter(([, v]) => v !== undefined));
        const token = await new SignJWT({ ...base, ...defined }).setProtectedHeader({ alg: 'EdDSA', kid: key.keyId }).sign(key.privateKey);
        await verifyOnly(token);
      }),
      { numRuns: 200 },
    );
  });
});
