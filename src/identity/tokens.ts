// Agent tokens: EdDSA (Ed25519) JWTs minted by the operator's token service and verified by
// sidecars and tools. Pure: keys, clock and replay cache are passed in.
//
// Claims: `iss`; `sub` = `agent:NAMESPACE:NAME` (the agent the token is about); `aud`; `iat`,
// `nbf`, `exp`; `jti` (random UUID); `tenant`; `agent_id` (the AgentIdentity's name);
// `namespace`; `roles`, `scopes`; `pod` = `{name, uid}`, the pod of `sub` the token was issued to
// (the pod its projected ServiceAccount token is bound to, as Kubernetes' own `kubernetes.io.pod`);
// `one_time: true` on single-use tokens; `act` on delegated tokens, each level with the `pod` its
// agent exchanged from. An agent appears at most once in a chain: nobody acts for itself.
//
// Delegation follows RFC 8693: `sub` is the principal the call is made for, `act` the agent acting
// for it now, and each nested `act` an agent that acted before it. The `delegation` input of policy
// lists the agents that asked the current actor to make the call, nearest first: the nested actors
// from the outermost inwards, then the principal. `{sub: planner, act: {sub: finance}}` is the
// finance agent acting for the planner: actor finance, delegation [planner].

import { randomUUID } from 'node:crypto';
import { decodeProtectedHeader, errors, jwtVerify, SignJWT } from 'jose';
import type { JWTPayload } from 'jose';
import type { BundleKey, SigningKey } from '../bundle/index.ts';
import type { AgentTokenError } from './errors.ts';
import {
  DelegationTooDeepError,
  SelfDelegationError,
  TokenAlgorithmError,
  TokenAudienceError,
  TokenClaimsInvalidError,
  TokenExpiredError,
  TokenIssuerError,
  TokenKeyUnknownError,
  TokenMalformedError,
  TokenNotYetValidError,
  TokenReplayedError,
  TokenReplayUncheckedError,
  TokenSignatureInvalidError,
  TokenTenantError,
} from './errors.ts';
import type { ReplayCache } from './replay-cache.ts';

/** The only algorithm agent tokens are signed with; verifiers accept no other. */
export const AGENT_TOKEN_ALGORITHM = 'EdDSA';
export const DEFAULT_TOKEN_TTL_MS = 10 * 60_000;
/**
 * The longest lifetime a token may have, whatever `tokenTTL` says. Retired signing keys are kept
 * this long (plus the skew) after their successor took over, so no token outlives its key.
 */
export const MAX_TOKEN_TTL_MS = 60 * 60_000;
/** How far the verifier's clock may be from the issuer's, for `exp` and `nbf`. */
export const DEFAULT_CLOCK_SKEW_S = 30;
/** How many `act` levels a token may carry. */
export const DEFAULT_MAX_DELEGATION_DEPTH = 4;
/** Nesting beyond this is refused before the chain is even walked (a depth limit can be no higher). */
const HARD_DELEGATION_LIMIT = 32;

const SUBJECT = /^agent:([a-z0-9]([-a-z0-9]*[a-z0-9])?):([a-z0-9]([-.a-z0-9]*[a-z0-9])?)$/;

/** The pod a token was issued to: the one its ServiceAccount token was bound to. */
export interface PodBinding {
  name: string;
  uid: string;
}

/** An agent acting in a delegation chain (RFC 8693 `act`), with the pod it acts from. */
export interface Actor {
  sub: string;
  pod?: PodBinding;
  act?: Actor;
}

export interface AgentTokenClaims {
  iss: string;
  sub: string;
  aud: string;
  iat: number;
  nbf: number;
  exp: number;
  jti: string;
  tenant: string;
  agent_id: string;
  namespace: string;
  roles: string[];
  scopes: string[];
  pod?: PodBinding;
  one_time?: true;
  act?: Actor;
}

export function agentSubject(namespace: string, name: string): string {
  return `agent:${namespace}:${name}`;
}

/** The namespace and agent name of an `agent:NAMESPACE:NAME` subject; undefined for anything else. */
export function parseAgentSubject(sub: string): { namespace: string; name: string } | undefined {
  const match = SUBJECT.exec(sub);
  return match?.[1] !== undefined && match[3] !== undefined ? { namespace: match[1], name: match[3] } : undefined;
}

export interface MintRequest {
  issuer: string;
  audience: string;
  tenant: string;
  namespace: string;
  agent: string;
  roles?: readonly string[];
  scopes?: readonly string[];
  /** The pod of `agent` the token is issued to. */
  pod?: PodBinding;
  /** Capped at MAX_TOKEN_TTL_MS. */
  ttlMs: number;
  now: Date;
  /** The delegation chain: the agent acting for `agent` now, and those before it. */
  act?: Actor;
  /** A token that is not valid after this time whatever the TTL (a delegated token ends with the one it came from). */
  notAfter?: Date;
  oneTime?: boolean;
}

export interface MintedToken {
  token: string;
  claims: AgentTokenClaims;
}

