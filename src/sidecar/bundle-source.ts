// Keeps the newest good bundle of the namespace loaded: watches the trust
// ConfigMap and the tenant's minimum revision in the operator's namespace and
// the bundle ConfigMap in the agent's namespace through the API, judges every change (bundle-verdict.ts)
// and swaps the evaluator in one assignment, so a decision sees the old policy
// or the new one, never a mix. A refused bundle is counted and reported; the
// last good one keeps answering — unless the trust no longer vouches for it,
// and then nothing does until a bundle verifies.
import type { Logger } from 'pino';
import { minimumRevisionConfigMap, parseRevision } from '../bundle/revision.ts';
import type { BundleRefusal } from './bundle-events.ts';
import type { BundleState, Finding, JudgeOptions, LoadedPolicy, ObservedConfigMap } from './bundle-verdict.ts';
import { BUNDLE_CONFIGMAP, judge, TRUST_CONFIGMAP } from './bundle-verdict.ts';
import type { ConfigMap, ConfigMapApi } from './configmap-watch.ts';
import { ConfigMapWatch } from './configmap-watch.ts';
import type { SidecarMetrics } from './metrics.ts';

export interface BundleSourceOptions {
  api: ConfigMapApi;
  /** The agent's namespace, where its tenant's bundle is. */
  namespace: string;
  /** The operator's namespace, where the keys bundles are verified with are: tenants cannot write there. */
  trustNamespace: string;
  tenant: string;
  log: Logger;
  metrics: SidecarMetrics;
  /** Told of every refused bundle, and of a bundle unloaded (an Event is recorded from it). */
  onRefused?: (refusal: BundleRefusal) => void;
  /** The first retry after a failed list or watch (doubling up to 30 s). */
  minBackoffMs?: number;
  /** Turns a verified artifact into a policy: PolicyEvaluator.load unless a test swaps it. */
  load?: JudgeOptions['load'];
}

function observed(configMap: ConfigMap | undefined): ObservedConfigMap | undefined {
  if (configMap === undefined) return undefined;
  const { uid, resourceVersion } = configMap.metadata;
  return { version: `${uid ?? ''}/${resourceVersion}`, ...(configMap.data === undefined ? {} : { data: configMap.data }), ...(configMap.binaryData === undefined ? {} : { binaryData: configMap.binaryData }) };
}

export class BundleSource {
  private state: BundleState = {};
  /** Each ConfigMap is watched by name: no other ConfigMap is read. */
  private readonly bundle: ConfigMapWatch;
  private readonly trust: ConfigMapWatch;
  private readonly minimum: ConfigMapWatch;
  private readonly options: BundleSourceOptions;
  /** One judgement at a time; a change during one asks for another after it. */
  private judging: Promise<void> = Promise.resolve();
  private pending = false;

  constructor(options: BundleSourceOptions) {
    this.options = options;
    const watch = (namespace: string, name: string): ConfigMapWatch => new ConfigMapWatch({
      api: options.api,
      namespace,
      name,
      onChange: () => { this.schedule(); },
      onError: (error, retryInMs) => {
        options.metrics.informerRestarts.inc({ informer: name });
        options.log.warn({ informer: name, configMapNamespace: namespace, err: error, retryInMs }, 'watch failed; restarting');
      },
      ...(options.minBackoffMs === undefined ? {} : { minBackoffMs: options.minBackoffMs }),
    });
    this.bundle = watch(options.namespace, BUNDLE_CONFIGMAP);
    this.trust = watch(options.trustNamespace, TRUST_CONFIGMAP);
    this.minimum = watch(options.trustNamespace, minimumRevisionConfigMap(options.tenant));
  }

  /** The loaded policy, or undefined while no bundle that verifies under the trust in force is loaded. */
  get policy(): LoadedPolicy | undefined {
    return this.state.loaded?.policy;
  }

  /** Resolves once every ConfigMap was listed (or its first list failed: retried meanwhile) and judged. */
  async start(): Promise<void> {
    await Promise.all([this.bundle.start(), this.trust.start(), this.minimum.start()]);
    this.schedule();
    await this.settled();
  }

  async stop(): Promise<void> {
    await Promise.all([this.bundle.stop(), this.trust.stop(), this.minimum.stop()]);
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

  private async judge(): Promise<void> {
    // Until the tenant's minimum revision has been read (found, or known absent), no bundle may
    // load: a replayed older bundle would pass for want of it. Calls are denied meanwhile.
    if (!this.minimum.synced) return;
    const { tenant, trustNamespace, load } = this.options;
    const bundle = observed(this.bundle.current);
    const trust = observed(this.trust.current);
    const minimum = observed(this.minimum.current);
    const seen = { ...(bundle === undefined ? {} : { bundle }), ...(trust === undefined ? {} : { trust }), ...(minimum === undefined ? {} : { minimum }) };
    const judgement = await judge(this.state, seen, { tenant, trustNamespace, ...(load === undefined ? {} : { load }) });
    this.state = judgement.state;
    for (const finding of judgement.findings) this.report(finding);
  }

  private report(finding: Finding): void {
    const { log, metrics, tenant } = this.options;
    const refused = (code: string, message: string, keeping: string | undefined): void => {
      metrics.bundleRejections.inc({ code });
      this.options.onRefused?.({ code, message, keeping, bundle: this.bundle.current?.metadata });
    };
    switch (finding.kind) {
      case 'loaded':
        metrics.bundleLoads.inc();
        metrics.bundleRevision.set({ tenant }, Number(parseRevision(finding.policy.revision).sequence));
        log.info({ revision: finding.policy.revision, previous: finding.previous ?? null }, 'bundle loaded');
        break;
      case 'unloaded':
        metrics.bundleRevision.remove({ tenant });
        log.error({ code: finding.code, reason: finding.message, unloaded: finding.revision }, 'bundle unloaded: no bundle is loaded, every call is denied');
        refused(finding.code, finding.message, undefined);
        break;
      case 'refused':
        log.error({ code: finding.code, reason: finding.message, keeping: finding.keeping ?? null }, 'bundle refused');
        refused(finding.code, finding.message, finding.keeping);
        break;
      case 'waiting':
        log.info({ reason: finding.reason, keeping: this.state.loaded?.policy.revision ?? null }, 'waiting for a ConfigMap');
        break;
    }
  }
}
