import { createHmac, generateKeyPairSync } from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import type { JWK, JWTPayload } from 'jose';
import { createLocalJWKSet, exportJWK, SignJWT } from 'jose';
import { beforeAll, describe, expect, it } from 'vitest';
import type { UserTokenData } from '../compiler/index.ts';
import { USER_TOKEN_HEADER, UserTokenError, UserTokens, userOf, verifyForwardedTokens, verifyUserToken } from './user-tokens.ts';

const NOW = new Date('2026-11-23T14:00:00Z');
const NOW_S = NOW.getTime() / 1000;
const ISSUER = 'https://login.example.com/';

interface KeyPair { privateKey: KeyObject; publicKey: KeyObject; kid: string; alg: string }

const rsa = (kid: string): KeyPair => ({ ...generateKeyPairSync('rsa', { modulusLength: 2048 }), kid, alg: 'RS256' });
const ec = (kid: string): KeyPair => ({ ...generateKeyPairSync('ec', { namedCurve: 'P-256' }), kid, alg: 'ES256' });

let issuerKey: KeyPair;
let ecKey: KeyPair;
let strangerKey: KeyPair;
let jwks: { keys: JWK[] };

async function publicJwk(pair: KeyPair): Promise<JWK> {
  return { ...(await exportJWK(pair.publicKey)), kid: pair.kid, alg: pair.alg, use: 'sig' };
}

beforeAll(async () => {
  issuerKey = rsa('rsa-1');
  ecKey = ec('ec-1');
  strangerKey = rsa('rsa-1');
  jwks = { keys: [await publicJwk(issuerKey), await publicJwk(ecKey)] };
});

function config(...modifiers: ((c: UserTokenData) => void)[]): UserTokenData {
  const out: UserTokenData = {
    issuer: ISSUER,
    audiences: ['finance-app'],
    jwks,
    algorithms: ['ES256', 'RS256'],
    claims: { id: 'sub', attributes: { region: 'region', level: 'clearance' } },
  };
  for (const modify of modifiers) modify(out);
  return out;
}

const claims = (overrides: JWTPayload = {}): JWTPayload => ({
  iss: ISSUER,
  aud: 'finance-app',
  sub: 'alice',
  iat: NOW_S - 60,
  exp: NOW_S + 600,
  region: 'eu',
  clearance: 3,
  ...overrides,
});

async function sign(payload: JWTPayload, pair: KeyPair = issuerKey, header: Record<string, unknown> = {}): Promise<string> {
  return new SignJWT(payload).setProtectedHeader({ alg: pair.alg, kid: pair.kid, ...header }).sign(pair.privateKey);
}

const b64 = (value: unknown): string => Buffer.from(JSON.stringify(value)).toString('base64url');

/** alg none: no signature at all. */
const unsigned = (payload: JWTPayload): string => `${b64({ alg: 'none', kid: 'rsa-1' })}.${b64(payload)}.`;

/** The key-confusion attack: HS256 with the issuer's public key (its PEM) as the HMAC secret. */
function hmacWithPublicKey(payload: JWTPayload): string {
  const input = `${b64({ alg: 'HS256', kid: 'rsa-1' })}.${b64(payload)}`;
  const secret = issuerKey.publicKey.export({ type: 'spki', format: 'pem' });
  return `${input}.${createHmac('sha256', secret).update(input).digest('base64url')}`;
}

/** A genuine token whose payload was changed after signing. */
async function tampered(): Promise<string> {
  const [header, , signature] = (await sign(claims())).split('.');
  return `${header ?? ''}.${b64(claims({ region: 'us' }))}.${signature ?? ''}`;
}

const verify = (token: string, c: UserTokenData = config()): Promise<unknown> =>
  verifyUserToken(token, c, createLocalJWKSet(c.jwks as { keys: JWK[] }), NOW);

