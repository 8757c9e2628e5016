// Informers over @kubernetes/client-node's ListWatch, made resilient: the
// library relists on 410 Gone by itself but stops on any other error, so this
// restarts it with a capped exponential backoff and reports each restart.

import type { KubeConfig, KubernetesListObject, KubernetesObject, Watch } from '@kubernetes/client-node';
import { ADD, CHANGE, DELETE, ERROR, ListWatch, UPDATE, Watch as WatchClient } from '@kubernetes/client-node';

export interface ResilientInformerOptions<T> {
  name: string;
  /** Applied to every object before it is cached, e.g. to keep only what is needed of large objects. */
  transform?: (object: T) => T;
  onError: (name: string, error: unknown, retryInMs: number) => void;
  minBackoffMs?: number;
  maxBackoffMs?: number;
}

/** A Watch that transforms each object before the informer sees it. */
class TransformingWatch<T extends KubernetesObject> extends WatchClient {
  private readonly transform: (object: T) => T;

  constructor(kc: KubeConfig, transform: (object: T) => T) {
    super(kc);
    this.transform = transform;
  }

  override watch(
    path: string,
    queryParams: Record<string, string | number | boolean | undefined>,
    callback: (phase: string, apiObj: unknown, watchObj?: unknown) => void,
    done: (err: unknown) => void,
  ): Promise<AbortController> {
    return super.watch(path, queryParams, (phase, object: T, watchObj) => {
      // ERROR events carry a Status, not an object of the kind.
      callback(phase, phase === 'ERROR' ? object : this.transform(object), watchObj);
    }, done);
  }
}

export class ResilientInformer<T extends KubernetesObject> {
  readonly name: string;
  private readonly informer: ListWatch<T>;
  private readonly options: Required<Omit<ResilientInformerOptions<T>, 'transform'>>;
  private backoffMs: number;
  private stopped = false;
  private synced = false;
  private restartTimer: NodeJS.Timeout | undefined;

  constructor(kc: KubeConfig, path: string, list: () => Promise<KubernetesListObject<T>>, options: ResilientInformerOptions<T>, labelSelector?: string) {
    this.name = options.name;
    const { transform, ...rest } = options;
    this.options = { minBackoffMs: 500, maxBackoffMs: 30_000, ...rest };
    this.backoffMs = this.options.minBackoffMs;
    const watch: Watch = transform ? new TransformingWatch(kc, transform) : new WatchClient(kc);
    const listed = transform ? async (): Promise<KubernetesListObject<T>> => {
      const result = await list();
      return { ...result, items: result.items.map(transform) };
    } : list;
    this.informer = new ListWatch<T>(path, watch, listed, false, labelSelector);
    this.informer.on(ERROR, (error: unknown) => { this.restartLater(error); });
  }

  /** Calls `handler` on every add, update and delete (and on every object of a relist). */
  onChange(handler: (object: T, verb: 'change' | 'delete') => void): void {
    this.informer.on(CHANGE, (object: T) => { handler(object, 'change'); });
    this.informer.on(DELETE, (object: T) => { handler(object, 'delete'); });
  }

  onAddOrUpdate(handler: (object: T) => void): void {
    this.informer.on(ADD, handler);
    this.informer.on(UPDATE, handler);
  }

  get hasSynced(): boolean {
    return this.synced;
  }

  list(namespace?: string): readonly T[] {
    return this.informer.list(namespace);
  }

  get(name: string, namespace?: string): T | undefined {
    return this.informer.get(name, namespace);
  }

  async start(): Promise<void> {
    this.stopped = false;
    // A failed list reports through ERROR and leaves no resource version behind.
    await this.informer.start();
    if (this.informer.latestResourceVersion() !== '') {
      this.synced = true;
      this.backoffMs = this.options.minBackoffMs;
    }
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.restartTimer) clearTimeout(this.restartTimer);
    await this.informer.stop();
  }

  private restartLater(error: unknown): void {
    if (this.stopped) return;
    const delay = this.backoffMs;
    this.backoffMs = Math.min(this.backoffMs * 2, this.options.maxBackoffMs);
    this.options.onError(this.name, error, delay);
    if (this.restartTimer) clearTimeout(this.restartTimer);
    this.restartTimer = setTimeout(() => {
      if (this.stopped) return;
      this.start().catch((startError: unknown) => { this.restartLater(startError); });
    }, delay);
  }
}
