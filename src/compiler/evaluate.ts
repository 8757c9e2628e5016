// The decision core: authorize(call) → decision, over a tenant's compiled
// policy.wasm and data.json. `portcullis eval` and the sidecar both call this;
// there is no second implementation of the semantics. Around the WASM
// evaluation it does what the WASM cannot or does slowly: checks the call's
// shape, computes the signals the reachable rules read (local clocks, threat
// findings, regex matches: signals.ts), words the reasons, redacts for
// sanitize and computes the approval key.
import type { LoadedPolicy } from '@open-policy-agent/opa-wasm';
import { loadPolicy } from '@open-policy-agent/opa-wasm';
import { REDACTION_DETECTORS } from '../api/index.ts';
import { canonicalJson, sha256Hex } from './canonical.ts';
import { detectThreats } from './detectors.ts';
import { InputError } from './errors.ts';
import type { AgentData, ConditionData, Decision, LimitData, RedactSpec, ResponseRedactSpec, RuleData, TenantData, Threat, ToolData, UserTokenData } from './ir.ts';
import { splitPath } from './ir.ts';
import type { NormalizedCall } from './input.ts';
import { normalizeInput } from './input.ts';
import { ENTRYPOINT, MAX_EXPLAINED } from './program.ts';
import { observe } from './observe.ts';
import { describeCondition, describeLimit, showValue } from './reasons.ts';
import { redact } from './redact.ts';
import { PolicyProgram } from './wasm.ts';
import type { Signals } from './signals.ts';
import { computeSignals, SignalPlans } from './signals.ts';

/** The answer of the authorization contract (DESIGN.md). */
export interface AuthorizationDecision {
  decision: Decision;
  /** false in shadow mode: the decision is recorded, the call let through. */
  enforced: boolean;
  /** The ToolPolicy or EgressRule that decided; null when no policy did (default deny, unknown or suspended agent). */
  policy: string | null;
  /** The rule that decided: a rule name, rateLimits[N], budgets[N], rego/MODULE, allow[N], or portcullis:REASON. */
  rule: string;
  revision: string;
  reasons: string[];
  /** The parameters, redacted: sanitize only. */
  params?: unknown;
  /** The approval key: approval_needed only. */
  approval?: string;
  /** sanitize only: what was redacted from the parameters, as `PATH:DETECTOR` (`patient.ssn:ssn`), never the text. */
  redacted?: string[];
  /** allow and sanitize: the detectors to apply to the tool's answer (the deciding rules' redactResponse). */
  redactResponse?: ResponseRedactSpec[];
}

/** Rule names the core uses when no rule of a policy decided. They hold a colon, which no rule name can. */
export const BUILTIN_RULES = {
  defaultDeny: 'portcullis:default-deny',
  unknownAgent: 'portcullis:unknown-agent',
  suspended: 'portcullis:agent-suspended',
  evaluationError: 'portcullis:evaluation-error',
} as const;

/** The detectors the core runs around the WASM evaluation (src/compiler/detectors.ts and redact.ts). */
export interface DecisionHooks {
  detectThreats(params: unknown): Record<Threat, string[]>;
  redact(params: unknown, spec: RedactSpec[]): { params: unknown; redacted: string[] };
}

export interface PolicyArtifact {
  wasm: Uint8Array;
  data: { portcullis: TenantData };
  revision: string;
}

export const DEFAULT_HOOKS: DecisionHooks = { detectThreats, redact };

export interface EvaluatorOptions {
  /** The detectors; DEFAULT_HOOKS unless a test swaps them. */
  hooks?: DecisionHooks;
  /** The clock for calls that carry no time. */
  now?: () => Date;
}

type Source = 'rule' | 'limit' | 'custom' | 'egress' | 'default' | 'unknown' | 'suspended';

interface Match {
  source: Source;
  decision: Decision;
  enforced: boolean;
  policy?: string;
  rule?: string;
  key?: number;
  observed?: Record<string, unknown>;
  messages?: unknown[];
}

