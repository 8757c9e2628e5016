// The normalized intermediate form of a tenant: plain JSON that becomes the
// bundle's data.json, read by the generic decision program (program.ts) and by
// the decision core. Everything a rule says is made explicit here (defaults
// filled in, regexes anchored, clock times in minutes, param paths split), so
// the program and the core never interpret the user's spelling.
import type { AgentIdentity, EgressRule, PolicyRule, RuleCondition, ToolDeclaration, ToolPolicy, UserTokens } from '../api/index.ts';
import { USER_TOKEN_ALGORITHMS, WEEKDAYS } from '../api/index.ts';
import { canonicalJson } from './canonical.ts';
import { CompileError, CompileErrors } from './errors.ts';
import type { Loaded, TenantResources } from './manifests.ts';
import type { Weekday } from './time-zones.ts';
import { clockMinutes } from './time-zones.ts';

export type Decision = 'allow' | 'deny' | 'sanitize' | 'approval_needed';
export type Scalar = string | number | boolean;
export type Threat = 'prompt_injection' | 'sql_injection' | 'path_traversal' | 'pii';
export type RedactSpec = 'ssn' | 'email' | 'credit_card' | 'phone' | 'iban' | 'pii' | { param: string };
/** A detector a rule applies to the tool's answer (redactResponse). */
export type ResponseRedactSpec = Exclude<RedactSpec, { param: string }>;

/** A dotted parameter path, split: "invoice.amount" is ["invoice", "amount"]. */
export type ParamPath = string[];

export type ConditionData =
  | { op: 'equals'; path: ParamPath; value: Scalar }
  | { op: 'oneOf' | 'notOneOf'; path: ParamPath; values: Scalar[] }
  /**
   * pattern is the user's regex anchored as ^(?:regex)$, for a whole-value match.
   * signal, in a tenant's table: the key of the core's match in input.signals.regex (signals.ts).
   */
  | { op: 'regex'; path: ParamPath; pattern: string; regex: string; signal?: string }
  | { op: 'min' | 'max' | 'gt' | 'lt'; path: ParamPath; bound: number }
  | { op: 'exists'; path: ParamPath; present: boolean }
  /** start inclusive, end exclusive, in minutes of the local day. */
  | { op: 'time'; zone: string; days: Weekday[]; start: number; end: number }
  | { op: 'callsOver'; window: string; max: number }
  | { op: 'delegatedBy'; agents: string[] }
  | { op: 'delegationDepth'; max: number }
  | { op: 'userAttribute'; attribute: string; path: ParamPath }
  | { op: 'autonomyLevel'; min: number }
  | { op: 'threat'; threats: Threat[] };

export interface RuleData {
  policy: string;
  rule: string;
  /** Unique in the tenant; breaks ties between rules of equal precedence (lowest first). */
  order: number;
  /** precedenceKey(decision, order): the lowest key of the matches decides. */
  key: number;
  decision: Decision;
  /** Absent: every action. */
  actions?: string[];
  /** Indexes into TenantData.conditions: rules of a tenant share most conditions, so each is stored once. */
  when: number[];
  /** when in the order the program checks it: cheap conditions first, regexes last (see conditionCost). */
  check: number[];
  approval?: { approvers: string[]; ttl?: string };
  redact?: RedactSpec[];
  /** Detectors the sidecar applies to the answer of a call this rule decided (allow and sanitize). */
  redactResponse?: ResponseRedactSpec[];
}

export interface LimitData {
  policy: string;
  /** The field that declares the limit, e.g. rateLimits[0]; decisions name it as the rule. */
  rule: string;
  order: number;
  key: number;
  kind: 'rate' | 'budget';
  tool: string;
  /** Absent: every action. */
  action?: string;
  /** Counter key in input.counters: the tool, or tool/action for an action's own bucket. */
  counter: string;
  decision: 'deny' | 'approval_needed';
  rps?: number;
  burst?: number;
  dailyUSD?: number;
  costPath?: ParamPath;
  costPerCall?: number;
  zone?: string;
}

export interface SubjectData {
  enforced: boolean;
  /** Sets, as objects with true values, for constant-time lookups in Rego. */
  agents: Record<string, true>;
  roles: Record<string, true>;
}