describe('verifyUserToken', () => {
  it('maps a genuine token to user.id and the configured attributes', async () => {
    await expect(verify(await sign(claims()))).resolves.toEqual({ id: 'alice', attributes: { region: 'eu', level: 3 } });
  });

  it('accepts an ES256 token when ES256 is pinned, and takes the id from the configured claim', async () => {
    const c = config((x) => { x.claims = { id: 'email', attributes: {} }; });
    await expect(verify(await sign(claims({ email: 'alice@example.com' }), ecKey), c)).resolves.toEqual({ id: 'alice@example.com', attributes: {} });
  });

  it('accepts a token expired less than 30 s ago (clock leeway)', async () => {
    await expect(verify(await sign(claims({ exp: NOW_S - 20 })))).resolves.toMatchObject({ id: 'alice' });
  });

  it('leaves out an attribute whose claim the token lacks', async () => {
    const payload = claims();
    delete payload.clearance;
    await expect(verify(await sign(payload))).resolves.toEqual({ id: 'alice', attributes: { region: 'eu' } });
  });

  it.each([
    { name: 'a token of another issuer', token: () => sign(claims({ iss: 'https://evil.example.com/' })), code: 'user_token_issuer' },
    { name: 'a token for another audience', token: () => sign(claims({ aud: 'other-app' })), code: 'user_token_audience' },
    { name: 'an expired token (past the leeway)', token: () => sign(claims({ exp: NOW_S - 31 })), code: 'user_token_expired' },
    { name: 'a token not valid yet (nbf past the leeway)', token: () => sign(claims({ nbf: NOW_S + 120 })), code: 'user_token_not_yet_valid' },
    { name: 'a token without exp', token: () => { const p = claims(); delete p.exp; return sign(p); }, code: 'user_token_claims_invalid' },
    { name: 'an unsigned token (alg none)', token: () => Promise.resolve(unsigned(claims())), code: 'user_token_algorithm' },
    { name: 'an HS256 token keyed with the issuer\'s public key', token: () => Promise.resolve(hmacWithPublicKey(claims())), code: 'user_token_algorithm' },
    { name: 'a token signed with an algorithm the configuration does not pin', token: () => sign(claims(), { ...issuerKey, alg: 'PS256' }), code: 'user_token_algorithm' },
    { name: 'a token naming a key id the issuer does not have', token: () => sign(claims(), issuerKey, { kid: 'rsa-9' }), code: 'user_token_key_unknown' },
    { name: 'a token whose payload was changed after signing', token: tampered, code: 'user_token_signature_invalid' },
    { name: 'a token signed by another key under the issuer\'s key id', token: () => sign(claims(), strangerKey), code: 'user_token_signature_invalid' },
    { name: 'a string that is not a JWT', token: () => Promise.resolve('not.a-jwt'), code: 'user_token_malformed' },
    { name: 'a token without a user id (no sub)', token: () => { const p = claims(); delete p.sub; return sign(p); }, code: 'user_token_claims_invalid' },
    { name: 'a token whose mapped attribute claim is a list', token: () => sign(claims({ region: ['eu', 'us'] })), code: 'user_token_claims_invalid' },
    { name: 'a token whose mapped attribute claim is an object', token: () => sign(claims({ clearance: { level: 3 } })), code: 'user_token_claims_invalid' },
  ])('refuses $name ($code)', async ({ token, code }) => {
    const error = await verify(await token()).then(() => undefined, (e: unknown) => e);
    expect(error).toBeInstanceOf(UserTokenError);
    expect((error as UserTokenError).code).toBe(code);
  });
});

describe('userOf', () => {
  it('reads only own claims: a claim named like an Object.prototype member is absent', () => {
    expect(userOf({ sub: 'alice' }, { id: 'sub', attributes: { region: 'toString', proto: '__proto__' } })).toEqual({ id: 'alice', attributes: {} });
  });

  it('refuses an empty user id', () => {
    expect(() => userOf({ sub: '' }, { id: 'sub', attributes: {} })).toThrow(/user id/);
  });
});