/** Whether each condition of a rule held, in written order (see explanations in program.ts). */
interface Evaluation {
  key: number;
  held: boolean[];
}

/** The program's answer: the deciding entry's key (the core knows the entry), or a source that is no entry. */
interface ProgramOutcome {
  source?: Source;
  decision?: Decision;
  key?: number;
  enforced: boolean;
  /** What a limit saw, or a module's messages (see detail in program.ts). */
  detail?: { observed?: Record<string, unknown>; messages?: unknown[] };
}

type Entry = Required<Pick<Match, 'source' | 'decision' | 'policy' | 'rule'>>;

interface ProgramResult {
  outcome: ProgramOutcome;
  /** Keys of the matches that share a sanitize decision. */
  peers: number[];
  /** When no rule decided: the explanations are of the first MAX_EXPLAINED by order of the inPlay rules that spoke of the call. */
  explanations: Evaluation[];
  inPlay: number;
}

function isProgramResult(value: unknown): value is ProgramResult {
  if (value === null || typeof value !== 'object') return false;
  const r = value as Partial<ProgramResult>;
  return typeof r.outcome === 'object' && Array.isArray(r.peers) && Array.isArray(r.explanations) && typeof r.inPlay === 'number';
}

export function approvalKey(tenant: string, call: NormalizedCall): string {
  return sha256Hex(
    canonicalJson({ tenant, agent: `${call.namespace}/${call.agent}`, tool: call.tool ?? null, action: call.action ?? null, params: call.params }),
  );
}

/** The parameter paths a tenant reads: conditions, budgets' cost, and redactions by path. */
function paramPathsOf(data: TenantData): string[][] {
  const rules = Object.values(data.rules).flatMap((byTool) => Object.values(byTool).flat());
  const limits = Object.values(data.limits).flatMap((byTool) => Object.values(byTool).flat());
  return [
    ...data.conditions.flatMap((condition) => ('path' in condition ? [condition.path] : [])),
    ...limits.flatMap((limit) => (limit.costPath === undefined ? [] : [limit.costPath])),
    ...rules.flatMap((rule) => (rule.redact ?? []).flatMap((spec) => (typeof spec === 'object' ? [splitPath(spec.param)] : []))),
  ];
}

export class PolicyEvaluator {
  readonly revision: string;
  readonly tenant: string;
  /** The tenant's tool declarations, which map requests on the wire to tool and action. */
  readonly tools: readonly ToolData[];
  /** Every parameter path the tenant's conditions, budgets and redactions read, split at dots. */
  readonly paramPaths: readonly (readonly string[])[];
  private readonly program: PolicyProgram;
  private readonly data: TenantData;
  private readonly hooks: DecisionHooks;
  private readonly now: () => Date;
  private readonly rules = new Map<string, RuleData>();
  private readonly rulesByKey = new Map<number, RuleData>();
  /** Each rule's conditions, in written order. */
  private readonly ruleConditions = new Map<RuleData, ConditionData[]>();
  private readonly limits = new Map<string, LimitData>();
  /** Every rule, limit, module and egress allowance of the tenant by precedence key (unique in a tenant). */
  private readonly entries = new Map<number, Entry>();
  private readonly signalPlans: SignalPlans;

