// What a call's reservation touches, and what its outcome means, with no I/O:
// the counters to keep (token buckets, daily spend, sliding windows) and their
// keys, the counters handed to the policy, and the retry hint of a call a limit
// refused. Both stores (memory.ts, redis.ts) run the same plan.
import type { AuthorizationDecision, CallCounters, Obligations } from '../../compiler/index.ts';
import { parseDuration } from '../../compiler/durations.ts';
import type { CounterScope } from './acl.ts';
import { counterKeyPrefix } from './acl.ts';
import type { LocalDay } from './calendar.ts';
import { daysAround, localRfc3339 } from './calendar.ts';
import { fromMicros, toMicros } from './money.ts';


export interface CountedCall {
  tool: string;
  action?: string;
  params?: unknown;
}

/** A token bucket: burst tokens, refilled at rps per second; one token per call. */
export interface BucketPlan {
  key: string;
  /** The key in counters.rate: the tool, or tool/action. */
  counter: string;
  rps: number;
  burst: number;
  /** Time to refill an empty bucket, plus a second: past it the state equals a full bucket and may expire. */
  ttlMs: number;
}

/** Spend since local midnight in a zone, in micro-dollars. */
export interface SpendPlan {
  key: string;
  /** The key in counters.spentUSD: the tool. */
  counter: string;
  timeZone: string;
  /** The smallest dailyUSD of the budgets that share this counter, rounded down. */
  capMicros: number;
  /** The call's cost, rounded up; undefined when the cost parameter is missing or not a number >= 0. */
  costMicros: number | undefined;
  /** The day before, of and after the call by the sidecar's clock: the store picks the one holding its own time. */
  days: [LocalDay, LocalDay, LocalDay];
}

/** Calls of the agent to a tool within the last ms milliseconds. */
export interface WindowPlan {
  key: string;
  tool: string;
  ms: number;
  /** The windows as the rules write them (1h, 60m), which the policy reads counters.calls by. */
  windows: string[];
}

export interface ReservationPlan {
  buckets: BucketPlan[];
  spends: SpendPlan[];
  windows: WindowPlan[];
}

/** What a store saw and did when it reserved a plan, item by item in plan order. */
export interface Reserved {
  /** The store's clock (milliseconds since the epoch) when it reserved. */
  now: number;
  buckets: { before: number; taken: boolean }[];
  spends: { beforeMicros: number; reserved: boolean; day: LocalDay }[];
  windows: { before: number }[];
}

/** What to undo or add once the decision is known, item by item in plan order. */
export interface Adjustment {
  /** Give the token back. */
  refundBuckets: boolean[];
  /** Micro-dollars to add (negative: give back) to the spend of that day; 0 leaves it. */
  spendDeltas: number[];
  /** Remove the call from the window; with max, also say when the window next holds fewer than max calls. */
  windows: { remove: boolean; max?: number }[];
}

export interface Settled {
  now: number;
  /** Per window asked with max: milliseconds until it holds fewer than max calls (0: it does now). */
  windowWaits: (number | undefined)[];
}

/** The cost of a call: a parameter (dotted path) or a fixed amount; undefined when the parameter is not a number >= 0. */
export function costOf(params: unknown, spend: Obligations['spend'][number]): number | undefined {
  if ('perCall' in spend) return spend.perCall;
  let value: unknown = params;
  for (const segment of spend.param.split('.')) {
    if (value === null || typeof value !== 'object' || Array.isArray(value) || !Object.hasOwn(value, segment)) return undefined;
    value = (value as Record<string, unknown>)[segment];
  }
  return typeof value === 'number' && Number.isFinite(value) && value >= 0 ? value : undefined;
}

function windowMs(window: string): number {
  const ms = parseDuration(window);
  if (ms === undefined || ms <= 0) throw new Error(`callsOver window ${JSON.stringify(window)} is not a duration`);
  return ms;
}

