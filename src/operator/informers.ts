// Informers over @kubernetes/client-node's ListWatch, made resilient: the
// library relists on 410 Gone by itself but stops on any other error, so this
// restarts it with a capped exponential backoff and reports each restart.

import type { KubeConfig, KubernetesListObject, KubernetesObject, Watch } from '@kubernetes/client-node';
import { ADD, CHANGE, DELETE, ERROR, ListWatch, UPDATE, Watch as WatchClient } from '@kubernetes/client-node';

export interface ResilientInformerOptions {
  name: string;
  onError: (name: string, error: unknown, retryInMs: number) => void;
  minBackoffMs?: number;
  maxBackoffMs?: number;
}

export class ResilientInformer<T extends KubernetesObject> {
  readonly name: string;
  private readonly informer: ListWatch<T>;
  private readonly options: Required<ResilientInformerOptions>;
  private backoffMs: number;
  private stopped = false;
  private synced = false;
  private restartTimer: NodeJS.Timeout | undefined;

  constructor(kc: KubeConfig, path: string, list: () => Promise<KubernetesListObject<T>>, options: ResilientInformerOptions, labelSelector?: string) {
    this.name = options.name;
    this.options = { minBackoffMs: 500, maxBackoffMs: 30_000, ...options };
    this.backoffMs = this.options.minBackoffMs;
    const watch: Watch = new WatchClient(kc);
    this.informer = new ListWatch<T>(path, watch, list, false, labelSelector);
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