  private constructor(policy: LoadedPolicy, artifact: PolicyArtifact, options: EvaluatorOptions) {
    this.program = new PolicyProgram(policy, ENTRYPOINT);
    this.data = artifact.data.portcullis;
    this.revision = artifact.revision;
    this.tenant = this.data.tenant;
    this.tools = this.data.tools;
    this.hooks = options.hooks ?? DEFAULT_HOOKS;
    this.now = options.now ?? ((): Date => new Date());
    for (const [namespace, byTool] of Object.entries(this.data.rules)) {
      for (const rules of Object.values(byTool)) {
        for (const rule of rules) {
          this.rules.set(refKey(namespace, rule.policy, rule.rule), rule);
          this.rulesByKey.set(rule.key, rule);
          this.ruleConditions.set(
            rule,
            rule.when.flatMap((i) => {
              const condition = this.data.conditions[i];
              return condition === undefined ? [] : [condition];
            }),
          );
        }
      }
    }
    for (const [namespace, byTool] of Object.entries(this.data.limits)) {
      for (const limits of Object.values(byTool)) for (const limit of limits) this.limits.set(refKey(namespace, limit.policy, limit.rule), limit);
    }
    this.signalPlans = new SignalPlans(this.data);
    this.paramPaths = paramPathsOf(this.data);
    this.indexEntries();
  }

  private indexEntries(): void {
    const add = (key: number, source: Source, decision: Decision, policy: string, rule: string): void => {
      this.entries.set(key, { source, decision, policy, rule });
    };
    for (const rule of this.rulesByKey.values()) add(rule.key, 'rule', rule.decision, rule.policy, rule.rule);
    for (const limit of this.limits.values()) add(limit.key, 'limit', limit.decision, limit.policy, limit.rule);
    for (const module of this.data.modules) add(module.key, 'custom', 'deny', module.policy, module.rule);
    for (const allowances of Object.values(this.data.egress)) for (const a of allowances) add(a.key, 'egress', 'allow', a.policy, a.rule);
  }

  /** The entry behind the program's outcome, with what it saw. */
  private resolve(outcome: ProgramOutcome): Match {
    if (outcome.key === undefined) return { source: outcome.source ?? 'default', decision: outcome.decision ?? 'deny', enforced: outcome.enforced };
    const entry = this.entries.get(outcome.key);
    if (entry === undefined) throw new Error(`the policy decided with key ${outcome.key}, which no entry of the tenant has`);
    const match: Match = { ...entry, key: outcome.key, enforced: outcome.enforced };
    if (outcome.detail?.observed !== undefined) match.observed = outcome.detail.observed;
    if (outcome.detail?.messages !== undefined) match.messages = outcome.detail.messages;
    return match;
  }

  static async load(artifact: PolicyArtifact, options: EvaluatorOptions = {}): Promise<PolicyEvaluator> {
    checkTenantData(artifact.data);
    const policy = await loadPolicy(artifact.wasm);
    policy.setData(artifact.data);
    return new PolicyEvaluator(policy, artifact, options);
  }

  /**
   * Decides a call. Throws InputError when the call does not have the contract's
   * shape; any failure past that point is a deny (fail closed), never a throw.
   */
  authorize(input: unknown): AuthorizationDecision {
    const call = normalizeInput(input, this.now);
    try {
      return this.decide(call);
    } catch (error) {
      if (error instanceof InputError) throw error;
      return this.answer({
        decision: 'deny',
        enforced: true,
        policy: null,
        rule: BUILTIN_RULES.evaluationError,
        reasons: [`evaluation failed: ${error instanceof Error ? error.message : String(error)}`],
      });
    }
  }

  /**
   * The counters the sidecar keeps for a call to this tool (and action) of the
   * namespace, and passes back in input.counters: call counts per callsOver
   * window, rate-limit buckets and daily spend. After an allowed call it counts
   * the call, takes a token and adds the cost.
   */
  obligations(namespace: string, tool: string, action?: string): Obligations {
    const rules = (Object.hasOwn(this.data.rules, namespace) ? this.data.rules[namespace] : undefined) ?? {};
    const limits = (Object.hasOwn(this.data.limits, namespace) ? this.data.limits[namespace] : undefined) ?? {};
    const windows = new Set<string>();
    for (const rule of (Object.hasOwn(rules, tool) ? rules[tool] : undefined) ?? []) {
      if (rule.actions !== undefined && (action === undefined || !rule.actions.includes(action))) continue;
      for (const c of this.conditionsOf(rule)) if (c.op === 'callsOver') windows.add(c.window);
    }
    const applicable = ((Object.hasOwn(limits, tool) ? limits[tool] : undefined) ?? []).filter((l) => l.action === undefined || l.action === action);
    return {
      calls: [...windows].sort().map((window) => ({ tool, window })),
      rate: applicable.flatMap((l) => (l.kind === 'rate' ? [{ key: l.counter, rps: l.rps ?? 0, burst: l.burst ?? 1 }] : [])),
      spend: applicable.flatMap((l) => {
        if (l.kind !== 'budget') return [];
        const cost = l.costPath === undefined ? { perCall: l.costPerCall ?? 0 } : { param: l.costPath.join('.') };
        return [{ key: l.counter, dailyUSD: l.dailyUSD ?? 0, timeZone: l.zone ?? 'UTC', ...cost }];
      }),
    };
  }

