// A keyed work queue in the manner of client-go's: a key waits at most once;
// a key added while it is being processed runs again afterwards (never twice
// at once); failures come back after an exponential per-key backoff; and a
// short coalescing delay turns a burst of changes into one run.

export interface WorkQueueOptions {
  /** How long a newly added key waits, so a burst of changes coalesces. */
  coalesceMs: number;
  /** Backoff of the first retry; doubles per failure up to maxBackoffMs. */
  baseBackoffMs: number;
  maxBackoffMs: number;
  /** Keys processed at once. */
  concurrency: number;
}

export const DEFAULT_WORKQUEUE_OPTIONS: WorkQueueOptions = {
  coalesceMs: 50,
  baseBackoffMs: 50,
  maxBackoffMs: 60_000,
  concurrency: 2,
};

export type ProcessResult = { requeueAfterMs?: number } | undefined;

export interface Clock {
  now(): number;
  setTimeout(fn: () => void, ms: number): { cancel(): void };
}

export const realClock: Clock = {
  now: () => Date.now(),
  setTimeout: (fn, ms) => {
    const timer = setTimeout(fn, ms);
    timer.unref();
    return { cancel: () => { clearTimeout(timer); } };
  },
};

export class WorkQueue {
  private readonly options: WorkQueueOptions;
  private readonly process: (key: string) => Promise<ProcessResult>;
  private readonly onError: (key: string, error: unknown, failures: number) => void;
  private readonly clock: Clock;
  /** Keys ready to run, in order. */
  private readonly ready: string[] = [];
  private readonly readySet = new Set<string>();
  /** Keys waiting on a timer, with when they are due. */
  private readonly waiting = new Map<string, { due: number; timer: { cancel(): void } }>();
  private readonly processing = new Set<string>();
  /** Keys added again while processing: they run once more when done. */
  private readonly dirty = new Set<string>();
  private readonly failures = new Map<string, number>();
  private running = false;
  private idleWaiters: (() => void)[] = [];

  constructor(
    process: (key: string) => Promise<ProcessResult>,
    onError: (key: string, error: unknown, failures: number) => void,
    options: Partial<WorkQueueOptions> = {},
    clock: Clock = realClock,
  ) {
    this.process = process;
    this.onError = onError;
    this.options = { ...DEFAULT_WORKQUEUE_OPTIONS, ...options };
    this.clock = clock;
  }

  /** Keys waiting, ready or being processed. */
  get depth(): number {
    return new Set([...this.ready, ...this.waiting.keys(), ...this.processing]).size;
  }

  start(): void {
    this.running = true;
    this.pump();
  }

  stop(): void {
    this.running = false;
    for (const { timer } of this.waiting.values()) timer.cancel();
    this.waiting.clear();
  }

  /** Adds a key after the coalescing delay. */
  add(key: string): void {
    this.addAfter(key, this.options.coalesceMs);
  }

  /** Adds a key no later than `delayMs` from now (an earlier due time wins). */
  addAfter(key: string, delayMs: number): void {
    if (this.readySet.has(key)) return;
    if (this.processing.has(key) && delayMs <= this.options.coalesceMs) {
      this.dirty.add(key);
      return;
    }
    const due = this.clock.now() + delayMs;
    const existing = this.waiting.get(key);
    if (existing && existing.due <= due) return;
    existing?.timer.cancel();
    const timer = this.clock.setTimeout(() => {
      this.waiting.delete(key);
      this.makeReady(key);
    }, delayMs);
    this.waiting.set(key, { due, timer });
  }

  /** Resolves once nothing is waiting, ready or being processed. */
  async idle(): Promise<void> {
    if (this.depth === 0) return;
    await new Promise<void>((resolve) => this.idleWaiters.push(resolve));
  }

  private makeReady(key: string): void {
    if (this.processing.has(key)) {
      this.dirty.add(key);
      return;
    }
    if (this.readySet.has(key)) return;
    this.readySet.add(key);
    this.ready.push(key);
    this.pump();
  }

  private pump(): void {
    while (this.running && this.processing.size < this.options.concurrency && this.ready.length > 0) {
      const key = this.ready.shift();
      if (key === undefined) break;
      this.readySet.delete(key);
      this.processing.add(key);
      void this.run(key);
    }
    this.notifyIdle();
  }

  private async run(key: string): Promise<void> {
    let retryAfterMs: number | undefined;
    try {
      const result = await this.process(key);
      this.failures.delete(key);
      retryAfterMs = result?.requeueAfterMs;
    } catch (error) {
      const failures = (this.failures.get(key) ?? 0) + 1;
      this.failures.set(key, failures);
      this.onError(key, error, failures);
      retryAfterMs = Math.min(this.options.baseBackoffMs * 2 ** (failures - 1), this.options.maxBackoffMs);
    } finally {
      this.processing.delete(key);
    }
    if (this.dirty.delete(key)) this.makeReady(key);
    else if (retryAfterMs !== undefined && this.running) this.addAfter(key, retryAfterMs);
    this.pump();
  }

  private notifyIdle(): void {
    if (this.depth !== 0) return;
    const waiters = this.idleWaiters;
    this.idleWaiters = [];
    for (const resolve of waiters) resolve();
  }
}
