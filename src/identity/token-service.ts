// The token service's core: a pod's ServiceAccount token in, an agent token out. Every
// collaborator (TokenReview, the AgentIdentity directory, the keyring, the clock) is passed in, so
// this file has no I/O and the HTTP edge (./http.ts) only decodes and maps errors.
//
// Exchange (POST /v1/token):
// 1. The ServiceAccount token (audience `portcullis`) is checked with a TokenReview. Its user must
//    be `system:serviceaccount:NAMESPACE:NAME`, and it must be bound to a pod: the review's extra
//    `authentication.kubernetes.io/pod-name` and `pod-uid`, which the API server sets only for
//    tokens bound to a pod (a pod's projected token). `kubectl create token` without
//    `--bound-object-kind Pod`, or a Secret's token, is refused.
// 2. The agent is the AgentIdentity of that namespace whose serviceAccountName is NAME (the request
//    may name one when several share the ServiceAccount; naming one bound to another ServiceAccount
//    is refused). Unknown, suspended and revoked (`revokedBefore` after the credential was issued)
//    agents are refused.
// 3. The pod is read from the API server (one GET, never a cache, so a pod deleted a moment ago is
//    gone): it must exist with the bound uid, run as the ServiceAccount, not be finished or being
//    deleted, and carry the injection annotation, which admission lets only injected pods carry.
//    The agent token names that pod and ends no later than the ServiceAccount token.
// 4. With a `subject_token` (an agent token of the same tenant), the caller's agent acts for that
//    token's agent: the new token is about the principal (its `pod` the principal's), with the
//    caller and its pod added as the outermost `act` (RFC 8693), ending no later than the subject
//    token. An agent already in the subject token's chain cannot act for it.
//
// A ServiceAccount token may be exchanged more than once: the kubelet hands the pod the same
// projected token until 80 % of its lifetime and the sidecar exchanges it again at every refresh.
// What limits a copied token is its pod: it is exchanged only while that pod runs.

import { INJECTED_ANNOTATION } from '../api/labels.ts';
import type { BundleJwks } from '../bundle/index.ts';
import {
  AgentAmbiguousError,
  AgentRevokedError,
  AgentSuspendedError,
  AgentUnknownError,
  NotAServiceAccountError,
  PodIneligibleError,
  PodUnboundError,
  PodUnknownError,
  RateLimitedError,
  SelfDelegationError,
  ServiceAccountMismatchError,
  ServiceAccountUnauthenticatedError,
} from './errors.ts';
import type { TokenKeyring } from './keyring.ts';
import type { Actor, AgentTokenClaims, PodBinding } from './tokens.ts';
import { AGENT_TOKEN_ALGORITHM, agentSubject, DEFAULT_MAX_DELEGATION_DEPTH, DEFAULT_TOKEN_TTL_MS, mintAgentToken, parseAgentSubject, verifyAgentToken } from './tokens.ts';

/** The audience pods' projected ServiceAccount tokens must carry. */
export const SERVICE_ACCOUNT_TOKEN_AUDIENCE = 'portcullis';
/** The audience of the agent tokens the service mints. */
export const AGENT_TOKEN_AUDIENCE = 'portcullis-agent';
/** The TokenReview's extra keys naming the pod a ServiceAccount token is bound to. */
export const POD_NAME_EXTRA = 'authentication.kubernetes.io/pod-name';
export const POD_UID_EXTRA = 'authentication.kubernetes.io/pod-uid';
export const JWT_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:jwt';

/** What a TokenReview said about a token. */
export interface ServiceAccountReview {
  authenticated: boolean;
  username?: string;
  extra?: Record<string, string[] | undefined>;
  audiences?: string[];
  error?: string;
}

/** Reviews a ServiceAccount token; throws TokenReviewUnavailableError when the review cannot be made. */
export type ReviewToken = (token: string) => Promise<ServiceAccountReview>;

/** A pod as the exchange judges it. */
export interface PodRecord {
  uid: string;
  serviceAccountName: string;
  /** `status.phase`: Pending, Running, Succeeded, Failed, Unknown. */
  phase?: string;
  /** `metadata.deletionTimestamp` is set. */
  deleting: boolean;
  /** It carries the injection annotation. */
  injected: boolean;
}

/** Reads a pod; undefined when it does not exist; throws PodLookupUnavailableError when it cannot be read. */
export type LookupPod = (namespace: string, name: string) => Promise<PodRecord | undefined>;

/** An AgentIdentity as the service needs it. */
export interface AgentRecord {
  namespace: string;
  name: string;
  tenant: string;
  serviceAccountName: string;
  roles: string[];
  scopes: string[];
  tokenTTLMs?: number;
  suspended: boolean;
  revokedBefore?: Date;
}