export interface AgentData {
  roles: string[];
  scopes: string[];
  attributes: Record<string, string>;
  autonomyLevel: number;
  suspended: boolean;
  /** Agent tokens issued before this time (RFC 3339) are refused: the sidecar checks them, not the policy. */
  revokedBefore?: string;
  /** How the sidecar verifies the user tokens the agent's application forwards; absent: every user token is refused. */
  userTokens?: UserTokenData;
}

/** AgentIdentity spec.userTokens with its defaults filled in: the sidecar reads it, not the policy. */
export interface UserTokenData {
  issuer: string;
  audiences: string[];
  /** Exactly one of jwksURL (https) and jwks. */
  jwksURL?: string;
  jwks?: { keys: Record<string, unknown>[] };
  /** Sorted; never none, never HMAC. */
  algorithms: string[];
  /** The claim holding user.id, and user attribute name → the claim it comes from. */
  claims: { id: string; attributes: Record<string, string> };
}

/** Why the sidecar could not decide a call with a loaded bundle (ToolPolicy spec.tools[].*.actions[].failOpen). */
export type FailOpenCause = 'counters_unavailable' | 'evaluation_error';

export interface EgressData {
  policy: string;
  rule: string;
  order: number;
  key: number;
  /** For *.example.com: "example.com" with wildcard true (subdomains only). */
  host: string;
  wildcard: boolean;
  /** Absent: every port. */
  ports?: number[];
}

export interface CustomModuleData {
  /** Package under data.portcullis.custom. */
  id: string;
  namespace: string;
  policy: string;
  /** rego/NAME: decisions name it as the rule. */
  rule: string;
  order: number;
  key: number;
}

/**
 * A tool as requests on the wire reach it (ToolPolicy spec.tools, one per name in
 * the tenant): the sidecar maps proxied requests to tool and action with these.
 */
export interface ToolData {
  name: string;
  /** Absent port: any port. */
  http?: { host: string; port?: number; actions: ToolActionData[] };
  /** Absent path: every path of the host is the MCP endpoint. actions: what some of its tools (tools/call names) are. */
  mcp?: { host: string; port?: number; path?: string; actions?: McpActionData[] };
}

/** An MCP tool of a server, by its tools/call name (the action). */
export interface McpActionData {
  name: string;
  readOnly?: boolean;
  /** Sorted; only with readOnly. */
  failOpen?: FailOpenCause[];
}

export interface ToolActionData {
  name: string;
  method: string;
  /** A trailing /* matches any suffix. */
  path: string;
  readOnly?: boolean;
  /** Sorted; only with readOnly. */
  failOpen?: FailOpenCause[];
}

export interface TenantData {
  tenant: string;
  agents: Record<string, Record<string, AgentData>>;
  policies: Record<string, Record<string, SubjectData>>;
  egressPolicies: Record<string, Record<string, SubjectData>>;
  /** namespace → tool → rules, in order. */
  rules: Record<string, Record<string, RuleData[]>>;
  /**
   * namespace → tool → action → positions in rules[namespace][tool] of the rules
   * a call with that action may match, lowest precedence key first: the rules
   * listing the action and those listing none. Under "" (no action name can be
   * empty): the rules listing none, for calls without an action or with one no
   * rule lists. The program tries them in this order and stops at the first match.
   */
  index: Record<string, Record<string, Record<string, number[]>>>;
  limits: Record<string, Record<string, LimitData[]>>;
  egress: Record<string, EgressData[]>;
  modules: CustomModuleData[];
  /** Every distinct condition of the tenant's rules, in order of first use. */
  conditions: ConditionData[];
  /** Every time zone a time condition names: the core reads the local clock in each. */
  zones: string[];
  /** Namespaces with a ToolPolicy or EgressRule in shadow mode: the program looks for shadow decisions only there. */
  shadowed: Record<string, true>;
  /** The tools the tenant's policies declare, by name. */
  tools: ToolData[];
}

/** A raw Rego module of a ToolPolicy, its package moved under data.portcullis.custom. */
export interface CustomModuleSource {
  id: string;
  /** Where OPA's messages point: NAMESPACE/POLICY/MODULE.rego. */
  file: string;
  resource: string;
  moduleName: string;
  field: string;
  text: string;
}

export interface TenantIr {
  data: TenantData;
  modules: CustomModuleSource[];
}

const RANK: Readonly<Record<Decision, number>> = { allow: 1, sanitize: 2, approval_needed: 3, deny: 4 };
/** More entries than a tenant can hold (rules, limits, modules and egress allowances). */
const ORDER_SPAN = 1_000_000_000;

