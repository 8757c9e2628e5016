// Keeps the newest good bundle of the namespace loaded: watches the bundle and
// trust ConfigMaps through the API, judges every change (bundle-verdict.ts) and
// swaps the evaluator in one assignment, so a decision sees the old policy or
// the new one, never a mix. A refused bundle is counted and logged; the last
// good one keeps answering.
import type { KubeConfig, KubernetesListObject, V1ConfigMap } from '@kubernetes/client-node';
import { CoreV1Api } from '@kubernetes/client-node';
import type { Logger } from 'pino';
import { parseRevision } from '../bundle/index.ts';
import { ResilientInformer } from '../operator/informers.ts';
import type { BundleRefusal } from './bundle-events.ts';
import type { BundleSnapshot, LoadedPolicy } from './bundle-verdict.ts';
import { BUNDLE_CONFIGMAP, judgeBundle, TRUST_CONFIGMAP } from './bundle-verdict.ts';
import type { SidecarMetrics } from './metrics.ts';

export interface BundleSourceOptions {
  kubeConfig: KubeConfig;
  namespace: string;
  tenant: string;
  log: Logger;
  metrics: SidecarMetrics;
  /** Told of every refused bundle (an Event is recorded from it). */
  onRefused?: (refusal: BundleRefusal) => void;
}

const WATCHED = new Set([BUNDLE_CONFIGMAP, TRUST_CONFIGMAP]);

/** Other ConfigMaps of the namespace are cached by name only: their data is never needed. */
function keepOnlyWatched(configMap: V1ConfigMap): V1ConfigMap {
  if (WATCHED.has(configMap.metadata?.name ?? '')) return configMap;
  return { metadata: { name: configMap.metadata?.name, namespace: configMap.metadata?.namespace, resourceVersion: configMap.metadata?.resourceVersion } };
}

export class BundleSource {
  private current: LoadedPolicy | undefined;
  private readonly informer: ResilientInformer<V1ConfigMap>;
  private readonly options: BundleSourceOptions;
  /** One judgement at a time; a change during one asks for another after it. */
  private judging: Promise<void> = Promise.resolve();
  private pending = false;

  constructor(options: BundleSourceOptions) {
    this.options = options;
    const api = options.kubeConfig.makeApiClient(CoreV1Api);
    const list = (): Promise<KubernetesListObject<V1ConfigMap>> => api.listNamespacedConfigMap({ namespace: options.namespace });
    this.informer = new ResilientInformer<V1ConfigMap>(options.kubeConfig, `/api/v1/namespaces/${options.namespace}/configmaps`, list, {
      name: 'configmaps',
      transform: keepOnlyWatched,
      onError: (name, error, retryInMs) => {
        options.metrics.informerRestarts.inc({ informer: name });
        options.log.warn({ informer: name, err: error, retryInMs }, 'watch failed; restarting');
      },
    });
    this.informer.onChange((configMap) => {
      if (WATCHED.has(configMap.metadata?.name ?? '')) this.schedule();
    });
  }

  /** The loaded policy, or undefined until a valid bundle has been seen. */
  get policy(): LoadedPolicy | undefined {
    return this.current;
  }

  async start(): Promise<void> {
    await this.informer.start();
    this.schedule();
    await this.settled();
  }

  async stop(): Promise<void> {
    await this.informer.stop();
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
    const { namespace } = this.options;
    const bundle = this.informer.get(BUNDLE_CONFIGMAP, namespace);
    const trust = this.informer.get(TRUST_CONFIGMAP, namespace);
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
        this.options.onRefused?.({ code: verdict.code, message: verdict.message, keeping: loaded, bundle: this.informer.get(BUNDLE_CONFIGMAP, this.options.namespace)?.metadata });
        break;
      case 'waiting':
        log.info({ tenant, reason: verdict.reason, keeping: loaded ?? null }, 'waiting for the bundle');
        break;
      case 'unchanged':
        break;
    }
  }
}