export interface AgentDirectory {
  /** The agents of a namespace bound to a ServiceAccount. */
  boundTo(namespace: string, serviceAccount: string): AgentRecord[];
  get(namespace: string, name: string): AgentRecord | undefined;
}

export interface TokenServiceOptions {
  issuer: string;
  reviewToken: ReviewToken;
  lookupPod: LookupPod;
  agents: AgentDirectory;
  keyring: () => TokenKeyring;
  now?: () => Date;
  audience?: string;
  maxDelegationDepth?: number;
  /** Tokens a ServiceAccount may get per second on average, and at once. */
  rateLimit?: { perSecond: number; burst: number };
  /** Told of every token issued (the status writer listens). */
  onIssued?: (agent: AgentRecord, at: Date) => void;
}

export interface TokenExchangeRequest {
  serviceAccountToken: string;
  /** The AgentIdentity to be, when several are bound to the caller's ServiceAccount. */
  agent?: string;
  /** An agent token to act for (delegation). */
  subjectToken?: string;
}

/** RFC 8693 §2.2.1 response fields. */
export interface TokenExchangeResponse {
  access_token: string;
  issued_token_type: typeof JWT_TOKEN_TYPE;
  token_type: 'Bearer';
  expires_in: number;
}

export interface IssuedToken {
  response: TokenExchangeResponse;
  claims: AgentTokenClaims;
}

const SERVICE_ACCOUNT_USER = /^system:serviceaccount:([^:]+):([^:]+)$/;

/** Who presented the ServiceAccount token, as the TokenReview and the token itself say. */
interface Caller {
  namespace: string;
  serviceAccount: string;
  pod?: PodBinding;
  issuedAt?: Date;
  expiresAt?: Date;
}

export class TokenService {
  private readonly options: TokenServiceOptions;
  private readonly buckets = new Map<string, { tokens: number; atMs: number }>();

  constructor(options: TokenServiceOptions) {
    this.options = options;
  }

  get issuer(): string {
    return this.options.issuer;
  }

  get audience(): string {
    return this.options.audience ?? AGENT_TOKEN_AUDIENCE;
  }

  async exchange(request: TokenExchangeRequest): Promise<IssuedToken> {
    const now = this.now();
    const caller = await this.reviewedCaller(request.serviceAccountToken);
    this.takeRateToken(`${caller.namespace}/${caller.serviceAccount}`, now);
    const agent = this.callerAgent(caller, request.agent);
    checkUsable(agent, caller.issuedAt);
    const pod = await this.runningPod(caller);
    const keyring = this.options.keyring();
    const ttlMs = agent.tokenTTLMs ?? DEFAULT_TOKEN_TTL_MS;
    const base = { issuer: this.issuer, audience: this.audience, now };
    let minted;
    if (request.subjectToken === undefined) {
      minted = await mintAgentToken(
        { ...base, tenant: agent.tenant, namespace: agent.namespace, agent: agent.name, roles: agent.roles, scopes: agent.scopes, ttlMs, pod, ...(caller.expiresAt ? { notAfter: caller.expiresAt } : {}) },
        keyring.signingKey(now),
      );
    } else {
      const { principal, principalPod, act, notAfter } = await this.delegation(request.subjectToken, agent, pod, keyring, now);
      minted = await mintAgentToken(
        {
          ...base, tenant: principal.tenant, namespace: principal.namespace, agent: principal.name, roles: principal.roles, scopes: principal.scopes,
          ttlMs: Math.min(ttlMs, principal.tokenTTLMs ?? DEFAULT_TOKEN_TTL_MS), act, notAfter: earliest(notAfter, caller.expiresAt), ...(principalPod ? { pod: principalPod } : {}),
        },
        keyring.signingKey(now),
      );
    }
    this.options.onIssued?.(agent, now);
    return {
      claims: minted.claims,
      response: { access_token: minted.token, issued_token_type: JWT_TOKEN_TYPE, token_type: 'Bearer', expires_in: minted.claims.exp - minted.claims.iat },
    };
  }

  async jwks(): Promise<BundleJwks> {
    return this.options.keyring().jwks();
  }

  /** The OpenID Provider metadata verifiers need to find the keys (OIDC Discovery 1.0 §3). */
  discovery(): Record<string, unknown> {
    return {
      issuer: this.issuer,
      jwks_uri: `${this.issuer.replace(/\/$/, '')}/.well-known/jwks.json`,
      token_endpoint: `${this.issuer.replace(/\/$/, '')}/v1/token`,
      response_types_supported: ['id_token'],
      subject_types_supported: ['public'],
      id_token_signing_alg_values_supported: [AGENT_TOKEN_ALGORITHM],
      grant_types_supported: ['urn:ietf:params:oauth:grant-type:token-exchange'],
      claims_supported: ['iss', 'sub', 'aud', 'iat', 'nbf', 'exp', 'jti', 'tenant', 'agent_id', 'namespace', 'roles', 'scopes', 'pod', 'act', 'one_time'],
    };
  }