  /**
   * The answer: a plain object, every field a data property. (Reasons worded on
   * first read, through an accessor, made V8 keep each answer as a dictionary:
   * costlier to make, copy and write as JSON than the wording they saved, and
   * the sidecar's audit log reads every decision's reasons.)
   */
  private answer(partial: Omit<AuthorizationDecision, 'revision'>): AuthorizationDecision {
    const { decision, enforced, policy, rule, reasons, params, approval, redacted, redactResponse } = partial;
    const out: AuthorizationDecision = { decision, enforced, policy, rule, revision: this.revision, reasons };
    if (params !== undefined) out.params = params;
    if (approval !== undefined) out.approval = approval;
    if (redacted !== undefined) out.redacted = redacted;
    if (redactResponse !== undefined) out.redactResponse = redactResponse;
    return out;
  }

  /**
   * What the program reads for a call: the call as normalized, with the signals
   * of the rules it can reach. For running the same input through opa (opa eval,
   * opa bench). Throws InputError as authorize does.
   */
  programInput(input: unknown): NormalizedCall & { signals: Signals } {
    const call = normalizeInput(input, this.now);
    return { ...call, signals: this.signalsOf(call) };
  }

  private signalsOf(call: NormalizedCall): Signals {
    return computeSignals(this.signalPlans.planFor(call), call, (params) => this.hooks.detectThreats(params));
  }

  private evaluate(call: NormalizedCall, signals: Signals): ProgramResult {
    const results = this.program.evaluate({ ...call, signals });
    const first: unknown = Array.isArray(results) ? (results[0] as { result?: unknown } | undefined)?.result : undefined;
    if (!isProgramResult(first)) throw new Error('the policy returned no decision');
    return first;
  }

  private decide(call: NormalizedCall): AuthorizationDecision {
    const signals = this.signalsOf(call);
    const result = this.evaluate(call, signals);
    const words: Words = { call, signals, agent: this.agentOf(call) };
    const outcome = this.resolve(result.outcome);
    const base = { decision: outcome.decision, enforced: outcome.enforced };
    switch (outcome.source) {
      case 'unknown':
        return this.answer({
          ...base,
          policy: null,
          rule: BUILTIN_RULES.unknownAgent,
          reasons: [`agent ${call.agent} is not an AgentIdentity of namespace ${call.namespace} in tenant ${this.tenant}`],
        });
      case 'suspended':
        return this.answer({ ...base, policy: null, rule: BUILTIN_RULES.suspended, reasons: [`agent ${call.namespace}/${call.agent} is suspended`] });
      case 'default':
        return this.answer({ ...base, policy: null, rule: BUILTIN_RULES.defaultDeny, reasons: this.defaultReasons(words, result) });
      default:
        return this.matched(words, outcome, result.peers);
    }
  }