describe('UserTokens.verify on a call\'s headers', () => {
  const headers = (token?: string): Map<string, string> => new Map(token === undefined ? [] : [[USER_TOKEN_HEADER, token]]);
  const verifier = (c: UserTokenData | undefined, fetchJwks?: (url: string) => Promise<Response>): UserTokens =>
    new UserTokens({ config: () => c, now: () => NOW, ...(fetchJwks === undefined ? {} : { fetch: fetchJwks }) });

  it('gives a call without a user token no user', async () => {
    await expect(verifier(config()).verify(headers())).resolves.toEqual({});
  });

  it('gives a call with a genuine token its user', async () => {
    await expect(verifier(config()).verify(headers(await sign(claims())))).resolves.toEqual({ user: { id: 'alice', attributes: { region: 'eu', level: 3 } } });
  });

  it('refuses an empty user token header', async () => {
    await expect(verifier(config()).verify(headers(''))).resolves.toEqual({ refuse: expect.stringContaining('user_token_malformed') as unknown });
  });

  it('refuses two user tokens sent in one call (joined by the transport), rather than picking one', async () => {
    const token = await sign(claims());
    await expect(verifier(config()).verify(headers(`${token}, ${token}`))).resolves.toEqual({ refuse: expect.stringContaining('user_token_malformed') as unknown });
  });

  it('refuses any user token when the agent declares no userTokens, naming why', async () => {
    const verdict = await verifier(undefined).verify(headers(await sign(claims())));
    expect(verdict).toEqual({ refuse: expect.stringContaining('user_token_not_accepted') as unknown });
    expect(JSON.stringify(verdict)).toContain('spec.userTokens');
  });

  it('refuses a forged token with the reason', async () => {
    await expect(verifier(config()).verify(headers(await sign(claims(), strangerKey)))).resolves.toEqual({
      refuse: expect.stringMatching(/^the user token is refused \(user_token_signature_invalid\): /) as unknown,
    });
  });

  it('fetches a remote JWKS once and verifies with it', async () => {
    const fetched: string[] = [];
    const fetchJwks = (url: string): Promise<Response> => {
      fetched.push(url);
      return Promise.resolve(Response.json(jwks));
    };
    const remote = config((c) => { delete c.jwks; c.jwksURL = 'https://login.example.com/jwks.json'; });
    const tokens = verifier(remote, fetchJwks);
    for (let i = 0; i < 3; i++) await expect(tokens.verify(headers(await sign(claims())))).resolves.toMatchObject({ user: { id: 'alice' } });
    expect(fetched).toEqual(['https://login.example.com/jwks.json']);
  });

  it('refuses a token when the JWKS cannot be fetched (keys unavailable), never letting it through unverified', async () => {
    const remote = config((c) => { delete c.jwks; c.jwksURL = 'https://login.example.com/jwks.json'; });
    const failing = (): Promise<Response> => Promise.reject(new TypeError('fetch failed'));
    await expect(verifier(remote, failing).verify(headers(await sign(claims())))).resolves.toEqual({ refuse: expect.stringContaining('user_token_keys_unavailable') as unknown });
  });

  it('refuses a JWKS URL that is not https even if a bundle carried one', async () => {
    const remote = config((c) => { delete c.jwks; c.jwksURL = 'http://login.example.com/jwks.json'; });
    await expect(verifier(remote).verify(headers(await sign(claims())))).resolves.toEqual({ refuse: expect.stringContaining('is not https') as unknown });
  });
});

describe('verifyForwardedTokens', () => {
  const none = new Map<string, string>();
  it('joins the facts of every check: the agent token\'s delegation and the user token\'s user', async () => {
    const facts = await verifyForwardedTokens(none, [() => Promise.resolve({ delegation: ['planner'] }), () => Promise.resolve({ user: { id: 'alice', attributes: {} } })]);
    expect(facts).toEqual({ delegation: ['planner'], user: { id: 'alice', attributes: {} } });
  });

  it('refuses with the first refusal, whichever token it is about', async () => {
    const checked: string[] = [];
    const verdict = await verifyForwardedTokens(none, [
      () => (checked.push('agent'), Promise.resolve({ delegation: ['planner'] })),
      () => (checked.push('user'), Promise.resolve({ refuse: 'the user token is refused (user_token_expired): "exp" claim timestamp check failed' })),
    ]);
    expect(verdict).toEqual({ refuse: 'the user token is refused (user_token_expired): "exp" claim timestamp check failed' });
    expect(checked).toEqual(['agent', 'user']);
  });
});