/**
 * One number that sorts matches as the decision program picks them: higher
 * precedence first (deny > approval_needed > sanitize > allow), then the lower
 * order. Comparing numbers keeps the program's sets small and fast.
 */
export function precedenceKey(decision: Decision, order: number): number {
  return (4 - RANK[decision]) * ORDER_SPAN + order;
}

/** Objects keyed by user-chosen names have no prototype, so a key like __proto__ stays a key. */
function record<T>(): Record<string, T> {
  return Object.create(null) as Record<string, T>;
}

function nested<T>(outer: Record<string, Record<string, T>>, key: string): Record<string, T> {
  let inner = outer[key];
  if (inner === undefined) {
    inner = record<T>();
    outer[key] = inner;
  }
  return inner;
}

function push<T>(map: Record<string, T[]>, key: string, item: T): void {
  const items = map[key] ?? [];
  items.push(item);
  map[key] = items;
}

function set(names: readonly string[] | undefined): Record<string, true> {
  const out = record<true>();
  for (const name of names ?? []) out[name] = true;
  return out;
}

export function splitPath(path: string): ParamPath {
  return path.split('.');
}

/** A whole-value match with a search engine: RE2's $ without (?m) is the end of the text only. */
export function anchorRegex(regex: string): string {
  return `^(?:${regex})$`;
}

function paramConditions(condition: RuleCondition): ConditionData[] {
  if (condition.param === undefined) return [];
  const path = splitPath(condition.param);
  const out: ConditionData[] = [];
  if (condition.equals !== undefined) out.push({ op: 'equals', path, value: condition.equals });
  if (condition.oneOf !== undefined) out.push({ op: 'oneOf', path, values: [...condition.oneOf] });
  if (condition.notOneOf !== undefined) out.push({ op: 'notOneOf', path, values: [...condition.notOneOf] });
  if (condition.regex !== undefined) out.push({ op: 'regex', path, pattern: anchorRegex(condition.regex), regex: condition.regex });
  for (const op of ['min', 'max', 'gt', 'lt'] as const) {
    const bound = condition[op];
    if (bound !== undefined) out.push({ op, path, bound });
  }
  if (condition.exists !== undefined) out.push({ op: 'exists', path, present: condition.exists });
  return out;
}

function otherCondition(condition: RuleCondition): ConditionData | undefined {
  const { time, callsOver, delegatedBy, delegationDepth, userAttribute, equalsParam, autonomyLevel, threat } = condition;
  if (time !== undefined) {
    const wanted: readonly string[] = time.days ?? [];
    const days = wanted.length === 0 ? [...WEEKDAYS] : WEEKDAYS.filter((d) => wanted.includes(d));
    return { op: 'time', zone: time.timeZone ?? 'UTC', days, start: clockMinutes(time.start) ?? 0, end: clockMinutes(time.end) ?? 0 };
  }
  if (callsOver !== undefined) return { op: 'callsOver', window: callsOver.window, max: callsOver.max };
  if (delegatedBy !== undefined) return { op: 'delegatedBy', agents: [...delegatedBy].sort() };
  if (delegationDepth !== undefined) return { op: 'delegationDepth', max: delegationDepth.max };
  if (userAttribute !== undefined && equalsParam !== undefined) return { op: 'userAttribute', attribute: userAttribute, path: splitPath(equalsParam) };
  if (autonomyLevel !== undefined) return { op: 'autonomyLevel', min: autonomyLevel.min };
  if (threat !== undefined) return { op: 'threat', threats: [...threat].sort() };
  return undefined;
}

export function normalizeCondition(condition: RuleCondition): ConditionData[] {
  const other = otherCondition(condition);
  return other === undefined ? paramConditions(condition) : [other];
}

/** Stores each distinct condition once and hands out its index. */
class ConditionTable {
  readonly conditions: ConditionData[] = [];
  private readonly index = new Map<string, number>();

  intern(condition: ConditionData): number {
    const key = canonicalJson(condition);
    let i = this.index.get(key);
    if (i === undefined) {
      i = this.conditions.length;
      // A regex's match is a signal keyed by the condition's place in the table (signals.ts); not a
      // bare number, which would make the core's signals object a sparse array.
      this.conditions.push(condition.op === 'regex' ? { ...condition, signal: `r${i}` } : condition);
      this.index.set(key, i);
    }
    return i;
  }
}

