// The one decision core every transport calls: authorize(call, context) →
// decision. It fixes who is asking (the sidecar's own agent, never the
// caller's word; user and delegation only from verified tokens), keeps the
// counters of stateful conditions through a CounterStore, fails closed when no
// policy is loaded or it cannot decide (save a read-only action the bundle
// declares fail-open for that cause), and gives every answer an id, a latency
// observation, a count and a record for each observer (audit, traces).
import { randomUUID } from 'node:crypto';
import type { AuthorizationDecision, CallCounters, FailOpenCause, Obligations, ToolData } from '../compiler/index.ts';
import { BUILTIN_RULES, InputError } from '../compiler/index.ts';
import type { LoadedPolicy } from './bundle-verdict.ts';
import type { SidecarMetrics } from './metrics.ts';

/** Rules the sidecar names when it decides without the policy. They hold a colon, which no rule name can. */
export const SIDECAR_RULES = {
  noBundle: 'portcullis:no-bundle',
  /** A proxied request the sidecar cannot read whole and unambiguously (envoy-check.ts). */
  uninspectable: 'portcullis:uninspectable-request',
  /** A stateful condition applies and its counters cannot be read or kept (the store is down). */
  stateUnavailable: 'portcullis:state-unavailable',
  /** An agent or user token forwarded with the call does not verify. */
  untrustedToken: 'portcullis:untrusted-token',
  evaluationError: BUILTIN_RULES.evaluationError,
  /** The sidecar could not decide, and the bundle declares the action read-only and fail-open for the cause: let through unchecked. */
  failOpen: 'portcullis:fail-open',
} as const;

/** Distinct `tool` label values of the decision metric; see Authorizer.toolLabel. */
export const MAX_TOOL_LABELS = 200;
export const OTHER_TOOLS = '(other)';

export type Transport = 'http' | 'grpc' | 'envoy-http' | 'ext-proc';

/** When a call a limit refused (rateLimits[N], budgets[N], or a rule that failed only on callsOver) may succeed. */
export interface RetryHint {
  /** Whole seconds to wait before retrying, at least 1: the value of a Retry-After header. */
  retryAfterSeconds?: number;
  /** Budgets: when the day's spend resets, the next local midnight in the budget's zone (RFC 3339 with offset). */
  resetsAt?: string;
}

export interface SidecarDecision extends AuthorizationDecision, RetryHint {
  /** Unique per answer: logs, metrics exemplars and the caller's error all name it. */
  decisionId: string;
  /** Set only on a call let through unchecked (rule portcullis:fail-open): why the sidecar could not decide it. */
  failOpen?: FailOpenCause;
}

/** The identity the sidecar answers for, from its configuration. */
export interface AgentIdentity {
  namespace: string;
  agent: string;
}

/** What only verified tokens may say about a call. */
export interface VerifiedFacts {
  /** The invoking user (id and attributes). */
  user?: { id: string; attributes?: Record<string, unknown> };
  /** The agents that asked for the call, outermost first (RFC 8693 `act` chain). */
  delegation?: string[];
}

export interface CallContext {
  transport: Transport;
  verified?: VerifiedFacts;
  /** W3C trace context of the request, to continue its trace. */
  traceparent?: string;
}

/** Counters reserved for one call; settled once the decision is known. */
export interface Reservation {
  counters: CallCounters;
  /**
   * Keeps what an allowed call used and gives back what a refused one reserved;
   * for a call a limit refused, says when to retry. Never rejects.
   */
  settle(decision: AuthorizationDecision): Promise<RetryHint | undefined>;
}

/**
 * Where counters live (in memory, or shared by replicas). reserve is atomic:
 * concurrent calls cannot both see the last token or the last dollar.
 */
export interface CounterStore {
  reserve(scope: { tenant: string; namespace: string; agent: string }, call: { tool: string; action?: string; params?: unknown }, obligations: Obligations, now: Date): Promise<Reservation>;
}

/** One decided call, as observers (audit log, tracing) see it. */
export interface DecisionRecord {
  decision: SidecarDecision;
  /** The call as evaluated (after the sidecar fixed identity; without counters). */
  call: Record<string, unknown>;
  tenant: string;
  context: CallContext;
  /** The tool (or egress:HOST), '' when the request could not be read. */
  tool: string;
  startedAt: Date;
  latencySeconds: number;
  /**
   * Set only on the record ext_proc adds once the answer of a call whose
   * decision asked for response redaction has passed (or failed); the
   * decision itself was recorded, and counted, when it was made.
   */
  response?: ResponseRedaction;
}

/** What became of the answer of a call whose decision named redactResponse detectors. */
export interface ResponseRedaction {
  /** `PATH:DETECTOR`, sorted: a JSON path into the answer, '' for a text answer as a whole. Never the text. */
  redacted: string[];
  /** complete: the whole answer passed, redacted; failed: it was ended with an error instead; interrupted: the stream ended first. */
  outcome: 'complete' | 'failed' | 'interrupted';
  reason?: string;
}

export type DecisionObserver = (record: DecisionRecord) => void;

