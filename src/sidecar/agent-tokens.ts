// Agent tokens at the sidecar: the agent's own token (fetched from the token
// service, sent upstream on every allowed tool call so tools can verify who
// called; never on egress, see decideProxied in envoy-check.ts)
// and the token an agent forwards with a call it makes for another agent
// (RFC 8693 delegation: `{sub: planner, act: {sub: finance}}`), verified here
// and turned into the `delegation` input of policy. Suspension and
// `revokedBefore` come from the loaded bundle, so they take effect through the
// same fast path as every policy change.
import type { BundleKey } from '../bundle/index.ts';
// The identity modules themselves, not identity/index.ts: that also holds the token service and its Kubernetes client.
import { AgentTokenError } from '../identity/errors.ts';
import { keyIdOfToken } from '../identity/jwks-source.ts';
import { ReplayCache } from '../identity/replay-cache.ts';
import { AGENT_TOKEN_AUDIENCE } from '../identity/token-service.ts';
import type { AgentTokenClaims, VerifiedAgentToken } from '../identity/tokens.ts';
import { actingPod, agentSubject, parseAgentSubject, verifyAgentToken } from '../identity/tokens.ts';
import type { AgentIdentity, VerifiedFacts } from './authorizer.ts';
import type { LoadedPolicy } from './bundle-verdict.ts';

/** The header that carries an agent token: forwarded by the agent, and set upstream by the sidecar. */
export const AGENT_TOKEN_HEADER = 'x-portcullis-agent-token';

export type TokenVerdict = { facts: VerifiedFacts; forwarded: boolean } | { refuse: string };

/** The agent's own token, as AgentTokenSource holds it. */
export interface OwnToken {
  readonly current: string | undefined;
  /** Fetches a new token now (after a revocation), without waiting for the refresh timer. */
  renew(): void;
}

export interface AgentTokensOptions {
  identity: AgentIdentity;
  tenant: string;
  /** The token service's issuer, which every agent token must name. */
  issuer: string;
  jwks: { keysFor(kid: string | undefined): Promise<ReadonlyMap<string, BundleKey>> };
  policy: () => LoadedPolicy | undefined;
  /** Without it the sidecar holds no token of its own (no token service configured). */
  own?: OwnToken;
  /**
   * The pod the sidecar runs in (POD_NAME): its own token, and a forwarded token's acting agent,
   * must have been issued to this pod. Unset outside a pod, where no pod is checked.
   */
  pod?: string;
  /**
   * The uid of that pod (POD_UID), compared too when given: a pod re-created under the same name
   * is another pod, and a token issued to the old one is not this one's.
   */
  podUid?: string;
  maxDelegationDepth?: number;
  /** One-time tokens are accepted once per sidecar. */
  replayCache?: ReplayCache;
  now?: () => Date;
}

/** The payload of a compact JWS, read without verifying it: only for a token this sidecar was given by its token service. */
function unverifiedClaims(token: string): Partial<AgentTokenClaims> | undefined {
  try {
    const claims: unknown = JSON.parse(Buffer.from(token.split('.')[1] ?? '', 'base64url').toString('utf8'));
    return typeof claims === 'object' && claims !== null ? claims : undefined;
  } catch {
    return undefined;
  }
}

/** The name and uid of an unverified `pod` claim, as far as it has the shape the token service writes. */
function podOf(pod: unknown): { name?: string; uid?: string } {
  if (typeof pod !== 'object' || pod === null) return {};
  const { name, uid } = pod as { name?: unknown; uid?: unknown };
  return { ...(typeof name === 'string' ? { name } : {}), ...(typeof uid === 'string' ? { uid } : {}) };
}

function podText(pod: { name?: string; uid?: string }, withUid: boolean): string {
  if (pod.name === undefined) return 'no pod';
  return withUid ? `pod ${pod.name} (uid ${pod.uid ?? 'none'})` : `pod ${pod.name}`;
}

/** Every agent named by a token: its principal, then the actors of its `act` chain. */
function agentsOf(claims: AgentTokenClaims): string[] {
  const subjects = [claims.sub];
  for (let act = claims.act; act !== undefined; act = act.act) subjects.push(act.sub);
  return subjects;
}

/** The current actor's subject (the top-level `act`, RFC 8693): the agent making the call. */
function actorSubject(claims: AgentTokenClaims): string {
  return claims.act?.sub ?? claims.sub;
}

export class AgentTokens {
  private readonly options: AgentTokensOptions;
  private readonly replayCache: ReplayCache;

  constructor(options: AgentTokensOptions) {
    this.options = options;
    this.replayCache = options.replayCache ?? new ReplayCache();
  }

