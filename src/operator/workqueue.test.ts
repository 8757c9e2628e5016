import { describe, expect, it } from 'vitest';
import type { Clock, ProcessResult } from './workqueue.ts';
import { WorkQueue } from './workqueue.ts';

/** A clock whose timers fire only when the test advances it. */
class FakeClock implements Clock {
  private current = 0;
  private timers: { due: number; fn: () => void; cancelled: boolean }[] = [];

  now(): number {
    return this.current;
  }

  setTimeout(fn: () => void, ms: number): { cancel(): void } {
    const timer = { due: this.current + ms, fn, cancelled: false };
    this.timers.push(timer);
    return { cancel: () => { timer.cancelled = true; } };
  }

  async advance(ms: number): Promise<void> {
    const end = this.current + ms;
    for (;;) {
      const next = this.timers.filter((t) => !t.cancelled && t.due <= end).sort((a, b) => a.due - b.due)[0];
      if (!next) break;
      this.current = next.due;
      next.cancelled = true;
      next.fn();
      await flush();
    }
    this.current = end;
    await flush();
  }
}

async function flush(): Promise<void> {
  for (let i = 0; i < 10; i++) await Promise.resolve();
}

function setup(process: (key: string) => Promise<ProcessResult>, options = {}): { queue: WorkQueue; clock: FakeClock; errors: [string, number][] } {
  const clock = new FakeClock();
  const errors: [string, number][] = [];
  const queue = new WorkQueue(process, (key, _e, failures) => errors.push([key, failures]), { coalesceMs: 100, baseBackoffMs: 50, maxBackoffMs: 400, concurrency: 2, ...options }, clock);
  queue.start();
  return { queue, clock, errors };
}

describe('WorkQueue', () => {
  it('runs a burst of adds of one key once, after the coalescing delay', async () => {
    const runs: string[] = [];
    const { queue, clock } = setup((key) => { runs.push(key); return Promise.resolve(undefined); });
    for (let i = 0; i < 200; i++) queue.add('tenant-a');
    await clock.advance(99);
    expect(runs).toEqual([]);
    await clock.advance(1);
    expect(runs).toEqual(['tenant-a']);
    expect(queue.depth).toBe(0);
  });

  it('never runs one key twice at once, and runs it again when it changed meanwhile', async () => {
    let release: (() => void) | undefined;
    let active = 0;
    let maxActive = 0;
    const runs: number[] = [];
    const { queue, clock } = setup(async () => {
      active++;
      maxActive = Math.max(maxActive, active);
      runs.push(clock.now());
      await new Promise<void>((r) => { release = r; });
      active--;
      return undefined;
    });
    queue.add('k');
    await clock.advance(100);
    queue.add('k');
    queue.add('k');
    await clock.advance(500);
    expect(runs).toHaveLength(1);
    release?.();
    await flush();
    expect(runs).toHaveLength(2);
    release?.();
    await flush();
    expect(runs).toHaveLength(2);
    expect(maxActive).toBe(1);
  });

  it('processes different keys concurrently up to the limit', async () => {
    let active = 0;
    let maxActive = 0;
    const releases: (() => void)[] = [];
    const { queue, clock } = setup(async () => {
      active++;
      maxActive = Math.max(maxActive, active);
      await new Promise<void>((r) => releases.push(r));
      active--;
      return undefined;
    });
    for (const key of ['a', 'b', 'c', 'd']) queue.add(key);
    await clock.advance(100);
    expect(active).toBe(2);
    while (releases.length > 0) {
      releases.shift()?.();
      await flush();
    }
    expect(maxActive).toBe(2);
    expect(queue.depth).toBe(0);
  });

  it('retries a failing key with doubling backoff up to the maximum, then resets on success', async () => {
    const at: number[] = [];
    let failuresLeft = 5;
    const { queue, clock, errors } = setup(() => {
      at.push(clock.now());
      if (failuresLeft-- > 0) return Promise.reject(new Error('boom'));
      return Promise.resolve(undefined);
    });
    queue.add('k');
    await clock.advance(10_000);
    const gaps = at.slice(1).map((t, i) => t - (at[i] ?? 0));
    expect(gaps).toEqual([50, 100, 200, 400, 400]);
    expect(errors.map(([, n]) => n)).toEqual([1, 2, 3, 4, 5]);
    expect(queue.depth).toBe(0);
  });

  it('requeues a key after the delay the processor asks for', async () => {
    const at: number[] = [];
    const { queue, clock } = setup(() => {
      at.push(clock.now());
      return Promise.resolve(at.length < 3 ? { requeueAfterMs: 1000 } : undefined);
    });
    queue.add('k');
    await clock.advance(5000);
    expect(at).toEqual([100, 1100, 2100]);
  });

  it('lets an earlier add win over a later requeue', async () => {
    const at: number[] = [];
    const { queue, clock } = setup(() => {
      at.push(clock.now());
      return Promise.resolve(at.length === 1 ? { requeueAfterMs: 10_000 } : undefined);
    });
    queue.add('k');
    await clock.advance(200);
    queue.add('k');
    await clock.advance(200);
    expect(at).toEqual([100, 300]);
  });

  it('resolves idle() once everything is processed', async () => {
    const { queue, clock } = setup(() => Promise.resolve(undefined));
    queue.add('a');
    let idle = false;
    void queue.idle().then(() => { idle = true; });
    await flush();
    expect(idle).toBe(false);
    await clock.advance(100);
    expect(idle).toBe(true);
  });
});
