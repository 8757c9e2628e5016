import fc from 'fast-check';
import { RE2JS } from 're2js';
import { describe, expect, it } from 'vitest';
import type { PolicyRule, RuleCondition } from '../api/index.ts';
import type { TenantData, Threat } from './ir.ts';
import { anchorRegex, buildTenantIr } from './ir.ts';
import type { NormalizedCall } from './input.ts';
import { normalizeInput } from './input.ts';
import type { SignalPlan } from './signals.ts';
import { computeSignals, MAX_REGEX_SIGNALS, NO_THREATS, SignalPlans } from './signals.ts';
import { agent, egressRule, tenantOf, toolPolicy } from './test-support.ts';

const NS = 'ns';
const NEW_YORK: RuleCondition = { time: { start: '09:00', end: '17:00', timeZone: 'America/New_York' } };
const PARIS: RuleCondition = { time: { start: '09:00', end: '17:00', timeZone: 'Europe/Paris' } };
const TOKYO: RuleCondition = { time: { start: '09:00', end: '17:00', timeZone: 'Asia/Tokyo' } };

function tenant(rules: PolicyRule[], ...more: Parameters<typeof tenantOf>[0]): TenantData {
  return buildTenantIr(tenantOf([agent(NS, 'bot'), toolPolicy(NS, 'p', rules), ...more], NS)).data;
}

function callOf(fields: Record<string, unknown>): NormalizedCall {
  return normalizeInput({ namespace: NS, agent: 'bot', time: '2026-11-23T14:00:00Z', ...fields });
}

/** The regex conditions a plan matches, by the regex as written. */
function regexesOf(data: TenantData, plan: SignalPlan): string[] {
  const keys = new Set(plan.regexes.map((r) => r.key));
  return data.conditions.flatMap((c) => (c.op === 'regex' && c.signal !== undefined && keys.has(c.signal) ? [c.regex] : []));
}

const countingDetector = (): { calls: number; detect: (params: unknown) => Record<Threat, string[]> } => {
  const counter = {
    calls: 0,
    detect: (): Record<Threat, string[]> => {
      counter.calls++;
      return { prompt_injection: ['text'], sql_injection: [], path_traversal: [], pii: [] };
    },
  };
  return counter;
};

describe('signal plans: only what the rules a call can reach read', () => {
  const data = tenant([
    { name: 'create-hours', tool: 'pay', actions: ['create'], decision: 'allow', when: [NEW_YORK, { param: 'account', regex: '[0-9]{10}' }] },
    { name: 'any-threat', tool: 'pay', decision: 'deny', when: [{ threat: ['sql_injection'] }] },
    { name: 'other-hours', tool: 'other', decision: 'allow', when: [PARIS, { param: 'code', regex: '[A-Z]{3}' }] },
  ]);
  const plans = new SignalPlans(data);

  it.each([
    { name: "a call of a listed action reaches that action's rules and the rules for every action", fields: { tool: 'pay', action: 'create' }, zones: ['America/New_York'], threats: true, regexes: ['[0-9]{10}'] },
    { name: 'a call of an action no rule lists reaches only the rules for every action', fields: { tool: 'pay', action: 'refund' }, zones: [], threats: true, regexes: [] },
    { name: 'a call without an action reaches only the rules for every action', fields: { tool: 'pay' }, zones: [], threats: true, regexes: [] },
    { name: "another tool's call reaches that tool's rules", fields: { tool: 'other' }, zones: ['Europe/Paris'], threats: false, regexes: ['[A-Z]{3}'] },
    { name: 'a tool no rule speaks of reaches nothing', fields: { tool: 'unruled' }, zones: [], threats: false, regexes: [] },
    { name: 'a tool named like an Object property reaches nothing', fields: { tool: 'constructor', action: 'toString' }, zones: [], threats: false, regexes: [] },
    { name: 'an egress check reaches no rule', fields: { egress: { host: 'api.example.com', port: 443 } }, zones: [], threats: false, regexes: [] },
  ])('$name', ({ fields, zones, threats, regexes }) => {
    const plan = plans.planFor(callOf(fields));
    expect({ zones: plan.zones, threats: plan.threats, regexes: regexesOf(data, plan) }).toEqual({ zones, threats, regexes });
  });

  it('plans nothing for a namespace of the tenant that has no rules', () => {
    expect(plans.planFor({ ...callOf({ tool: 'pay', action: 'create' }), namespace: 'elsewhere' })).toEqual({ zones: [], threats: false, regexes: [], unmatched: {} });
  });

  it('gives every call of a namespace with raw Rego modules every clock and the threat findings (egress: the clocks)', () => {
    const withModule = tenant(
      [
        { name: 'hours', tool: 'pay', decision: 'allow', when: [NEW_YORK] },
        { name: 'tokyo', tool: 'other', decision: 'allow', when: [TOKYO, { param: 'code', regex: '[A-Z]{3}' }] },
      ],
      toolPolicy(NS, 'custom', [], (p) => {
        p.spec.rego = [{ name: 'm', module: 'package m\n\ndeny contains "no" if input.params.no\n' }];
      }),
      egressRule(NS, 'out', [{ host: 'api.example.com' }]),
    );
    const modulePlans = new SignalPlans(withModule);
    const every = ['America/New_York', 'Asia/Tokyo'];
    expect(modulePlans.planFor(callOf({ tool: 'unruled' }))).toMatchObject({ zones: every, threats: true, regexes: [] });
    expect(modulePlans.planFor(callOf({ tool: 'pay' }))).toMatchObject({ zones: every, threats: true, regexes: [] });
    expect(regexesOf(withModule, modulePlans.planFor(callOf({ tool: 'other' })))).toEqual(['[A-Z]{3}']);
    expect(modulePlans.planFor(callOf({ egress: { host: 'api.example.com', port: 443 } }))).toMatchObject({ zones: every, threats: false });
  });

  it(`matches at most ${MAX_REGEX_SIGNALS} distinct regexes of a tool, those of the rules tried first`, () => {
    const rules: PolicyRule[] = Array.from({ length: MAX_REGEX_SIGNALS + 8 }, (_, r) => ({
      name: `r${r}`,
      tool: 'many',
      decision: r % 2 === 0 ? 'allow' : 'deny',
      when: [{ param: 'v', regex: `x${r}` }, { param: 'w', regex: 'shared' }],
    }));
    const many = tenant(rules);
    const matched = regexesOf(many, new SignalPlans(many).planFor(callOf({ tool: 'many' })));
    expect(matched).toHaveLength(MAX_REGEX_SIGNALS);
    // Deny rules are tried first (precedence), then allow rules, each in written order.
    const tried = [...rules.filter((r) => r.decision === 'deny'), ...rules.filter((r) => r.decision === 'allow')];
    const expected = [...new Set(tried.flatMap((r) => (r.when ?? []).map((c) => c.regex ?? '')))].slice(0, MAX_REGEX_SIGNALS);
    expect(new Set(matched)).toEqual(new Set(expected));
  });

  it('leaves a regex RE2 refuses to the program', () => {
    const data = tenant([{ name: 'r', tool: 't', decision: 'allow', when: [{ param: 'v', regex: 'ok' }] }]);
    const refused = { ...data, conditions: data.conditions.map((c) => (c.op === 'regex' ? { ...c, regex: '(' } : c)) };
    expect(new SignalPlans(refused).planFor(callOf({ tool: 't' })).regexes).toEqual([]);
  });
});

