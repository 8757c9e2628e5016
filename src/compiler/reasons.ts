// Reasons in words: what each condition observed and why it held or did not,
// with the offending value, e.g. "params.amount 50000 > max 5000".
import type { ConditionData, LimitData } from './ir.ts';

/** What the decision program observed for a condition (see observe() in program.ts). */
export interface Observed {
  present: boolean;
  value?: unknown;
  user?: unknown;
  user_missing?: boolean;
}

const MAX_VALUE_LENGTH = 80;

/** A value as JSON, non-ASCII escaped so look-alike letters (Cyrillic Е in ЕUR) show, cut when long. */
export function showValue(value: unknown): string {
  // JSON.stringify returns undefined for undefined, though its type says string.
  const json = (JSON.stringify(value) as string | undefined) ?? 'undefined';
  const escaped = json.replace(/[^\x20-\x7e]/g, (unit) => `\\u${unit.charCodeAt(0).toString(16).padStart(4, '0')}`);
  return escaped.length > MAX_VALUE_LENGTH ? `${escaped.slice(0, MAX_VALUE_LENGTH - 1)}…` : escaped;
}

export function showPath(path: readonly string[]): string {
  return `params.${path.join('.')}`;
}

function clock(minute: number): string {
  return `${String(Math.floor(minute / 60)).padStart(2, '0')}:${String(minute % 60).padStart(2, '0')}`;
}

/**
 * The words of a condition that do not depend on the call (its path, the
 * values it compares with, its window), worded once per condition: a
 * bundle's conditions live as long as the bundle, and the sidecar words
 * every decision's reasons for its audit log.
 */
interface ConstantWords {
  /** params.PATH, for conditions on a parameter. */
  subject: string;
  /** What the call is compared with, as the reason shows it. */
  operand: string;
}

const constantWords = new WeakMap<ConditionData, ConstantWords>();

function operandOf(c: ConditionData): string {
  switch (c.op) {
    case 'equals':
      return showValue(c.value);
    case 'oneOf':
    case 'notOneOf':
      return showValue(c.values);
    case 'regex':
      return showValue(c.regex);
    case 'time':
      return `${c.days.join(',')} ${clock(c.start)}-${clock(c.end)}`;
    case 'delegatedBy':
      return showValue(c.agents);
    default:
      return '';
  }
}

function wordsOf(c: ConditionData): ConstantWords {
  let words = constantWords.get(c);
  if (words === undefined) {
    words = { subject: 'path' in c ? showPath(c.path) : '', operand: operandOf(c) };
    constantWords.set(c, words);
  }
  return words;
}

const NUMERIC: Record<'min' | 'max' | 'gt' | 'lt', [held: string, failed: string]> = {
  min: ['>=', '<'],
  max: ['<=', '>'],
  gt: ['>', '<='],
  lt: ['<', '>='],
};

function describeParam(c: Extract<ConditionData, { path: string[] }>, o: Observed, held: boolean): string {
  const { subject, operand } = wordsOf(c);
  if (c.op === 'exists') {
    if (c.present) return held ? `${subject} ${showValue(o.value)} is present` : `${subject} is missing`;
    return held ? `${subject} is absent` : `${subject} ${showValue(o.value)} is present but must be absent`;
  }
  // A user attribute is looked up first: its absence is the one to report.
  if (c.op === 'userAttribute') return describeUserAttribute(c, o, held);
  if (!o.present) return `${subject} is missing (${c.op})`;
  const value = `${subject} ${showValue(o.value)}`;
  switch (c.op) {
    case 'equals':
      return `${value} ${held ? 'equals' : 'does not equal'} ${operand}`;
    case 'oneOf':
      return `${value} is ${held ? '' : 'not '}one of ${operand}`;
    case 'notOneOf':
      return `${value} is ${held ? 'none of' : 'not a string, number or boolean outside'} ${operand}`;
    case 'regex':
      if (typeof o.value !== 'string') return `${value} is not a string (regex ${operand})`;
      return `${value} ${held ? 'matches' : 'does not match'} regex ${operand}`;
    default: {
      if (typeof o.value !== 'number') return `${value} is not a number (${c.op} ${c.bound})`;
      const [yes, no] = NUMERIC[c.op];
      return `${value} ${held ? yes : no} ${c.op} ${c.bound}`;
    }
  }
}

function describeUserAttribute(c: Extract<ConditionData, { op: 'userAttribute' }>, o: Observed, held: boolean): string {
  const attribute = `user.attributes.${c.attribute}`;
  const { subject } = wordsOf(c);
  if (o.user_missing === true) return `${attribute} is missing (compared with ${subject})`;
  if (!o.present) return `${subject} is missing (compared with ${attribute})`;
  return `${attribute} ${showValue(o.user)} ${held ? 'equals' : 'does not equal'} ${subject} ${showValue(o.value)}`;
}

function describeTime(c: Extract<ConditionData, { op: 'time' }>, o: Observed, held: boolean): string {
  const now = o.value as { day?: string; minute?: number } | undefined;
  const when = now?.day !== undefined && now.minute !== undefined ? `${now.day} ${clock(now.minute)}` : 'unknown';
  return `time ${when} ${c.zone} is ${held ? 'within' : 'outside'} ${wordsOf(c).operand}`;
}

function describeThreat(c: Extract<ConditionData, { op: 'threat' }>, o: Observed, held: boolean): string {
  const found = (o.value ?? {}) as Record<string, unknown>;
  if (!held) return `no ${c.threats.join(' or ')} signal in params`;
  return c.threats
    .flatMap((t) => {
      const paths = found[t];
      return Array.isArray(paths) && paths.length > 0 ? [`${t} detected in ${paths.map(String).join(', ')}`] : [];
    })
    .join('; ');
}

export function describeCondition(c: ConditionData, o: Observed, held: boolean): string {
  switch (c.op) {
    case 'time':
      return describeTime(c, o, held);
    case 'callsOver':
      return `calls to the tool in the last ${c.window}: ${showValue(o.value)} before this one, ${held ? 'within' : 'over'} max ${c.max}`;
    case 'delegatedBy':
      return held ? `delegated by one of ${wordsOf(c).operand} (chain ${showValue(o.value)})` : `not delegated by any of ${wordsOf(c).operand} (chain ${showValue(o.value)})`;
    case 'delegationDepth':
      return `delegation depth ${showValue(o.value)} ${held ? '<=' : '>'} max ${c.max}`;
    case 'autonomyLevel':
      return `autonomy level ${showValue(o.value)} ${held ? '>=' : '<'} min ${c.min}`;
    case 'threat':
      return describeThreat(c, o, held);
    default:
      return describeParam(c, o, held);
  }
}

export function describeLimit(limit: LimitData, observed: Record<string, unknown>): string {
  const scope = limit.action === undefined ? limit.tool : `${limit.tool} action ${limit.action}`;
  if (limit.kind === 'rate') {
    return `rate limit ${limit.rps ?? 0}/s (burst ${limit.burst ?? 0}) on ${scope} exceeded: ${showValue(observed.tokens)} tokens left`;
  }
  const spent = showValue(observed.spent);
  if (observed.cost === null) {
    const costParam = limit.costPath === undefined ? 'cost' : showPath(limit.costPath);
    return `daily budget $${limit.dailyUSD ?? 0} on ${scope}: ${costParam} is missing or not a number >= 0`;
  }
  return `daily budget $${limit.dailyUSD ?? 0} on ${scope} exceeded: spent ${spent} + cost ${showValue(observed.cost)}`;
}