export async function mintAgentToken(request: MintRequest, key: SigningKey): Promise<MintedToken> {
  const iat = Math.floor(request.now.getTime() / 1000);
  const ttlS = Math.max(1, Math.floor(Math.min(request.ttlMs, MAX_TOKEN_TTL_MS) / 1000));
  const notAfter = request.notAfter ? Math.floor(request.notAfter.getTime() / 1000) : Number.POSITIVE_INFINITY;
  const claims: AgentTokenClaims = {
    iss: request.issuer,
    sub: agentSubject(request.namespace, request.agent),
    aud: request.audience,
    iat,
    nbf: iat,
    exp: Math.min(iat + ttlS, notAfter),
    jti: randomUUID(),
    tenant: request.tenant,
    agent_id: request.agent,
    namespace: request.namespace,
    roles: [...(request.roles ?? [])],
    scopes: [...(request.scopes ?? [])],
    ...(request.pod !== undefined ? { pod: request.pod } : {}),
    ...(request.oneTime ? { one_time: true as const } : {}),
    ...(request.act ? { act: request.act } : {}),
  };
  const token = await new SignJWT(claims as unknown as JWTPayload)
    .setProtectedHeader({ alg: AGENT_TOKEN_ALGORITHM, kid: key.keyId, typ: 'JWT' })
    .sign(key.privateKey);
  return { token, claims };
}

export interface VerifyOptions {
  issuer: string;
  audience: string;
  /** The trusted public keys by key id (a JWKS, imported). */
  keys: ReadonlyMap<string, BundleKey>;
  /** When set, a token of any other tenant is refused. */
  tenant?: string;
  now?: Date;
  clockSkewS?: number;
  maxDelegationDepth?: number;
  /** Needed to accept one-time tokens; without it they are refused. */
  replayCache?: ReplayCache;
}

export interface VerifiedAgentToken {
  claims: AgentTokenClaims;
  /** The agent making the call: the outermost actor, or the subject when nobody acts for it. */
  actor: string;
  /** The agents that asked the actor to make the call, nearest first (see the top of this file). */
  delegation: string[];
}

/** Verifies an agent token. Rejects only with an AgentTokenError naming the reason. */
export async function verifyAgentToken(token: string, options: VerifyOptions): Promise<VerifiedAgentToken> {
  const now = options.now ?? new Date();
  const skewS = options.clockSkewS ?? DEFAULT_CLOCK_SKEW_S;
  const key = trustedKey(token, options.keys);
  let payload: JWTPayload;
  try {
    ({ payload } = await jwtVerify(token, key, {
      algorithms: [AGENT_TOKEN_ALGORITHM],
      issuer: options.issuer,
      audience: options.audience,
      clockTolerance: skewS,
      currentDate: now,
      requiredClaims: ['iat', 'nbf', 'exp', 'jti', 'sub'],
    }));
  } catch (error) {
    throw fromJoseError(error);
  }
  const claims = checkClaims(payload);
  if (options.tenant !== undefined && claims.tenant !== options.tenant) {
    throw new TokenTenantError(`the token is of tenant ${JSON.stringify(claims.tenant)}, not ${JSON.stringify(options.tenant)}`);
  }
  const chain = delegationChain(claims, options.maxDelegationDepth ?? DEFAULT_MAX_DELEGATION_DEPTH);
  if (claims.one_time) useOnce(claims, options.replayCache, now, skewS);
  return { claims, ...chain };
}

function trustedKey(token: string, keys: ReadonlyMap<string, BundleKey>): BundleKey {
  if (token.split('.').length !== 3) throw new TokenMalformedError('the token is not a compact JWS (three dot-separated parts)');
  let header: ReturnType<typeof decodeProtectedHeader>;
  try {
    header = decodeProtectedHeader(token);
  } catch (error) {
    throw new TokenMalformedError(`the token header is not base64url JSON: ${messageOf(error)}`, { cause: error });
  }
  // Checked before the key is looked up, so `none` and HMAC tokens are named for what they are.
  if (header.alg !== AGENT_TOKEN_ALGORITHM) {
    throw new TokenAlgorithmError(`the token is signed with ${JSON.stringify(header.alg ?? null)}; only ${AGENT_TOKEN_ALGORITHM} is accepted`);
  }
  const key = typeof header.kid === 'string' ? keys.get(header.kid) : undefined;
  if (key === undefined) throw new TokenKeyUnknownError(`the token's key id ${JSON.stringify(header.kid ?? null)} is not a trusted key`);
  return key;
}

function fromJoseError(error: unknown): AgentTokenError {
  const message = messageOf(error);
  if (error instanceof errors.JWTExpired) return new TokenExpiredError(`the token expired: ${message}`, { cause: error });
  if (error instanceof errors.JWTClaimValidationFailed) {
    switch (error.claim) {
      case 'nbf':
        return new TokenNotYetValidError(`the token is not valid yet: ${message}`, { cause: error });
      case 'aud':
        return new TokenAudienceError(`the token is not for this audience: ${message}`, { cause: error });
      case 'iss':
        return new TokenIssuerError(`the token is from another issuer: ${message}`, { cause: error });
      default:
        return new TokenClaimsInvalidError(`claim ${error.claim}: ${message}`, { cause: error });
    }
  }
  if (error instanceof errors.JWSSignatureVerificationFailed) return new TokenSignatureInvalidError('the token signature does not verify', { cause: error });
  if (error instanceof errors.JOSEAlgNotAllowed) return new TokenAlgorithmError(message, { cause: error });
  return new TokenMalformedError(`the token does not parse: ${message}`, { cause: error });
}

