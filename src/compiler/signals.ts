// What the decision program reads besides the call (input.signals): the local
// clock in each time zone, the threat detectors' findings and the results of
// regex conditions. The WASM runtime has no time builtins, the detectors are
// shared with redaction, and the runtime compiles a regex again at every
// evaluation (its cache lives on a heap reset per evaluation), so the core
// computes them — only those the rules a call can reach read, planned once per
// namespace, tool and action from the tenant's index.
import { RE2JS } from 're2js';
import type { ConditionData, TenantData, Threat } from './ir.ts';
import type { NormalizedCall } from './input.ts';
import type { LocalClock } from './time-zones.ts';
import { localClock } from './time-zones.ts';

export interface Signals {
  /** Time zone → its local clock, for the zones of the time conditions the call can reach. */
  clock: Record<string, LocalClock>;
  threats: Record<Threat, string[]>;
  /**
   * A regex condition's signal key (ConditionData) → whether its parameter is a
   * string the pattern matches whole. The program matches a condition missing
   * here itself, so leaving one out costs time, never a different answer.
   */
  regex: Record<string, boolean>;
}

export const NO_THREATS: Readonly<Record<Threat, string[]>> = Object.freeze({ prompt_injection: [], sql_injection: [], path_traversal: [], pii: [] });

/**
 * Regex conditions a plan matches at most, the first by precedence (the rules
 * the program tries first). A tool with more distinct regexes leaves the rest
 * to the program, which matches only those it reaches.
 */
export const MAX_REGEX_SIGNALS = 32;

interface RegexSignal {
  key: string;
  path: readonly string[];
  matcher: RE2JS;
}

/** The signals the rules a call can reach read: see SignalPlans. */
export interface SignalPlan {
  zones: readonly string[];
  threats: boolean;
  regexes: readonly RegexSignal[];
  /**
   * Every regex key, not matched. A call's results start as a copy: an object
   * given many keys one by one becomes a dictionary in V8, slow to fill and to
   * write as JSON; a copy of this one keeps a fixed shape.
   */
  unmatched: Readonly<Record<string, boolean>>;
}

function signalPlan(zones: readonly string[], threats: boolean, regexes: readonly RegexSignal[]): SignalPlan {
  const unmatched: Record<string, boolean> = {};
  for (const { key } of regexes) unmatched[key] = false;
  return { zones, threats, regexes, unmatched: { ...unmatched } };
}

const NOTHING: SignalPlan = signalPlan([], false, []);

/**
 * The matcher of a regex condition: RE2 (re2js, which the compiler validates
 * patterns with) over the user's regex, matched against the whole value — what
 * the program's search for the anchored ^(?:regex)$ finds, and faster (a whole
 * match runs on RE2's DFA). undefined when the condition has no signal key or
 * RE2 refuses the regex: the program then matches it itself.
 */
function regexSignal(c: Extract<ConditionData, { op: 'regex' }>): RegexSignal | undefined {
  if (c.signal === undefined) return undefined;
  try {
    return { key: c.signal, path: c.path, matcher: RE2JS.compile(c.regex) };
  } catch {
    return undefined;
  }
}

/** The signals the conditions read (indexes into the tenant's conditions, the first candidates' first), besides the baseline's. */
function planOf(
  table: readonly ConditionData[],
  conditions: readonly number[],
  baseline: SignalPlan,
  matcherOf: (i: number, c: Extract<ConditionData, { op: 'regex' }>) => RegexSignal | undefined,
): SignalPlan {
  const zones = new Set(baseline.zones);
  let threats = baseline.threats;
  const regexes = new Map<number, RegexSignal>();
  for (const i of conditions) {
    const c = table[i];
    if (c?.op === 'time') zones.add(c.zone);
    if (c?.op === 'threat') threats = true;
    if (c?.op !== 'regex' || regexes.has(i) || regexes.size >= MAX_REGEX_SIGNALS) continue;
    const signal = matcherOf(i, c);
    if (signal !== undefined) regexes.set(i, signal);
  }
  return signalPlan([...zones].sort(), threats, [...regexes.values()]);
}

