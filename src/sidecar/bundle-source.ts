// Keeps the newest good bundle of the namespace loaded: watches the bundle and
// trust ConfigMaps through the API, judges every change (bundle-verdict.ts) and
// swaps the evaluator in one assignment, so a decision sees the old policy or
// the new one, never a mix. A refused bundle is counted and logged; the last
// good one keeps answering.
import type { Logger } from 'pino';
import { parseRevision } from '../bundle/revision.ts';
import type { BundleRefusal } from './bundle-events.ts';
import type { BundleSnapshot, LoadedPolicy } from './bundle-verdict.ts';
import { BUNDLE_CONFIGMAP, judgeBundle, TRUST_CONFIGMAP } from './bundle-verdict.ts';
import type { ConfigMapApi } from './configmap-watch.ts';
import { ConfigMapWatch } from './configmap-watch.ts';
import type { SidecarMetrics } from './metrics.ts';

export interface BundleSourceOptions {
  api: ConfigMapApi;
  namespace: string;
  tenant: string;
  log: Logger;
  metrics: SidecarMetrics;
  /** Told of every refused bundle (an Event is recorded from it). */
  onRefused?: (refusal: BundleRefusal) => void;
  /** The first retry after a failed list or watch (doubling up to 30 s). */
  minBackoffMs?: number;
}

export class BundleSource {
  private current: LoadedPolicy | undefined;
  /** Each ConfigMap is watched by name: no other ConfigMap of the namespace is read. */
  private readonly bundle: ConfigMapWatch;
  private readonly trust: ConfigMapWatch;
  private readonly options: BundleSourceOptions;
  /** One judgement at a time; a change during one asks for another after it. */
  private judging: Promise<void> = Promise.resolve();
  private pending = false;

  constructor(options: BundleSourceOptions) {
    this.options = options;
    const watch = (name: string): ConfigMapWatch => new ConfigMapWatch({
      api: options.api,
      namespace: options.namespace,
      name,
      onChange: () => { this.schedule(); },
      onError: (error, retryInMs) => {
        options.metrics.informerRestarts.inc({ informer: name });
        options.log.warn({ informer: name, err: error, retryInMs }, 'watch failed; restarting');
      },
      ...(options.minBackoffMs === undefined ? {} : { minBackoffMs: options.minBackoffMs }),
    });
    this.bundle = watch(BUNDLE_CONFIGMAP);
    this.trust = watch(TRUST_CONFIGMAP);
  }

  /** The loaded policy, or undefined until a valid bundle has been seen. */
  get policy(): LoadedPolicy | undefined {
    return this.current;
  }

  /** Resolves once both ConfigMaps were listed (or their first list failed: retried meanwhile) and judged. */
  async start(): Promise<void> {
    await Promise.all([this.bundle.start(), this.trust.start()]);
    this.schedule();
    await this.settled();
  }

  async stop(): Promise<void> {
    await Promise.all([this.bundle.stop(), this.trust.stop()]);
    await this.settled();
  }

  /** Resolves once every change seen so far has been judged. */
  async settled(): Promise<void> {
    while (this.pending) await this.judging;
    await this.judging;
  }

  private schedule(): void {
    if (this.pending) return;
    this.pending = true;
    this.judging = this.judging.then(async () => {
      this.pending = false;
      await this.judge();
    });
  }

  private snapshot(): BundleSnapshot {
    const bundle = this.bundle.current;
    const trust = this.trust.current;
    return {
      ...(bundle === undefined ? {} : { bundle: { data: bundle.data ?? {}, binaryData: bundle.binaryData ?? {} } }),
      ...(trust === undefined ? {} : { trust: { data: trust.data ?? {} } }),
    };
  }

  private async judge(): Promise<void> {
    const { log, metrics, tenant } = this.options;
    const loaded = this.current?.revision;
    const verdict = await judgeBundle(this.snapshot(), loaded === undefined ? { tenant } : { tenant, loaded });
    switch (verdict.kind) {
      case 'load':
        this.current = verdict.policy;
        metrics.bundleLoads.inc();
        metrics.bundleRevision.set({ tenant }, Number(parseRevision(verdict.policy.revision).sequence));
        log.info({ tenant, revision: verdict.policy.revision, previous: loaded ?? null }, 'bundle loaded');
        break;
      case 'reject':
        metrics.bundleRejections.inc({ code: verdict.code });
        log.error({ tenant, code: verdict.code, reason: verdict.message, keeping: loaded ?? null }, 'bundle refused');
        this.options.onRefused?.({ code: verdict.code, message: verdict.message, keeping: loaded, bundle: this.bundle.current?.metadata });
        break;
      case 'waiting':
        log.info({ tenant, reason: verdict.reason, keeping: loaded ?? null }, 'waiting for the bundle');
        break;
      case 'unchanged':
        break;
    }
  }
}