const isPodBinding = (value: unknown): value is PodBinding =>
  typeof value === 'object' && value !== null && !Array.isArray(value)
  && typeof (value as Record<string, unknown>).name === 'string' && (value as Record<string, unknown>).name !== ''
  && typeof (value as Record<string, unknown>).uid === 'string' && (value as Record<string, unknown>).uid !== '';

const isStringList = (value: unknown): value is string[] => Array.isArray(value) && value.every((v) => typeof v === 'string');

function checkClaims(payload: JWTPayload): AgentTokenClaims {
  const p = payload as Record<string, unknown>;
  const fail = (what: string): never => {
    throw new TokenClaimsInvalidError(`the token's ${what}`);
  };
  if (typeof p.sub !== 'string' || parseAgentSubject(p.sub) === undefined) fail('sub is not agent:NAMESPACE:NAME');
  const subject = parseAgentSubject(p.sub as string);
  if (typeof p.aud !== 'string') fail('aud is not one string');
  if (typeof p.jti !== 'string' || p.jti === '') fail('jti is missing');
  if (typeof p.tenant !== 'string' || p.tenant === '') fail('tenant is missing');
  if (p.agent_id !== subject?.name || p.namespace !== subject?.namespace) fail('agent_id and namespace do not match its sub');
  if (!isStringList(p.roles) || !isStringList(p.scopes)) fail('roles or scopes are not lists of strings');
  if (p.pod !== undefined && !isPodBinding(p.pod)) fail('pod is not {name, uid}');
  if (p.one_time !== undefined && p.one_time !== true) fail('one_time is not true');
  const lifetime = (p.exp as number) - (p.iat as number);
  if (!(lifetime > 0 && lifetime * 1000 <= MAX_TOKEN_TTL_MS)) fail(`lifetime of ${String(lifetime)} s is not within (0, ${String(MAX_TOKEN_TTL_MS / 1000)}] s`);
  return payload as unknown as AgentTokenClaims;
}

/**
 * The actor and the agents that asked it, checking every `act` level's shape, the depth, and that
 * no agent appears twice (as principal and actor, or as two actors): nobody delegates to itself.
 */
export function delegationChain(claims: Pick<AgentTokenClaims, 'sub' | 'act'>, maxDepth: number): { actor: string; delegation: string[] } {
  const actors: string[] = [];
  const seen = new Set([claims.sub]);
  // Read as unknown: the claims' shape below `act` is the token's word, not yet checked.
  let level = claims.act as unknown;
  while (level !== undefined) {
    if (actors.length >= Math.min(maxDepth, HARD_DELEGATION_LIMIT)) {
      throw new DelegationTooDeepError(`the delegation chain is deeper than ${String(maxDepth)} act levels`);
    }
    const act = typeof level === 'object' && level !== null ? (level as Record<string, unknown>) : {};
    const subject = typeof act.sub === 'string' ? parseAgentSubject(act.sub) : undefined;
    if (subject === undefined) throw new TokenClaimsInvalidError(`act level ${String(actors.length + 1)} has no agent:NAMESPACE:NAME sub`);
    if (act.pod !== undefined && !isPodBinding(act.pod)) throw new TokenClaimsInvalidError(`act level ${String(actors.length + 1)}'s pod is not {name, uid}`);
    if (seen.has(act.sub as string)) throw new SelfDelegationError(`${String(act.sub)} appears twice in the delegation chain: an agent cannot act for a chain it is already part of`);
    seen.add(act.sub as string);
    actors.push(subject.name);
    level = act.act;
  }
  const principal = parseAgentSubject(claims.sub)?.name ?? claims.sub;
  const [actor, ...before] = actors;
  return actor === undefined ? { actor: principal, delegation: [] } : { actor, delegation: [...before, principal] };
}

/** The pod of the agent acting now: the outermost actor's, or the subject's when nobody acts for it. */
export function actingPod(claims: Pick<AgentTokenClaims, 'pod' | 'act'>): PodBinding | undefined {
  return claims.act === undefined ? claims.pod : claims.act.pod;
}

function useOnce(claims: AgentTokenClaims, cache: ReplayCache | undefined, now: Date, skewS: number): void {
  if (!cache) throw new TokenReplayUncheckedError('a one-time token needs a replay cache, and this verifier has none');
  const verdict = cache.use(`${claims.iss} ${claims.jti}`, (claims.exp + skewS) * 1000, now.getTime());
  if (verdict === 'replayed') throw new TokenReplayedError(`the one-time token ${claims.jti} was already used`);
  if (verdict === 'full') throw new TokenReplayUncheckedError('the replay cache is full of unexpired one-time tokens');
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
