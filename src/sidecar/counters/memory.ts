// Counters in the sidecar's memory: the default, right for one replica (each
// replica of an agent would count alone). Every operation runs without an
// await, so it is atomic for the process. Idle state is swept, so memory holds
// only live buckets, today's spend and calls still in their windows.
import type { LocalDay } from './calendar.ts';
import type { Adjustment, BucketPlan, ReservationPlan, Reserved, Settled, SpendPlan } from './plan.ts';
import type { CounterBackend } from './store.ts';

interface BucketState {
  tokens: number;
  at: number;
  rps: number;
  burst: number;
}

interface SpendState {
  day: LocalDay;
  micros: number;
}

interface WindowEntry {
  at: number;
  member: string;
}

interface WindowState {
  ms: number;
  /** Oldest first. */
  entries: WindowEntry[];
}

const SWEEP_EVERY_MS = 60_000;

/** The tokens of a bucket at `now`: its last count plus the refill since, at most burst; a bucket never seen is full. */
export function tokensAt(state: Pick<BucketState, 'tokens' | 'at'> | undefined, bucket: Pick<BucketPlan, 'rps' | 'burst'>, now: number): number {
  if (state === undefined) return bucket.burst;
  return Math.min(bucket.burst, state.tokens + (Math.max(0, now - state.at) * bucket.rps) / 1000);
}

/** The plan's day that holds `now`; a clock more than a day from the sidecar's is an error, never a guess. */
export function dayAt(spend: Pick<SpendPlan, 'days' | 'counter'>, now: number): LocalDay {
  const day = spend.days.find((d) => d.start <= now && now < d.end);
  if (day === undefined) throw new Error(`the counter store's clock is more than a day from the sidecar's (budget on ${spend.counter})`);
  return day;
}

export class MemoryBackend implements CounterBackend {
  readonly kind = 'memory';
  private readonly now: () => number;
  private readonly buckets = new Map<string, BucketState>();
  private readonly spends = new Map<string, SpendState>();
  private readonly windows = new Map<string, WindowState>();
  private lastSweep: number;

  constructor(options: { now?: () => number } = {}) {
    this.now = options.now ?? Date.now;
    this.lastSweep = this.now();
  }

  /** How many keys the store holds (buckets, spends, windows): what a sweep keeps small. */
  get size(): number {
    return this.buckets.size + this.spends.size + this.windows.size;
  }

  reserve(plan: ReservationPlan, member: string): Promise<Reserved> {
    const now = this.now();
    this.sweepIfDue(now);
    // Days first: an error must come before any counter changed.
    const days = plan.spends.map((spend) => dayAt(spend, now));
    const buckets = plan.buckets.map((bucket) => {
      const before = tokensAt(this.buckets.get(bucket.key), bucket, now);
      const taken = before >= 1;
      this.buckets.set(bucket.key, { tokens: taken ? before - 1 : before, at: now, rps: bucket.rps, burst: bucket.burst });
      return { before, taken };
    });
    const spends = plan.spends.map((spend, i) => {
      const day = days[i] ?? dayAt(spend, now);
      const state = this.spends.get(spend.key);
      const beforeMicros = state?.day.start === day.start ? state.micros : 0;
      const reserved = spend.costMicros !== undefined && beforeMicros + spend.costMicros <= spend.capMicros;
      this.spends.set(spend.key, { day, micros: reserved ? beforeMicros + (spend.costMicros ?? 0) : beforeMicros });
      return { beforeMicros, reserved, day };
    });
    const windows = plan.windows.map((window) => {
      const entries = this.liveEntries(window.key, window.ms, now);
      const before = entries.length;
      insertByTime(entries, { at: now, member });
      this.windows.set(window.key, { ms: window.ms, entries });
      return { before };
    });
    return Promise.resolve({ now, buckets, spends, windows });
  }

  settle(plan: ReservationPlan, reserved: Reserved, member: string, adjustment: Adjustment): Promise<Settled> {
    const now = this.now();
    plan.buckets.forEach((bucket, i) => {
      if (adjustment.refundBuckets[i] !== true) return;
      const state = this.buckets.get(bucket.key);
      if (state !== undefined) this.buckets.set(bucket.key, { ...state, tokens: Math.min(bucket.burst, tokensAt(state, bucket, now) + 1), at: now });
    });
    plan.spends.forEach((spend, i) => {
      const delta = adjustment.spendDeltas[i] ?? 0;
      const day = reserved.spends[i]?.day;
      if (delta === 0 || day === undefined) return;
      const state = this.spends.get(spend.key);
      // A day that has ended is not changed: the new day starts from zero.
      if (state?.day.start === day.start) state.micros = Math.max(0, state.micros + delta);
      else if (state === undefined && delta > 0 && now < day.end) this.spends.set(spend.key, { day, micros: delta });
    });
    const windowWaits = plan.windows.map((window, i) => {
      const { remove, max } = adjustment.windows[i] ?? { remove: false };
      const entries = this.liveEntries(window.key, window.ms, now);
      if (remove) {
        const at = entries.findLastIndex((e) => e.member === member);
        if (at >= 0) entries.splice(at, 1);
      }
      if (max === undefined) return undefined;
      const oldestToLeave = entries[entries.length - max];
      return oldestToLeave === undefined ? 0 : Math.max(0, oldestToLeave.at + window.ms - now);
    });
    return Promise.resolve({ now, windowWaits });
  }

  ready(): Promise<void> {
    return Promise.resolve();
  }

  close(): Promise<void> {
    this.buckets.clear();
    this.spends.clear();
    this.windows.clear();
    return Promise.resolve();
  }

  /** The window's calls within (now - ms, now], older ones dropped. */
  private liveEntries(key: string, ms: number, now: number): WindowEntry[] {
    const entries = this.windows.get(key)?.entries ?? [];
    const firstLive = entries.findIndex((e) => e.at > now - ms);
    entries.splice(0, firstLive < 0 ? entries.length : firstLive);
    return entries;
  }

  private sweepIfDue(now: number): void {
    if (now - this.lastSweep < SWEEP_EVERY_MS) return;
    this.lastSweep = now;
    // A bucket left alone long enough is full again, which is what no state means.
    for (const [key, state] of this.buckets) if (tokensAt(state, state, now) >= state.burst) this.buckets.delete(key);
    for (const [key, state] of this.spends) if (now >= state.day.end) this.spends.delete(key);
    for (const [key, { ms, entries }] of this.windows) {
      const last = entries[entries.length - 1];
      if (last === undefined || last.at <= now - ms) this.windows.delete(key);
    }
  }
}

function insertByTime(entries: WindowEntry[], entry: WindowEntry): void {
  let i = entries.length;
  while (i > 0 && (entries[i - 1]?.at ?? 0) > entry.at) i--;
  entries.splice(i, 0, entry);
}