export interface AuthorizerOptions {
  identity: AgentIdentity;
  tenant: string;
  /** The loaded policy, read at every call so a swapped bundle takes effect on the next one. */
  policy: () => LoadedPolicy | undefined;
  metrics: SidecarMetrics;
  counters?: CounterStore;
  observers?: DecisionObserver[];
  newId?: () => string;
  now?: () => Date;
}

/**
 * Fields a caller may not assert: the agent and namespace are the sidecar's own,
 * user and delegation come only from verified tokens, time is the sidecar's
 * clock, and counters are the sidecar's state.
 */
const ASSERTED_BY_SIDECAR = new Set(['namespace', 'agent', 'user', 'delegation', 'time', 'counters']);

/** The caller's call with what only the sidecar may say replaced by what it knows. */
export function callOf(request: Record<string, unknown>, identity: AgentIdentity, verified: VerifiedFacts = {}): Record<string, unknown> {
  const call: Record<string, unknown> = {};
  for (const [field, value] of Object.entries(request)) {
    if (!ASSERTED_BY_SIDECAR.has(field)) call[field] = value;
  }
  return {
    ...call,
    namespace: identity.namespace,
    agent: identity.agent,
    ...(verified.user === undefined ? {} : { user: verified.user }),
    ...(verified.delegation === undefined ? {} : { delegation: verified.delegation }),
  };
}

function toolOf(call: Record<string, unknown>): string {
  if (typeof call.tool === 'string') return call.tool;
  const egress = call.egress as { host?: unknown } | undefined;
  return typeof egress?.host === 'string' ? `egress:${egress.host}` : '';
}

function hasObligations(obligations: Obligations): boolean {
  return obligations.calls.length + obligations.rate.length + obligations.spend.length > 0;
}

/** Why a fail-closed decision was made without the policy's answer, or undefined for any other decision. */
function failureCause(decision: AuthorizationDecision): FailOpenCause | undefined {
  if (decision.rule === SIDECAR_RULES.stateUnavailable) return 'counters_unavailable';
  if (decision.rule === SIDECAR_RULES.evaluationError) return 'evaluation_error';
  return undefined;
}

/**
 * The declaration of a tool's action (an HTTP action, or an MCP tool by its
 * tools/call name) in the bundle's tools; undefined when the tool or the action
 * is not declared. A call without an action is no declared action.
 */
export function declaredAction(tools: readonly ToolData[] | undefined, tool: string, action: string | undefined): { readOnly?: boolean; failOpen?: FailOpenCause[] } | undefined {
  if (action === undefined) return undefined;
  const declaration = tools?.find((t) => t.name === tool);
  const actions: readonly { name: string; readOnly?: boolean; failOpen?: FailOpenCause[] }[] = declaration?.http?.actions ?? declaration?.mcp?.actions ?? [];
  return actions.find((a) => a.name === action);
}

/** Whether the bundle lets this call fail open for this cause: a read-only action that names the cause. */
export function failsOpen(tools: readonly ToolData[] | undefined, call: Record<string, unknown>, cause: FailOpenCause): boolean {
  if (typeof call.tool !== 'string') return false;
  const declared = declaredAction(tools, call.tool, typeof call.action === 'string' ? call.action : undefined);
  return declared?.readOnly === true && (declared.failOpen ?? []).includes(cause);
}

export class Authorizer {
  private readonly options: AuthorizerOptions;
  private readonly newId: () => string;
  private readonly now: () => Date;
  private readonly observers: DecisionObserver[];
  private readonly toolLabels = new Set<string>();

  constructor(options: AuthorizerOptions) {
    this.options = options;
    this.newId = options.newId ?? randomUUID;
    this.now = options.now ?? ((): Date => new Date());
    this.observers = [...(options.observers ?? [])];
  }

  get ready(): boolean {
    return this.options.policy() !== undefined;
  }

  /** Adds an observer of every decision from now on. */
  observe(observer: DecisionObserver): void {
    this.observers.push(observer);
  }

  /**
   * Decides a call. Rejects with InputError when the call does not have the
   * contract's shape (the transport answers 400); anything else is a decision,
   * and every failure a deny.
   */
  async authorize(request: Record<string, unknown>, context: CallContext): Promise<SidecarDecision> {
    const started = process.hrtime.bigint();
    const startedAt = this.now();
    const call = callOf(request, this.options.identity, context.verified);
    const decision = { ...(await this.decideOrFailOpen(call, startedAt)), decisionId: this.newId() };
    this.record({ decision, call, tenant: this.options.tenant, context, tool: toolOf(call), startedAt, latencySeconds: 0 }, started);
    return decision;
  }

  /** Denies a request that could not be turned into a call, as a decision like any other. */
  refuse(reason: string, context: CallContext, rule: string = SIDECAR_RULES.uninspectable): SidecarDecision {
    const started = process.hrtime.bigint();
    const decision: SidecarDecision = {
      decision: 'deny',
      enforced: true,
      policy: null,
      rule,
      revision: this.options.policy()?.revision ?? '',
      reasons: [reason],
      decisionId: this.newId(),
    };
    const { namespace, agent } = this.options.identity;
    this.record({ decision, call: { namespace, agent }, tenant: this.options.tenant, context, tool: '', startedAt: this.now(), latencySeconds: 0 }, started);
    return decision;
  }