  /** Whether an agent of this tenant is suspended, since when its tokens are revoked, and how its users' tokens are verified; undefined for an unknown agent. */
  standing(namespace: string, agent: string): AgentStanding | undefined {
    const data = this.agentOf({ namespace, agent });
    if (data === undefined) return undefined;
    return {
      suspended: data.suspended,
      ...(data.revokedBefore === undefined ? {} : { revokedBefore: new Date(data.revokedBefore) }),
      ...(data.userTokens === undefined ? {} : { userTokens: data.userTokens }),
    };
  }

  private agentOf(call: Pick<NormalizedCall, 'namespace' | 'agent'>): AgentData | undefined {
    const agents = Object.hasOwn(this.data.agents, call.namespace) ? this.data.agents[call.namespace] : undefined;
    return agents !== undefined && Object.hasOwn(agents, call.agent) ? agents[call.agent] : undefined;
  }

  private matched(words: Words, outcome: Match, peers: number[]): AuthorizationDecision {
    const { call } = words;
    const policy = outcome.policy ?? null;
    const rule = outcome.rule ?? BUILTIN_RULES.defaultDeny;
    const answer: Omit<AuthorizationDecision, 'revision'> = {
      decision: outcome.decision,
      enforced: outcome.enforced,
      policy,
      rule,
      reasons: this.matchReasons(words, outcome),
    };
    if (outcome.decision === 'sanitize') {
      const spec = [...peers].sort((a, b) => a - b).flatMap((key) => this.rulesByKey.get(key)?.redact ?? []);
      const redacted = this.hooks.redact(call.params, dedupe(spec));
      answer.params = redacted.params;
      answer.redacted = redacted.redacted;
      if (redacted.redacted.length > 0) answer.reasons = [...answer.reasons, `redacted ${redacted.redacted.join(', ')}`];
    }
    const redactResponse = this.responseRedaction(outcome, peers);
    if (redactResponse.length > 0) answer.redactResponse = redactResponse;
    if (outcome.decision === 'approval_needed') answer.approval = approvalKey(this.tenant, call);
    return this.answer(answer);
  }

  /** The deciding rule's redactResponse; for sanitize, that of every sanitize rule that matched (like redact). */
  private responseRedaction(outcome: Match, peers: number[]): ResponseRedactSpec[] {
    if (outcome.source !== 'rule' || outcome.key === undefined || (outcome.decision !== 'allow' && outcome.decision !== 'sanitize')) return [];
    const keys = outcome.decision === 'sanitize' ? [...new Set([outcome.key, ...peers])] : [outcome.key];
    const detectors = new Set(keys.flatMap((key) => this.rulesByKey.get(key)?.redactResponse ?? []));
    return REDACTION_DETECTORS.filter((detector) => detectors.has(detector));
  }

  private matchReasons(words: Words, outcome: Match): string[] {
    const { call } = words;
    const key = refKey(call.namespace, outcome.policy, outcome.rule);
    switch (outcome.source) {
      case 'custom':
        return (outcome.messages ?? []).map((m) => (typeof m === 'string' ? m : showValue(m))).sort();
      case 'limit': {
        const limit = this.limits.get(key);
        return limit === undefined ? [] : [describeLimit(limit, outcome.observed ?? {})];
      }
      case 'egress':
        return [`${call.egress?.host ?? ''}:${call.egress?.port ?? 0} is allowed by ${outcome.policy ?? ''} ${outcome.rule ?? ''}`];
      default: {
        const rule = this.rules.get(key);
        if (rule === undefined) return [];
        // The rule decided: every one of its conditions held.
        const held = describeConditions(this.conditionsOf(rule), undefined, true, words);
        return held.length > 0 ? held : [`rule ${rule.rule} has no conditions: it covers every such call to ${call.tool ?? ''}`];
      }
    }
  }

  private conditionsOf(rule: RuleData): ConditionData[] {
    return this.ruleConditions.get(rule) ?? [];
  }