/**
 * What checking a condition costs in the WASM: the core matches regexes ahead
 * (signals.ts), but a regex it left to the program is compiled on each
 * evaluation (OPA's runtime keeps compiled patterns only for one evaluation),
 * so regexes go last and a rule that fails on a cheaper condition never pays it.
 */
function conditionCost(condition: ConditionData | undefined): number {
  return condition?.op === 'regex' ? 1 : 0;
}

function ruleData(policy: string, rule: PolicyRule, order: number, table: ConditionTable): RuleData {
  const when = (rule.when ?? []).flatMap(normalizeCondition).map((c) => table.intern(c));
  // Array.prototype.sort is stable: conditions of equal cost keep their written order.
  const check = [...when].sort((a, b) => conditionCost(table.conditions[a]) - conditionCost(table.conditions[b]));
  const out: RuleData = { policy, rule: rule.name, order, key: precedenceKey(rule.decision, order), decision: rule.decision, when, check };
  if (rule.actions !== undefined && rule.actions.length > 0) out.actions = [...rule.actions].sort();
  if (rule.approval !== undefined) out.approval = { ...rule.approval, approvers: [...rule.approval.approvers] };
  const redact: RedactSpec[] | undefined = rule.redact;
  if (redact !== undefined) out.redact = [...redact];
  if (rule.redactResponse !== undefined) out.redactResponse = [...rule.redactResponse];
  return out;
}

function resourceName(kind: string, item: Loaded<unknown>): string {
  return `${kind} ${item.namespace}/${item.name}`;
}

function checkDuplicates(kind: string, items: readonly Loaded<unknown>[], errors: CompileError[]): void {
  const seen = new Map<string, Loaded<unknown>>();
  for (const item of items) {
    const key = `${item.namespace}/${item.name}`;
    const first = seen.get(key);
    if (first !== undefined) {
      errors.push(
        new CompileError('conflict_error', `${resourceName(kind, item)} is defined twice (also in ${first.source.file} document ${first.source.document})`, {
          ...item.source,
          resource: resourceName(kind, item),
        }),
      );
    }
    seen.set(key, item);
  }
}

/** A tool name means one tool in the whole tenant: every policy that declares it must declare the same thing. */
function checkToolConflicts(policies: readonly Loaded<ToolPolicy>[], errors: CompileError[]): void {
  const declared = new Map<string, { json: string; where: Loaded<ToolPolicy>; index: number }[]>();
  for (const policy of policies) {
    for (const [index, tool] of (policy.resource.spec.tools ?? []).entries()) {
      const list = declared.get(tool.name) ?? [];
      list.push({ json: canonicalJson(tool), where: policy, index });
      declared.set(tool.name, list);
    }
  }
  for (const [name, list] of declared) {
    if (new Set(list.map((d) => d.json)).size <= 1) continue;
    const others = (self: Loaded<ToolPolicy>): string =>
      list.filter((d) => d.where !== self).map((d) => resourceName('ToolPolicy', d.where)).join(', ');
    for (const d of list) {
      errors.push(
        new CompileError('conflict_error', `tool ${name} is declared differently by ${others(d.where)}`, {
          ...d.where.source,
          resource: resourceName('ToolPolicy', d.where),
          field: `spec.tools[${d.index}]`,
        }),
      );
    }
  }
}

/** The first declaration of each tool name, with where it is (conflicting ones are reported by checkToolConflicts). */
function firstDeclarations(policies: readonly Loaded<ToolPolicy>[]): { tool: ToolDeclaration; where: Loaded<ToolPolicy>; index: number }[] {
  const first = new Map<string, { tool: ToolDeclaration; where: Loaded<ToolPolicy>; index: number }>();
  for (const policy of policies) {
    for (const [index, tool] of (policy.resource.spec.tools ?? []).entries()) {
      if (!first.has(tool.name)) first.set(tool.name, { tool, where: policy, index });
    }
  }
  return [...first.values()];
}

const portsOverlap = (a: number | undefined, b: number | undefined): boolean => a === undefined || b === undefined || a === b;

/** Endpoint paths overlap when either takes every path, they are equal, or a /* prefix covers the other. */
function pathsOverlap(a: string | undefined, b: string | undefined): boolean {
  if (a === undefined || b === undefined || a === b) return true;
  const covers = (pattern: string, path: string): boolean => pattern.endsWith('/*') && path.startsWith(pattern.slice(0, -1));
  return covers(a, b) || covers(b, a);
}