  private now(): Date {
    return this.options.now?.() ?? new Date();
  }

  private async reviewedCaller(token: string): Promise<Caller> {
    const review = await this.options.reviewToken(token);
    if (!review.authenticated) {
      throw new ServiceAccountUnauthenticatedError(`the ServiceAccount token was not accepted by the API server${review.error ? `: ${review.error}` : ''}`);
    }
    if (review.audiences !== undefined && !review.audiences.includes(SERVICE_ACCOUNT_TOKEN_AUDIENCE)) {
      throw new ServiceAccountUnauthenticatedError(`the ServiceAccount token is not for audience ${SERVICE_ACCOUNT_TOKEN_AUDIENCE}`);
    }
    const match = SERVICE_ACCOUNT_USER.exec(review.username ?? '');
    if (match?.[1] === undefined || match[2] === undefined) throw new NotAServiceAccountError(`${JSON.stringify(review.username ?? '')} is not a ServiceAccount`);
    const pod = podBindingOf(review.extra);
    const { issuedAt, expiresAt } = lifetimeOf(token);
    return { namespace: match[1], serviceAccount: match[2], ...(pod ? { pod } : {}), ...(issuedAt ? { issuedAt } : {}), ...(expiresAt ? { expiresAt } : {}) };
  }

  /** The caller's pod, read now, when it may hold an agent token; refused with the reason otherwise. */
  private async runningPod(caller: Caller): Promise<PodBinding> {
    const who = `ServiceAccount ${caller.namespace}/${caller.serviceAccount}`;
    if (caller.pod === undefined) {
      throw new PodUnboundError(`the token of ${who} is bound to no pod (as \`kubectl create token\` makes without --bound-object-kind Pod): only a pod's projected ServiceAccount token is exchanged`);
    }
    checkPod(caller, caller.pod, await this.options.lookupPod(caller.namespace, caller.pod.name));
    return caller.pod;
  }

  private callerAgent(caller: { namespace: string; serviceAccount: string }, wanted: string | undefined): AgentRecord {
    const who = `ServiceAccount ${caller.namespace}/${caller.serviceAccount}`;
    if (wanted !== undefined) {
      const agent = this.options.agents.get(caller.namespace, wanted);
      if (!agent) throw new AgentUnknownError(`no AgentIdentity ${caller.namespace}/${wanted}`);
      if (agent.serviceAccountName !== caller.serviceAccount) {
        throw new ServiceAccountMismatchError(`AgentIdentity ${caller.namespace}/${wanted} is bound to ServiceAccount ${agent.serviceAccountName}, not the caller's ${who}`);
      }
      return agent;
    }
    const bound = this.options.agents.boundTo(caller.namespace, caller.serviceAccount);
    const [agent, ...others] = bound;
    if (!agent) throw new AgentUnknownError(`no AgentIdentity in namespace ${caller.namespace} is bound to ${who}`);
    if (others.length > 0) throw new AgentAmbiguousError(`${who} is bound to ${bound.map((a) => a.name).join(', ')}: name one as "agent"`);
    return agent;
  }

  private async delegation(
    subjectToken: string,
    actor: AgentRecord,
    actorPod: PodBinding,
    keyring: TokenKeyring,
    now: Date,
  ): Promise<{ principal: AgentRecord; principalPod?: PodBinding; act: Actor; notAfter: Date }> {
    const maxDepth = this.options.maxDelegationDepth ?? DEFAULT_MAX_DELEGATION_DEPTH;
    // One level below the limit: the caller adds one.
    const subject = await verifyAgentToken(subjectToken, {
      issuer: this.issuer,
      audience: this.audience,
      keys: keyring.publicKeys,
      tenant: actor.tenant,
      now,
      maxDelegationDepth: maxDepth - 1,
    });
    const { namespace, name } = parseAgentSubject(subject.claims.sub) ?? { namespace: '', name: '' };
    const principal = this.options.agents.get(namespace, name);
    if (!principal) throw new AgentUnknownError(`the subject token's agent ${namespace}/${name} has no AgentIdentity`);
    checkUsable(principal, new Date(subject.claims.iat * 1000));
    const actorSubject = agentSubject(actor.namespace, actor.name);
    if (chainOf(subject.claims).includes(actorSubject)) {
      throw new SelfDelegationError(`${actorSubject} cannot act for a token whose delegation chain it is already part of (${chainOf(subject.claims).join(' <- ')})`);
    }
    const act: Actor = { sub: actorSubject, pod: actorPod, ...(subject.claims.act ? { act: subject.claims.act } : {}) };
    return { principal, ...(subject.claims.pod ? { principalPod: subject.claims.pod } : {}), act, notAfter: new Date(subject.claims.exp * 1000) };
  }