  /** Tells the observers what became of a decided call's answer (see DecisionRecord.response); counts nothing. */
  recordResponse(decision: SidecarDecision, request: Record<string, unknown>, context: CallContext, response: ResponseRedaction, startedAt: Date): void {
    const call = callOf(request, this.options.identity, context.verified);
    const latencySeconds = (this.now().getTime() - startedAt.getTime()) / 1000;
    const record: DecisionRecord = { decision, call, tenant: this.options.tenant, context, tool: toolOf(call), startedAt, latencySeconds, response };
    for (const observer of this.observers) observer(record);
  }

  /**
   * The tool as a metric label. A caller of /v1/authorize names any tool it likes, so the
   * distinct values are capped: past MAX_TOOL_LABELS, new tools are counted as OTHER_TOOLS.
   */
  private toolLabel(tool: string): string {
    if (this.toolLabels.has(tool)) return tool;
    if (this.toolLabels.size >= MAX_TOOL_LABELS) return OTHER_TOOLS;
    this.toolLabels.add(tool);
    return tool;
  }

  private record(record: DecisionRecord, started: bigint): void {
    const { metrics } = this.options;
    const latencySeconds = Number(process.hrtime.bigint() - started) / 1e9;
    const { decision } = record;
    metrics.decisionDuration.observe({ transport: record.context.transport }, latencySeconds);
    metrics.decisions.inc({ decision: decision.decision, enforced: String(decision.enforced), policy: decision.policy ?? '', rule: decision.rule, tool: this.toolLabel(record.tool) });
    if (decision.failOpen !== undefined) metrics.failOpen.inc({ cause: decision.failOpen });
    for (const observer of this.observers) observer({ ...record, latencySeconds });
  }

  /**
   * The decision, unless the sidecar could not make it (counters unavailable,
   * evaluation error) and the loaded bundle declares the call's action
   * read-only and fail-open for that cause: then the call goes through
   * unchecked, said so in the rule, the reasons and failOpen. With no bundle
   * nothing is declared, so nothing fails open; nor does a call of an agent
   * the bundle does not know or has suspended (the kill switch holds).
   */
  private async decideOrFailOpen(call: Record<string, unknown>, now: Date): Promise<AuthorizationDecision & RetryHint & { failOpen?: FailOpenCause }> {
    const decision = await this.decide(call, now);
    const cause = failureCause(decision);
    const policy = this.options.policy();
    if (cause === undefined || policy === undefined || !failsOpen(policy.tools, call, cause)) return decision;
    const { namespace, agent } = this.options.identity;
    const standing = policy.standing(namespace, agent);
    if (standing === undefined || standing.suspended) return decision;
    return {
      decision: 'allow',
      enforced: true,
      policy: null,
      rule: SIDECAR_RULES.failOpen,
      revision: policy.revision,
      reasons: [...decision.reasons, `tool ${String(call.tool)} action ${String(call.action)} is read-only and declared failOpen for ${cause}: let through unchecked`],
      failOpen: cause,
    };
  }

  private async decide(call: Record<string, unknown>, now: Date): Promise<AuthorizationDecision & RetryHint> {
    const policy = this.options.policy();
    if (policy === undefined) {
      return { decision: 'deny', enforced: true, policy: null, rule: SIDECAR_RULES.noBundle, revision: '', reasons: ['no valid policy bundle is loaded yet'] };
    }
    try {
      const reservation = await this.reserve(policy, call, now);
      if (reservation === 'unavailable') {
        return { decision: 'deny', enforced: true, policy: null, rule: SIDECAR_RULES.stateUnavailable, revision: policy.revision, reasons: ['the counters of a stateful condition cannot be read: the counter store is unavailable'] };
      }
      let decision: AuthorizationDecision;
      try {
        decision = policy.authorize(reservation === undefined ? call : { ...call, counters: reservation.counters });
      } catch (error) {
        // Whatever failed, the call does not run: give back what it reserved.
        await reservation?.settle({ decision: 'deny', enforced: true, policy: null, rule: SIDECAR_RULES.evaluationError, revision: policy.revision, reasons: [] });
        throw error;
      }
      const hint = await reservation?.settle(decision);
      return hint === undefined ? decision : { ...decision, ...hint };
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

  /** Reserves the counters a stateful call needs; undefined when it needs none. */
  private async reserve(policy: LoadedPolicy, call: Record<string, unknown>, now: Date): Promise<Reservation | 'unavailable' | undefined> {
    const store = this.options.counters;
    if (store === undefined || typeof call.tool !== 'string') return undefined;
    const action = typeof call.action === 'string' ? call.action : undefined;
    const obligations = policy.obligations(this.options.identity.namespace, call.tool, action);
    if (!hasObligations(obligations)) return undefined;
    try {
      const { namespace, agent } = this.options.identity;
      return await store.reserve({ tenant: this.options.tenant, namespace, agent }, { tool: call.tool, ...(action === undefined ? {} : { action }), params: call.params }, obligations, now);
    } catch {
      return 'unavailable';
    }
  }
}