/** The counters a call's obligations name, with their keys and the call's cost. `now` is the sidecar's clock. */
export function planReservation(scope: CounterScope, call: CountedCall, obligations: Obligations, now: number): ReservationPlan {
  const prefix = counterKeyPrefix(scope);
  const buckets = new Map<string, BucketPlan>();
  for (const { key: counter, rps, burst } of obligations.rate) {
    if (!(rps > 0) || !(burst >= 1)) throw new Error(`rate limit on ${counter} needs rps > 0 and burst >= 1 (got ${String(rps)}, ${String(burst)})`);
    const key = `${prefix}rate:${String(rps)}:${String(burst)}:${counter}`;
    buckets.set(key, { key, counter, rps, burst, ttlMs: Math.ceil((burst / rps) * 1000) + 1000 });
  }
  const spends = new Map<string, SpendPlan>();
  for (const spend of obligations.spend) {
    const cost = costOf(call.params, spend);
    const costSource = 'perCall' in spend ? `fixed=${String(toMicros(spend.perCall, 'up'))}` : `param=${spend.param}`;
    const key = `${prefix}spend:${spend.timeZone}:${costSource}:${spend.key}`;
    const capMicros = toMicros(spend.dailyUSD, 'down');
    const known = spends.get(key);
    if (known !== undefined) {
      known.capMicros = Math.min(known.capMicros, capMicros);
      continue;
    }
    spends.set(key, {
      key,
      counter: spend.key,
      timeZone: spend.timeZone,
      capMicros,
      costMicros: cost === undefined ? undefined : toMicros(cost, 'up'),
      days: daysAround(now, spend.timeZone),
    });
  }
  const windows = new Map<string, WindowPlan>();
  for (const { tool, window } of obligations.calls) {
    const ms = windowMs(window);
    const key = `${prefix}calls:${String(ms)}:${tool}`;
    const known = windows.get(key);
    if (known === undefined) windows.set(key, { key, tool, ms, windows: [window] });
    else if (!known.windows.includes(window)) known.windows.push(window);
  }
  return { buckets: [...buckets.values()], spends: [...spends.values()], windows: [...windows.values()] };
}

/**
 * What the policy reads: tokens left before this call (the fewest, when limits
 * share a counter), dollars spent today before it (the most), and calls in each
 * window before it.
 */
export function countersOf(plan: ReservationPlan, reserved: Reserved): CallCounters {
  const counters: CallCounters = { calls: {}, rate: {}, spentUSD: {} };
  plan.buckets.forEach((bucket, i) => {
    const before = reserved.buckets[i]?.before ?? 0;
    counters.rate[bucket.counter] = Math.min(before, counters.rate[bucket.counter] ?? before);
  });
  plan.spends.forEach((spend, i) => {
    const before = fromMicros(reserved.spends[i]?.beforeMicros ?? Number.MAX_SAFE_INTEGER);
    counters.spentUSD[spend.counter] = Math.max(before, counters.spentUSD[spend.counter] ?? before);
  });
  plan.windows.forEach((window, i) => {
    const perTool = (counters.calls[window.tool] ??= {});
    for (const written of window.windows) perTool[written] = reserved.windows[i]?.before ?? Number.MAX_SAFE_INTEGER;
  });
  return counters;
}

/** Whether the call goes ahead: allowed, sanitized, or decided by a shadow policy. */
export function passes(decision: AuthorizationDecision): boolean {
  return !decision.enforced || decision.decision === 'allow' || decision.decision === 'sanitize';
}

/**
 * The adjustment for a decided call. A call that goes ahead keeps what it
 * reserved, and a cost the store did not reserve (a budget that does not apply
 * to this agent) is added so the spend stays true. A refused call gives
 * everything back.
 */
export function adjustmentFor(plan: ReservationPlan, reserved: Reserved, goesAhead: boolean, windowMax: ReadonlyMap<string, number> = new Map()): Adjustment {
  return {
    refundBuckets: plan.buckets.map((_, i) => !goesAhead && reserved.buckets[i]?.taken === true),
    spendDeltas: plan.spends.map((spend, i) => {
      const cost = spend.costMicros ?? 0;
      const held = reserved.spends[i]?.reserved === true;
      if (goesAhead) return held ? 0 : cost;
      return held ? -cost : 0;
    }),
    windows: plan.windows.map((window) => {
      const max = window.windows.map((w) => windowMax.get(w)).find((m) => m !== undefined);
      return { remove: !goesAhead, ...(max === undefined ? {} : { max }) };
    }),
  };
}