describe('computing the signals of a plan', () => {
  it('reads the clock in the planned zones only, and runs the detectors only when planned', () => {
    const data = tenant([
      { name: 'hours', tool: 'timed', decision: 'allow', when: [NEW_YORK] },
      { name: 'guard', tool: 'guarded', decision: 'deny', when: [{ threat: ['prompt_injection'] }] },
      { name: 'paris', tool: 'paris', decision: 'allow', when: [PARIS] },
    ]);
    const plans = new SignalPlans(data);
    const detector = countingDetector();
    const timed = computeSignals(plans.planFor(callOf({ tool: 'timed' })), callOf({ tool: 'timed' }), detector.detect);
    expect(timed).toEqual({ clock: { 'America/New_York': { day: 'Mon', minute: 9 * 60 } }, threats: NO_THREATS, regex: {} });
    expect(detector.calls).toBe(0);
    const guarded = computeSignals(plans.planFor(callOf({ tool: 'guarded' })), callOf({ tool: 'guarded' }), detector.detect);
    expect(guarded).toEqual({ clock: {}, threats: { prompt_injection: ['text'], sql_injection: [], path_traversal: [], pii: [] }, regex: {} });
    expect(detector.calls).toBe(1);
  });

  it('reads the clock at the call time, lower-case RFC 3339 letters included', () => {
    const data = tenant([{ name: 'hours', tool: 'timed', decision: 'allow', when: [TOKYO] }]);
    const call = callOf({ tool: 'timed', time: '2026-11-23t23:30:00z' });
    const signals = computeSignals(new SignalPlans(data).planFor(call), call, countingDetector().detect);
    expect(signals.clock).toEqual({ 'Asia/Tokyo': { day: 'Tue', minute: 8 * 60 + 30 } });
  });

  const regexCases: { name: string; regex: string; params: Record<string, unknown>; path?: string; matches: boolean }[] = [
    { name: 'a whole-value match', regex: '[0-9]{3}', params: { v: '123' }, matches: true },
    { name: 'no match inside a longer value', regex: '[0-9]{3}', params: { v: '1234' }, matches: false },
    { name: 'an alternation matching a prefix only', regex: 'a|b', params: { v: 'ab' }, matches: false },
    { name: 'an alternation matching one whole alternative', regex: 'a|b', params: { v: 'b' }, matches: true },
    { name: 'an alternation whose longer branch matches whole', regex: 'a|ab', params: { v: 'ab' }, matches: true },
    { name: 'anchors written in the regex, with a trailing newline', regex: '^[0-9]+$', params: { v: '12\n' }, matches: false },
    { name: 'a multi-line $ inside the regex, with a trailing newline', regex: '(?m)[0-9]+$', params: { v: '12\n' }, matches: false },
    { name: 'a regex that consumes the newline', regex: '.*\\n', params: { v: 'a\n' }, matches: true },
    { name: 'case folding', regex: '(?i)usd', params: { v: 'UsD' }, matches: true },
    { name: 'a Unicode class', regex: '\\p{Greek}+', params: { v: 'αβγ' }, matches: true },
    { name: 'a Cyrillic look-alike', regex: '[A-Z]+', params: { v: '\u0415UR' }, matches: false },
    { name: 'a number, which is not a string', regex: '[0-9]+', params: { v: 123 }, matches: false },
    { name: 'null', regex: '.*', params: { v: null }, matches: false },
    { name: 'a missing parameter', regex: '.*', params: {}, matches: false },
    { name: 'a nested parameter', regex: 'x', params: { a: { b: 'x' } }, path: 'a.b', matches: true },
    { name: 'no path through a list', regex: 'x', params: { a: ['x'] }, path: 'a.0', matches: false },
    { name: 'no path through a string', regex: '.*', params: { a: 'text' }, path: 'a.length', matches: false },
    { name: 'a __proto__ key as an ordinary parameter', regex: 'x', params: JSON.parse('{"__proto__": {"b": "x"}}') as Record<string, unknown>, path: '__proto__.b', matches: true },
    { name: 'nothing from the prototype', regex: '.*', params: {}, path: 'constructor.name', matches: false },
  ];

  it.each(regexCases)('matches regexes against the whole parameter value: $name', ({ regex, params, path, matches }) => {
    const data = tenant([{ name: 'r', tool: 't', decision: 'allow', when: [{ param: path ?? 'v', regex }] }]);
    const call = callOf({ tool: 't', params });
    const signals = computeSignals(new SignalPlans(data).planFor(call), call, countingDetector().detect);
    expect(Object.values(signals.regex)).toEqual([matches]);
  });

  it('agrees with a search for the anchored pattern, which the program matches without the core', () => {
    const regexes = ['a|ab', '[0-9]{2,3}', '(?i)é+', '.*\\n', '(?s).*', '\\p{Lu}\\w*', 'x?$', '(?m)^a$', '[^a]*', '\\bword\\b', '(a|b)*c'];
    const value = fc.oneof(fc.string({ maxLength: 6 }), fc.constantFrom('ab', 'a\n', 'A', 'É', 'word', 'cc', 'abc', '12\n', ''));
    fc.assert(
      fc.property(fc.constantFrom(...regexes), value, (regex, v) => {
        const data = tenant([{ name: 'r', tool: 't', decision: 'allow', when: [{ param: 'v', regex }] }]);
        const call = callOf({ tool: 't', params: { v } });
        const signals = computeSignals(new SignalPlans(data).planFor(call), call, countingDetector().detect);
        expect(Object.values(signals.regex)).toEqual([RE2JS.compile(anchorRegex(regex)).matcher(v).find()]);
      }),
      { numRuns: 500 },
    );
  });

  it("starts every call's matches afresh", () => {
    const data = tenant([{ name: 'r', tool: 't', decision: 'allow', when: [{ param: 'v', regex: 'x+' }] }]);
    const plans = new SignalPlans(data);
    const signalsFor = (v: string): Record<string, boolean> => {
      const call = callOf({ tool: 't', params: { v } });
      return computeSignals(plans.planFor(call), call, countingDetector().detect).regex;
    };
    expect(Object.values(signalsFor('xx'))).toEqual([true]);
    expect(Object.values(signalsFor('yy'))).toEqual([false]);
    expect(Object.values(plans.planFor(callOf({ tool: 't' })).unmatched)).toEqual([false]);
  });

  it('keys each regex condition once, however many rules share it', () => {
    const shared: RuleCondition = { param: 'v', regex: 'x+' };
    const data = tenant([
      { name: 'a', tool: 't', decision: 'allow', when: [shared] },
      { name: 'b', tool: 't', decision: 'deny', when: [shared, { param: 'w', regex: 'x+' }] },
    ]);
    const call = callOf({ tool: 't', params: { v: 'xx', w: 'y' } });
    const signals = computeSignals(new SignalPlans(data).planFor(call), call, countingDetector().detect);
    expect(Object.values(signals.regex).sort()).toEqual([false, true]);
    expect(Object.keys(new SignalPlans(data).planFor(call).unmatched)).toEqual(Object.keys(signals.regex));
    expect(Object.keys(signals.regex).every((key) => /^r[0-9]+$/.test(key))).toBe(true);
  });
});