  private takeRateToken(key: string, now: Date): void {
    const limit = this.options.rateLimit;
    if (!limit) return;
    const nowMs = now.getTime();
    const bucket = this.buckets.get(key) ?? { tokens: limit.burst, atMs: nowMs };
    const tokens = Math.min(limit.burst, bucket.tokens + ((nowMs - bucket.atMs) / 1000) * limit.perSecond);
    if (tokens < 1) {
      this.buckets.set(key, { tokens, atMs: nowMs });
      throw new RateLimitedError(`${key} asked for tokens faster than ${String(limit.perSecond)} per second`);
    }
    this.buckets.set(key, { tokens: tokens - 1, atMs: nowMs });
  }
}

function checkUsable(agent: AgentRecord, credentialIssuedAt: Date | undefined): void {
  const id = `${agent.namespace}/${agent.name}`;
  if (agent.suspended) throw new AgentSuspendedError(`agent ${id} is suspended`);
  if (agent.revokedBefore && (!credentialIssuedAt || credentialIssuedAt < agent.revokedBefore)) {
    throw new AgentRevokedError(`agent ${id} revoked credentials issued before ${agent.revokedBefore.toISOString()}`);
  }
}

/** The pod a reviewed token is bound to: both its name and its uid, or none. */
function podBindingOf(extra: ServiceAccountReview['extra']): PodBinding | undefined {
  const name = extra?.[POD_NAME_EXTRA];
  const uid = extra?.[POD_UID_EXTRA];
  // One value each, as the API server writes them; anything else is not a binding we can read one way.
  if (name?.length !== 1 || uid?.length !== 1 || !name[0] || !uid[0]) return undefined;
  return { name: name[0], uid: uid[0] };
}

/** Why the pod a token is bound to may not hold an agent token, thrown; nothing when it may. */
export function checkPod(caller: Pick<Caller, 'namespace' | 'serviceAccount'>, bound: PodBinding, pod: PodRecord | undefined): void {
  const id = `pod ${caller.namespace}/${bound.name}`;
  if (pod === undefined) throw new PodUnknownError(`${id}, which the ServiceAccount token is bound to, does not exist`);
  if (pod.uid !== bound.uid) throw new PodUnknownError(`${id} is another pod (uid ${pod.uid}) than the ServiceAccount token is bound to (uid ${bound.uid})`);
  if (pod.serviceAccountName !== caller.serviceAccount) {
    throw new PodIneligibleError(`${id} runs as ServiceAccount ${pod.serviceAccountName}, not ${caller.serviceAccount}`);
  }
  if (pod.deleting) throw new PodIneligibleError(`${id} is being deleted`);
  if (pod.phase === 'Succeeded' || pod.phase === 'Failed') throw new PodIneligibleError(`${id} has finished (phase ${pod.phase})`);
  if (!pod.injected) throw new PodIneligibleError(`${id} was not injected (no ${INJECTED_ANNOTATION} annotation): agent tokens are only for pods with the Portcullis sidecar`);
}

/** Every agent of a token's chain: the principal, then each actor from the outside in. */
function chainOf(claims: Pick<AgentTokenClaims, 'sub' | 'act'>): string[] {
  const agents = [claims.sub];
  for (let act = claims.act; act !== undefined; act = act.act) agents.push(act.sub);
  return agents;
}

function earliest(a: Date, b: Date | undefined): Date {
  return b !== undefined && b < a ? b : a;
}

/**
 * The `iat` and `exp` of a JWT, read without verifying: only called on a token the API server has
 * just authenticated. Undefined when the token has none (a legacy Secret token has no `iat`, which
 * a revocation refuses).
 */
function lifetimeOf(token: string): { issuedAt?: Date; expiresAt?: Date } {
  try {
    const payload = JSON.parse(Buffer.from(token.split('.')[1] ?? '', 'base64url').toString('utf8')) as { iat?: unknown; exp?: unknown };
    return {
      ...(typeof payload.iat === 'number' ? { issuedAt: new Date(payload.iat * 1000) } : {}),
      ...(typeof payload.exp === 'number' ? { expiresAt: new Date(payload.exp * 1000) } : {}),
    };
  } catch {
    return {};
  }
}