export function isNoop(adjustment: Adjustment): boolean {
  return !adjustment.refundBuckets.includes(true) && adjustment.spendDeltas.every((d) => d === 0) && adjustment.windows.every((w) => !w.remove && w.max === undefined);
}

export type LimitKind = 'rate' | 'budget' | 'calls';

/** The limit that refused a call, by the deciding rule: rateLimits[N], budgets[N], or rules that failed only on callsOver. */
export function refusingLimit(decision: AuthorizationDecision): LimitKind | undefined {
  if (passes(decision)) return undefined;
  if (/^rateLimits\[\d+\]$/.test(decision.rule)) return 'rate';
  if (/^budgets\[\d+\]$/.test(decision.rule)) return 'budget';
  return callsOverFailures(decision.reasons).length > 0 ? 'calls' : undefined;
}

// The compiler's wording of a callsOver condition that did not hold (src/compiler/reasons.ts).
const CALLS_OVER = /^(?:[^:]*: )?calls to the tool in the last (\S+): \d+ before this one, over max (\d+)$/;

/**
 * The rules of a refusal that failed on callsOver conditions and nothing else,
 * each as its windows and maxima: waiting would let those rules hold.
 */
export function callsOverFailures(reasons: readonly string[]): { window: string; max: number }[][] {
  return reasons.flatMap((reason) => {
    const parts = reason.split('; ').map((part) => CALLS_OVER.exec(part));
    if (parts.some((p) => p === null)) return [];
    return [parts.map((p) => ({ window: p?.[1] ?? '', max: Number(p?.[2]) }))];
  });
}

/** The largest max per window the refusal's callsOver failures name (so a store says when each frees up). */
export function windowMaxima(decision: AuthorizationDecision): Map<string, number> {
  const maxima = new Map<string, number>();
  for (const rule of callsOverFailures(decision.reasons)) {
    for (const { window, max } of rule) maxima.set(window, Math.min(max, maxima.get(window) ?? max));
  }
  return maxima;
}

export interface RetryAdvice {
  retryAfterSeconds?: number;
  resetsAt?: string;
}

const wholeSeconds = (ms: number): number => Math.max(1, Math.ceil(ms / 1000));

/** When a call a limit refused may succeed: whole seconds (at least 1), and for budgets the local midnight they reset at. */
export function retryAdvice(kind: LimitKind, decision: AuthorizationDecision, plan: ReservationPlan, reserved: Reserved, settled: Settled | undefined): RetryAdvice | undefined {
  switch (kind) {
    case 'rate': {
      const waits = plan.buckets.flatMap((bucket, i) => {
        const before = reserved.buckets[i]?.before ?? 0;
        return before < 1 ? [((1 - before) / bucket.rps) * 1000] : [];
      });
      return waits.length === 0 ? undefined : { retryAfterSeconds: wholeSeconds(Math.max(...waits)) };
    }
    case 'budget': {
      // A budget the call could not fit today: it fits again when the day ends (a call with no readable cost never will).
      const over = plan.spends.flatMap((spend, i) => {
        const r = reserved.spends[i];
        return spend.costMicros !== undefined && r !== undefined && !r.reserved ? [{ end: r.day.end, timeZone: spend.timeZone }] : [];
      });
      const latest = over.reduce<(typeof over)[number] | undefined>((a, b) => (a === undefined || b.end > a.end ? b : a), undefined);
      return latest === undefined ? undefined : { retryAfterSeconds: wholeSeconds(latest.end - reserved.now), resetsAt: localRfc3339(latest.end, latest.timeZone) };
    }
    case 'calls': {
      if (settled === undefined) return undefined;
      const waitOf = new Map<string, number>();
      plan.windows.forEach((window, i) => {
        const wait = settled.windowWaits[i];
        if (wait !== undefined) for (const written of window.windows) waitOf.set(written, wait);
      });
      // A rule holds again once every one of its windows has room; the first such rule decides.
      const ruleWaits = callsOverFailures(decision.reasons).flatMap((rule) => {
        const waits = rule.map(({ window }) => waitOf.get(window));
        return waits.every((w) => w !== undefined) ? [Math.max(...waits)] : [];
      });
      return ruleWaits.length === 0 ? undefined : { retryAfterSeconds: wholeSeconds(Math.min(...ruleWaits)) };
    }
  }
}