/**
 * Plans, by namespace, tool and action, which signals a call needs. A call's
 * candidates are the rules the program may check (TenantData.index, the same
 * lookup as candidates in program.ts); only their conditions read signals. Raw
 * Rego modules may read any signal, so calls in a namespace with modules get
 * every clock and the threat findings.
 */
export class SignalPlans {
  private readonly plans = new Map<string, Map<string, Map<string, SignalPlan>>>();
  /** What raw modules may read, by namespace: for calls that reach no rule, and for egress checks (never scanned for threats). */
  private readonly modules = new Map<string, { call: SignalPlan; egress: SignalPlan }>();

  constructor(data: TenantData) {
    const matchers = new Map<number, RegexSignal | undefined>();
    const matcherOf = (i: number, c: Extract<ConditionData, { op: 'regex' }>): RegexSignal | undefined => {
      if (!matchers.has(i)) matchers.set(i, regexSignal(c));
      return matchers.get(i);
    };
    for (const module of data.modules) {
      this.modules.set(module.namespace, { call: signalPlan(data.zones, true, []), egress: signalPlan(data.zones, false, []) });
    }
    for (const [namespace, byTool] of Object.entries(data.index)) {
      const baseline = this.modules.get(namespace)?.call ?? NOTHING;
      const tools = new Map<string, Map<string, SignalPlan>>();
      this.plans.set(namespace, tools);
      for (const [tool, byAction] of Object.entries(byTool)) {
        const rules = data.rules[namespace]?.[tool] ?? [];
        const plans = Object.entries(byAction).map(([action, positions]): [string, SignalPlan] => {
          const conditions = positions.flatMap((position) => rules[position]?.when ?? []);
          return [action, planOf(data.conditions, conditions, baseline, matcherOf)];
        });
        tools.set(tool, new Map(plans));
      }
    }
  }

  /** The plan for a call: its action's candidates, else those of the rules that list no action (as the program picks them). */
  planFor(call: Pick<NormalizedCall, 'namespace' | 'tool' | 'action' | 'egress'>): SignalPlan {
    const modules = this.modules.get(call.namespace);
    if (call.egress !== undefined) return modules?.egress ?? NOTHING;
    const baseline = modules?.call ?? NOTHING;
    const actions = call.tool === undefined ? undefined : this.plans.get(call.namespace)?.get(call.tool);
    if (actions === undefined) return baseline;
    return (call.action === undefined ? undefined : actions.get(call.action)) ?? actions.get('') ?? baseline;
  }
}

/** The string at a dotted path of the params (objects only, as the program's lookup), or undefined. */
function stringAt(params: unknown, path: readonly string[]): string | undefined {
  let value = params;
  for (const key of path) {
    if (value === null || typeof value !== 'object' || Array.isArray(value) || !Object.hasOwn(value, key)) return undefined;
    value = (value as Record<string, unknown>)[key];
  }
  return typeof value === 'string' ? value : undefined;
}

/** The signals a plan asks for, for one call; the instant is read only when a clock is. */
export function computeSignals(plan: SignalPlan, call: NormalizedCall, detectThreats: (params: unknown) => Record<Threat, string[]>): Signals {
  // Plain objects, not null-prototype ones: V8 keeps those as dictionaries, which JSON.stringify
  // walks slowly. Their keys cannot be __proto__: zones are IANA names, regex keys rN (ir.ts).
  const clock: Record<string, LocalClock> = {};
  if (plan.zones.length > 0) {
    const instant = Date.parse(call.time.toUpperCase());
    for (const zone of plan.zones) clock[zone] = localClock(instant, zone);
  }
  const regex = { ...plan.unmatched };
  for (const { key, path, matcher } of plan.regexes) {
    const value = stringAt(call.params, path);
    if (value !== undefined && matcher.matches(value)) regex[key] = true;
  }
  return { clock, threats: plan.threats ? detectThreats(call.params) : NO_THREATS, regex };
}