  private defaultReasons(words: Words, result: ProgramResult): string[] {
    const { call } = words;
    if (call.egress !== undefined) return [`no egress rule of namespace ${call.namespace} allows ${call.egress.host}:${call.egress.port} for agent ${call.agent}`];
    const failed = result.explanations.flatMap((e) => {
      const rule = this.rulesByKey.get(e.key);
      return rule === undefined ? [] : [{ rule, held: e.held }];
    });
    failed.sort((a, b) => a.rule.order - b.rule.order);
    if (failed.length === 0) {
      const action = call.action === undefined ? '' : ` action ${call.action}`;
      return [`no rule for agent ${call.agent} covers tool ${call.tool ?? ''}${action} (deny by default)`];
    }
    const reasons = failed.slice(0, MAX_EXPLAINED).map(({ rule, held }) => {
      const why = describeConditions(this.conditionsOf(rule), held, false, words);
      return `${rule.policy}/${rule.rule}: ${why.join('; ')}`;
    });
    if (result.inPlay > MAX_EXPLAINED) reasons.push(`and ${result.inPlay - MAX_EXPLAINED} more rules that did not hold`);
    return reasons;
  }
}

/** What the sidecar checks of an agent's tokens, and of the user tokens its application forwards; see PolicyEvaluator.standing. */
export interface AgentStanding {
  suspended: boolean;
  revokedBefore?: Date;
  /** How user tokens forwarded with the agent's calls are verified; absent: every user token is refused. */
  userTokens?: UserTokenData;
}

/** What the sidecar counts for a call; see PolicyEvaluator.obligations. */
export interface Obligations {
  /** counters.calls[tool][window]: calls in the sliding window. */
  calls: { tool: string; window: string }[];
  /** counters.rate[key]: tokens left in a bucket of burst tokens refilled at rps. */
  rate: { key: string; rps: number; burst: number }[];
  /** counters.spentUSD[key]: spent since local midnight in timeZone; the cost is a param or a fixed amount. */
  spend: ({ key: string; dailyUSD: number; timeZone: string } & ({ param: string } | { perCall: number }))[];
}

// Not shadowed: only the program of the same bundle reads it, and a bundle compiled before it existed
// still loads (its program reads no regex matches either; it matches its regexes itself).
const TENANT_FIELDS = ['tenant', 'agents', 'policies', 'egressPolicies', 'rules', 'index', 'limits', 'egress', 'modules', 'conditions', 'zones', 'tools'];

/** A bundle whose data is not a compiled tenant is refused at load, not discovered call by call. */
function checkTenantData(data: unknown): void {
  const tenant = (data as { portcullis?: unknown } | null)?.portcullis;
  if (tenant === null || typeof tenant !== 'object') throw new Error('data.json holds no compiled tenant under "portcullis"');
  const missing = TENANT_FIELDS.filter((field) => !(field in tenant));
  if (missing.length > 0) throw new Error(`data.json is not a compiled tenant: missing ${missing.join(', ')}`);
}

/** Rules and limits by namespace, policy and rule: a policy decides only for agents of its own namespace. */
function refKey(namespace: string, policy: string | undefined, rule: string | undefined): string {
  return `${namespace}\n${policy ?? ''}\n${rule ?? ''}`;
}

/** What the reasons of a call are worded from: the call, the signals the WASM saw, the calling agent. */
interface Words {
  call: NormalizedCall;
  signals: Signals;
  agent: AgentData | undefined;
}

/** The conditions whose held flag is the one asked for (without flags: every condition), in words. */
function describeConditions(when: readonly ConditionData[], flags: readonly boolean[] | undefined, held: boolean, words: Words): string[] {
  const out: string[] = [];
  for (const [i, c] of when.entries()) {
    if (flags === undefined || flags[i] === held) out.push(describeCondition(c, observe(c, words.call, words.signals, words.agent), held));
  }
  return out;
}

function dedupe(spec: RedactSpec[]): RedactSpec[] {
  const seen = new Set<string>();
  return spec.filter((s) => {
    const key = canonicalJson(s);
    if (seen.has(key)) return false;
    seen.add(key);
    return true;
  });
}
