// The one decision core every transport calls: authorize(call) → decision.
// It fixes who is asking (the sidecar's own agent, never the caller's word),
// fails closed when no policy is loaded, and gives every answer an id, a
// latency observation and a count.
import { randomUUID } from 'node:crypto';
import type { AuthorizationDecision } from '../compiler/index.ts';
import { BUILTIN_RULES, InputError } from '../compiler/index.ts';
import type { LoadedPolicy } from './bundle-verdict.ts';
import type { SidecarMetrics } from './metrics.ts';

/** Rules the sidecar names when it decides without the policy. They hold a colon, which no rule name can. */
export const SIDECAR_RULES = {
  noBundle: 'portcullis:no-bundle',
  /** A proxied request the sidecar cannot read whole and unambiguously (envoy-check.ts). */
  uninspectable: 'portcullis:uninspectable-request',
  evaluationError: BUILTIN_RULES.evaluationError,
} as const;

export type Transport = 'http' | 'grpc';

export interface SidecarDecision extends AuthorizationDecision {
  /** Unique per answer: logs, metrics exemplars and the caller's error all name it. */
  decisionId: string;
}

/** The identity the sidecar answers for, from its configuration. */
export interface AgentIdentity {
  namespace: string;
  agent: string;
}

export interface AuthorizerOptions {
  identity: AgentIdentity;
  /** The loaded policy, read at every call so a swapped bundle takes effect on the next one. */
  policy: () => LoadedPolicy | undefined;
  metrics: SidecarMetrics;
  newId?: () => string;
}

/**
 * Fields a caller may not assert: the agent and namespace are the sidecar's own,
 * user and delegation will come only from verified tokens, time is the
 * sidecar's clock, and counters are the sidecar's state.
 */
const ASSERTED_BY_SIDECAR = new Set(['namespace', 'agent', 'user', 'delegation', 'time', 'counters']);

/** The caller's call with what only the sidecar may say replaced by what it knows. */
export function callOf(request: Record<string, unknown>, identity: AgentIdentity): Record<string, unknown> {
  const call: Record<string, unknown> = {};
  for (const [field, value] of Object.entries(request)) {
    if (!ASSERTED_BY_SIDECAR.has(field)) call[field] = value;
  }
  return { ...call, namespace: identity.namespace, agent: identity.agent };
}

export class Authorizer {
  private readonly options: AuthorizerOptions;
  private readonly newId: () => string;

  constructor(options: AuthorizerOptions) {
    this.options = options;
    this.newId = options.newId ?? randomUUID;
  }

  get ready(): boolean {
    return this.options.policy() !== undefined;
  }

  /**
   * Decides a call. Throws InputError when the call does not have the contract's
   * shape (the transport answers 400); anything else is a decision, and every
   * failure a deny.
   */
  authorize(request: Record<string, unknown>, transport: Transport): SidecarDecision {
    const started = process.hrtime.bigint();
    const decision = { ...this.decide(callOf(request, this.options.identity)), decisionId: this.newId() };
    const egress = request.egress as { host?: unknown } | undefined;
    const tool = typeof request.tool === 'string' ? request.tool : typeof egress?.host === 'string' ? `egress:${egress.host}` : '';
    this.record(decision, tool, transport, started);
    return decision;
  }

  /** Denies a request that could not be turned into a call, as a decision like any other. */
  refuse(reason: string, transport: Transport): SidecarDecision {
    const started = process.hrtime.bigint();
    const decision: SidecarDecision = {
      decision: 'deny',
      enforced: true,
      policy: null,
      rule: SIDECAR_RULES.uninspectable,
      revision: this.options.policy()?.revision ?? '',
      reasons: [reason],
      decisionId: this.newId(),
    };
    this.record(decision, '', transport, started);
    return decision;
  }

  private record(decision: SidecarDecision, tool: string, transport: Transport, started: bigint): void {
    const { metrics } = this.options;
    metrics.decisionDuration.observe({ transport }, Number(process.hrtime.bigint() - started) / 1e9);
    metrics.decisions.inc({ decision: decision.decision, enforced: String(decision.enforced), policy: decision.policy ?? '', rule: decision.rule, tool });
  }

  private decide(call: Record<string, unknown>): AuthorizationDecision {
    const policy = this.options.policy();
    if (policy === undefined) {
      return { decision: 'deny', enforced: true, policy: null, rule: SIDECAR_RULES.noBundle, revision: '', reasons: ['no valid policy bundle is loaded yet'] };
    }
    try {
      return policy.authorize(call);
    } catch (error) {
      if (error instanceof InputError) throw error;
      return {
        decision: 'deny',
        enforced: true,
        policy: null,
        rule: SIDECAR_RULES.evaluationError,
        revision: policy.revision,
        reasons: [`evaluation failed: ${error instanceof Error ? error.message : String(error)}`],
      };
    }
  }
}