/** What a tool claims: requests to host (and port), and for MCP the endpoint path (absent: every path). */
interface Claim {
  kind: 'http' | 'mcp';
  host: string;
  port: number | undefined;
  path: string | undefined;
}

function claimOf(tool: ToolDeclaration): Claim | undefined {
  if (tool.http !== undefined) return { kind: 'http', host: tool.http.host, port: tool.http.port, path: undefined };
  if (tool.mcp !== undefined) return { kind: 'mcp', host: tool.mcp.host, port: tool.mcp.port, path: tool.mcp.path };
  return undefined;
}

/**
 * Where two tools would both claim a request, the sidecar could not tell which
 * tool it is: one host (and port) is one HTTP tool, one endpoint one MCP tool.
 * An HTTP tool and an MCP endpoint may share a host (the endpoint's path is the
 * MCP tool, the rest the HTTP tool) unless the MCP tool takes every path.
 */
function overlapOf(a: Claim, b: Claim): string | undefined {
  if (a.host !== b.host || !portsOverlap(a.port, b.port)) return undefined;
  const port = a.port ?? b.port;
  const at = `${a.host}${port === undefined ? '' : `:${port}`}`;
  if (a.kind === 'http' && b.kind === 'http') return at;
  if (a.kind === 'mcp' && b.kind === 'mcp') return pathsOverlap(a.path, b.path) ? `${at}${a.path ?? b.path ?? ''}` : undefined;
  const mcp = a.kind === 'mcp' ? a : b;
  return mcp.path === undefined ? at : undefined;
}

function checkToolRoutes(policies: readonly Loaded<ToolPolicy>[], errors: CompileError[]): void {
  const tools = firstDeclarations(policies);
  for (const [i, a] of tools.entries()) {
    for (const b of tools.slice(i + 1)) {
      const [claimA, claimB] = [claimOf(a.tool), claimOf(b.tool)];
      const where = claimA === undefined || claimB === undefined ? undefined : overlapOf(claimA, claimB);
      if (where === undefined) continue;
      for (const [self, other] of [[a, b], [b, a]] as const) {
        errors.push(
          new CompileError('conflict_error', `tools ${self.tool.name} and ${other.tool.name} both claim requests to ${where} (declared by ${resourceName('ToolPolicy', other.where)})`, {
            ...self.where.source,
            resource: resourceName('ToolPolicy', self.where),
            field: `spec.tools[${self.index}]`,
          }),
        );
      }
    }
  }
}

/** What an action declaration says of failing open: readOnly as written, failOpen sorted. */
function failModeOf(action: { readOnly?: boolean; failOpen?: readonly FailOpenCause[] }): { readOnly?: boolean; failOpen?: FailOpenCause[] } {
  return {
    ...(action.readOnly === undefined ? {} : { readOnly: action.readOnly }),
    ...(action.failOpen === undefined ? {} : { failOpen: [...new Set(action.failOpen)].sort() }),
  };
}