  /**
   * What the tokens of a call say, or why it must be refused: the sidecar's own
   * token must be current and not revoked, and a forwarded token must verify,
   * name this agent as its actor, and name no suspended or revoked agent.
   */
  async verify(headers: ReadonlyMap<string, string>): Promise<TokenVerdict> {
    const own = this.checkOwnToken();
    if (own !== undefined) return { refuse: own };
    const forwarded = headers.get(AGENT_TOKEN_HEADER);
    if (forwarded === undefined || forwarded === '') return { facts: {}, forwarded: false };
    let verified: VerifiedAgentToken;
    try {
      verified = await verifyAgentToken(forwarded, {
        issuer: this.options.issuer,
        audience: AGENT_TOKEN_AUDIENCE,
        keys: await this.options.jwks.keysFor(keyIdOfToken(forwarded)),
        tenant: this.options.tenant,
        now: this.now(),
        replayCache: this.replayCache,
        ...(this.options.maxDelegationDepth === undefined ? {} : { maxDelegationDepth: this.options.maxDelegationDepth }),
      });
    } catch (error) {
      if (error instanceof AgentTokenError) return { refuse: `the forwarded agent token is refused (${error.code}): ${error.message}` };
      return { refuse: `the forwarded agent token cannot be verified: ${error instanceof Error ? error.message : String(error)}` };
    }
    const { namespace, agent } = this.options.identity;
    const actor = actorSubject(verified.claims);
    if (actor !== agentSubject(namespace, agent)) {
      return { refuse: `the forwarded agent token is for ${actor} to act, not for this agent (${agentSubject(namespace, agent)})` };
    }
    // The principal's pod (and those of earlier actors) are other pods: only the acting one is ours.
    const acting = podOf(actingPod(verified.claims));
    const other = this.otherPod(acting, 'from');
    if (other !== undefined) return { refuse: `the forwarded agent token was issued for ${actor} to act from ${other}` };
    const standing = this.standingOf(agentsOf(verified.claims), verified.claims.iat);
    if (standing !== undefined) return { refuse: standing };
    return { facts: verified.delegation.length === 0 ? {} : { delegation: verified.delegation }, forwarded: true };
  }

  /**
   * Headers for the upstream request of an allowed tool call, given the request's headers: the
   * agent's own token, unless the call carries a token (verified before it was allowed), which
   * stays. Only for a call decided as a declared tool's: the token is a credential for the tools.
   */
  upstreamHeaders(requestHeaders: ReadonlyMap<string, string>): Record<string, string> {
    if ((requestHeaders.get(AGENT_TOKEN_HEADER) ?? '') !== '') return {};
    const token = this.options.own?.current;
    return token === undefined ? {} : { [AGENT_TOKEN_HEADER]: token };
  }


  /** Why the sidecar's own token cannot be used, or undefined when it can (or there is none to use). */
  private checkOwnToken(): string | undefined {
    const own = this.options.own;
    if (own === undefined) return undefined;
    const token = own.current;
    if (token === undefined) return 'the sidecar holds no current agent token (the token service has not issued one)';
    const claims = unverifiedClaims(token);
    const iat = claims?.iat;
    const other = this.otherPod(podOf(claims?.pod), 'to');
    if (other !== undefined) return `the sidecar's own agent token was issued to ${other}`;
    const { namespace, agent } = this.options.identity;
    const revokedBefore = this.options.policy()?.standing(namespace, agent)?.revokedBefore;
    if (revokedBefore !== undefined && (typeof iat !== 'number' || iat * 1000 < revokedBefore.getTime())) {
      own.renew();
      return `the agent's tokens issued before ${revokedBefore.toISOString()} are revoked; a new one has been asked for`;
    }
    return undefined;
  }

  /** Why one of these agents may not take part in a call, judged by the loaded bundle. */
  private standingOf(subjects: string[], issuedAtS: number): string | undefined {
    const policy = this.options.policy();
    if (policy === undefined) return 'no valid policy bundle is loaded to check the agents of the forwarded token';
    for (const subject of subjects) {
      const parsed = parseAgentSubject(subject);
      const standing = parsed === undefined ? undefined : policy.standing(parsed.namespace, parsed.name);
      if (standing === undefined) return `the forwarded agent token names ${subject}, which is not an agent of tenant ${this.options.tenant}`;
      if (standing.suspended) return `the forwarded agent token names ${subject}, which is suspended`;
      if (standing.revokedBefore !== undefined && issuedAtS * 1000 < standing.revokedBefore.getTime()) {
        return `the forwarded agent token was issued before ${subject}'s tokens were revoked (${standing.revokedBefore.toISOString()})`;
      }
    }
    return undefined;
  }

  /**
   * How a token's pod differs from this sidecar's ("pod X, not this pod (Y)"), or undefined when
   * it is this pod: by name, and by uid when the sidecar knows its own. Outside a pod nothing is checked.
   */
  private otherPod(pod: { name?: string; uid?: string }, preposition: 'to' | 'from'): string | undefined {
    const { pod: name, podUid } = this.options;
    if (name === undefined) return undefined;
    if (pod.name !== name) return `${podText(pod, false)}, not ${preposition} this pod (${name})`;
    if (podUid === undefined || pod.uid === podUid) return undefined;
    return `${podText(pod, true)}, an earlier pod of that name, not ${preposition} this pod (uid ${podUid})`;
  }

  private now(): Date {
    return this.options.now?.() ?? new Date();
  }
}