/** The tenant's tools by name, as the sidecar reads them. */
function toolData(policies: readonly Loaded<ToolPolicy>[]): ToolData[] {
  return firstDeclarations(policies)
    .map(({ tool }): ToolData => {
      const out: ToolData = { name: tool.name };
      if (tool.http !== undefined) {
        const actions = (tool.http.actions ?? []).map((a): ToolActionData => ({ name: a.name, method: a.method, path: a.path, ...failModeOf(a) }));
        out.http = { host: tool.http.host, ...(tool.http.port === undefined ? {} : { port: tool.http.port }), actions };
      }
      if (tool.mcp !== undefined) {
        const actions = tool.mcp.actions?.map((a): McpActionData => ({ name: a.name, ...failModeOf(a) }));
        out.mcp = {
          host: tool.mcp.host,
          ...(tool.mcp.port === undefined ? {} : { port: tool.mcp.port }),
          ...(tool.mcp.path === undefined ? {} : { path: tool.mcp.path }),
          ...(actions === undefined ? {} : { actions }),
        };
      }
      return out;
    })
    .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

const PACKAGE_LINE = /^([ \t]*)package[ \t]+[^\s#]+/m;

function customModule(policy: Loaded<ToolPolicy>, index: number, id: string): CustomModuleSource {
  const module = policy.resource.spec.rego?.[index];
  if (module === undefined) throw new Error('module index out of range');
  const resource = resourceName('ToolPolicy', policy);
  const field = `spec.rego[${index}].module`;
  if (!PACKAGE_LINE.test(module.module)) {
    throw new CompileError('rego_error', `module ${module.name} has no package declaration`, { ...policy.source, resource, field });
  }
  // The package moves under data.portcullis.custom on its own line, so OPA's line numbers still match the user's text.
  const text = module.module.replace(PACKAGE_LINE, `$1package portcullis.custom.${id} # ${resource} rego ${module.name}`);
  return { id, file: `${policy.namespace}/${policy.name}/${module.name}.rego`, resource, moduleName: module.name, field, text };
}

function limitsOf(policy: Loaded<ToolPolicy>, nextOrder: () => number): LimitData[] {
  const spec = policy.resource.spec;
  const rates = (spec.rateLimits ?? []).map((limit, i): LimitData => {
    const order = nextOrder();
    const decision = limit.onExceed ?? 'deny';
    const out: LimitData = {
      policy: policy.name,
      rule: `rateLimits[${i}]`,
      order,
      key: precedenceKey(decision, order),
      kind: 'rate',
      tool: limit.tool,
      counter: limit.action === undefined ? limit.tool : `${limit.tool}/${limit.action}`,
      decision,
      rps: limit.rps,
      burst: limit.burst ?? Math.max(1, Math.ceil(limit.rps)),
    };
    if (limit.action !== undefined) out.action = limit.action;
    return out;
  });
  const budgets = (spec.budgets ?? []).map((budget, i): LimitData => {
    const order = nextOrder();
    const decision = budget.onExceed ?? 'deny';
    const out: LimitData = {
      policy: policy.name,
      rule: `budgets[${i}]`,
      order,
      key: precedenceKey(decision, order),
      kind: 'budget',
      tool: budget.tool,
      counter: budget.tool,
      decision,
      dailyUSD: budget.dailyUSD,
      zone: budget.timeZone ?? 'UTC',
    };
    if (budget.costParam !== undefined) out.costPath = splitPath(budget.costParam);
    if (budget.costPerCall !== undefined) out.costPerCall = budget.costPerCall;
    return out;
  });
  return [...rates, ...budgets];
}

/** An RFC 3339 time in one spelling (UTC, milliseconds), so equal times give equal bundles; an unreadable one revokes everything. */
export function normalizedTime(value: string): string {
  const time = new Date(value);
  return Number.isNaN(time.getTime()) ? new Date(8.64e15).toISOString() : time.toISOString();
}

function agentData(agent: AgentIdentity): AgentData {
  const spec = agent.spec;
  const attributes = record<string>();
  for (const [k, v] of Object.entries(spec.attributes ?? {})) if (v !== undefined) attributes[k] = v;
  return {
    roles: [...(spec.roles ?? [])].sort(),
    scopes: [...(spec.scopes ?? [])].sort(),
    attributes,
    autonomyLevel: spec.autonomyLevel ?? 0,
    suspended: spec.suspended ?? false,
    ...(spec.revokedBefore === undefined ? {} : { revokedBefore: normalizedTime(spec.revokedBefore) }),
    ...(spec.userTokens === undefined ? {} : { userTokens: userTokenData(spec.userTokens) }),
  };
}

function userTokenData(spec: UserTokens): UserTokenData {
  const attributes = record<string>();
  for (const [name, claim] of Object.entries(spec.claims?.attributes ?? {})) if (claim !== undefined) attributes[name] = claim;
  return {
    issuer: spec.issuer,
    audiences: [...new Set(spec.audiences)].sort(),
    ...(spec.jwksURL === undefined ? {} : { jwksURL: spec.jwksURL }),
    ...(spec.jwks === undefined ? {} : { jwks: { keys: spec.jwks.keys.map((key) => ({ ...key })) } }),
    algorithms: [...new Set(spec.algorithms ?? USER_TOKEN_ALGORITHMS)].sort(),
    claims: { id: spec.claims?.id ?? 'sub', attributes },
  };
}

function egressData(rule: Loaded<EgressRule>, nextOrder: () => number): EgressData[] {
  return rule.resource.spec.allow.map((allow, i) => {
    const wildcard = allow.host.startsWith('*.');
    const order = nextOrder();
    const out: EgressData = { policy: rule.name, rule: `allow[${i}]`, order, key: precedenceKey('allow', order), host: wildcard ? allow.host.slice(2) : allow.host, wildcard };
    if (allow.ports !== undefined && allow.ports.length > 0) out.ports = [...allow.ports].sort((a, b) => a - b);
    return out;
  });
}

function subjectData(spec: { subjects: { agents?: string[]; roles?: string[] }; mode?: string }): SubjectData {
  return { enforced: spec.mode !== 'shadow', agents: set(spec.subjects.agents), roles: set(spec.subjects.roles) };
}

/** Rules a call may match, by namespace, tool and action: see TenantData.index. */
function candidateIndex(rules: TenantData['rules']): TenantData['index'] {
  const index = record<Record<string, Record<string, number[]>>>();
  for (const [namespace, byTool] of Object.entries(rules)) {
    for (const [tool, list] of Object.entries(byTool)) {
      const byKey = list.map((rule, position) => ({ rule, position })).sort((a, b) => a.rule.key - b.rule.key);
      const actions = new Set(list.flatMap((rule) => rule.actions ?? []));
      const byAction = record<number[]>();
      byAction[''] = byKey.filter((c) => c.rule.actions === undefined).map((c) => c.position);
      for (const action of [...actions].sort()) {
        byAction[action] = byKey.filter((c) => c.rule.actions === undefined || c.rule.actions.includes(action)).map((c) => c.position);
      }
      nested(index, namespace)[tool] = byAction;
    }
  }
  return index;
}

/**
 * Normalizes a tenant's resources (already validated one by one) into the data
 * the decision program reads, checking what only the tenant as a whole can tell:
 * duplicates and conflicting tool declarations. Resources must come sorted, as
 * tenantResources gives them, for the output to be deterministic.
 */
export function buildTenantIr(resources: TenantResources): TenantIr {
  const errors: CompileError[] = [];
  checkDuplicates('AgentIdentity', resources.agents, errors);
  checkDuplicates('ToolPolicy', resources.policies, errors);
  checkDuplicates('EgressRule', resources.egressRules, errors);
  checkToolConflicts(resources.policies, errors);
  checkToolRoutes(resources.policies, errors);

  let order = 0;
  const nextOrder = (): number => order++;
  const data: TenantData = {
    tenant: resources.tenant,
    agents: record(),
    policies: record(),
    egressPolicies: record(),
    rules: record(),
    index: record(),
    limits: record(),
    egress: record(),
    modules: [],
    conditions: [],
    zones: [],
    shadowed: record(),
    tools: toolData(resources.policies),
  };
  const table = new ConditionTable();
  const zones = new Set<string>();
  const modules: CustomModuleSource[] = [];

  for (const agent of resources.agents) nested(data.agents, agent.namespace)[agent.name] = agentData(agent.resource);
  for (const policy of resources.policies) {
    nested(data.policies, policy.namespace)[policy.name] = subjectData(policy.resource.spec);
    for (const rule of policy.resource.spec.rules ?? []) {
      const normalized = ruleData(policy.name, rule, nextOrder(), table);
      push(nested(data.rules, policy.namespace), rule.tool, normalized);
    }
  }
  for (const policy of resources.policies) {
    for (const limit of limitsOf(policy, nextOrder)) push(nested(data.limits, policy.namespace), limit.tool, limit);
  }
  for (const policy of resources.policies) {
    for (const [index, module] of (policy.resource.spec.rego ?? []).entries()) {
      const id = `m${modules.length}`;
      try {
        modules.push(customModule(policy, index, id));
        const order = nextOrder();
        data.modules.push({ id, namespace: policy.namespace, policy: policy.name, rule: `rego/${module.name}`, order, key: precedenceKey('deny', order) });
      } catch (error) {
        if (!(error instanceof CompileError)) throw error;
        errors.push(error);
      }
    }
  }
  for (const rule of resources.egressRules) {
    nested(data.egressPolicies, rule.namespace)[rule.name] = subjectData(rule.resource.spec);
    data.egress[rule.namespace] = [...(data.egress[rule.namespace] ?? []), ...egressData(rule, nextOrder)];
  }
  data.conditions = table.conditions;
  data.index = candidateIndex(data.rules);
  for (const c of table.conditions) if (c.op === 'time') zones.add(c.zone);
  data.zones = [...zones].sort();
  for (const subjects of [data.policies, data.egressPolicies]) {
    for (const [namespace, byName] of Object.entries(subjects)) {
      if (Object.values(byName).some((p) => !p.enforced)) data.shadowed[namespace] = true;
    }
  }
  if (errors.length > 0) throw new CompileErrors(errors);
  return { data, modules };
}
