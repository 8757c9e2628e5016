// The operator: informers feed one keyed work queue of tenants; one reconcile
// gathers a tenant's namespaces and resources from the caches, compiles them,
// signs the bundle, writes it to every namespace of the tenant, prunes it
// from namespaces that left, and writes each resource's status — only what
// changed. Reconciles run only on the leader.

import type { CoreV1Api, CustomObjectsApi, KubeConfig, KubernetesListObject, KubernetesObject, V1ConfigMap, V1Namespace, V1ObjectMeta } from '@kubernetes/client-node';
import { CoordinationV1Api, CoreV1Api as CoreApi, CustomObjectsApi as CustomApi, KubernetesObjectApi, PatchStrategy, setHeaderOptions } from '@kubernetes/client-node';
import { createHash } from 'node:crypto';
import type { Logger } from 'pino';
import type { AgentIdentity, EgressRule, ToolPolicy } from '../api/index.ts';
import { GROUP, VERSION } from '../api/index.ts';
import type { Bundle, BundleManifest, ConfigMapData } from '../bundle/index.ts';
import { bundleContentDigest, fromConfigMapData, MANIFEST_FILE, nextRevision, parseRevision, signBundle, toConfigMapData, toJwks, verifyBundle } from '../bundle/index.ts';
import type { CompiledTenant } from '../compiler/compile.ts';
import { CompileError, CompileErrors } from '../compiler/errors.ts';
import type { Loaded, TenantResources } from '../compiler/manifests.ts';
import { validateResource } from '../compiler/validate.ts';
import { statusChanged, summarizeProblems } from './conditions.ts';

import { SIDECAR_ACCESS_NAME, sidecarRole, sidecarRoleBinding } from './sidecar-access.ts';
import { ResilientInformer } from './informers.ts';
import type { LeaderElectionOptions } from './leader.ts';
import { LeaderElector } from './leader.ts';
import type { OperatorMetrics } from './metrics.ts';
import type { CompileOutcome, InForce, ResourceKind, ResourceProblem, ResourceRef, TenantResource } from './plan.ts';
import {
  BUNDLE_CONFIGMAP,
  MANAGED_BY,
  MANAGED_BY_LABEL,
  planStatuses,
  resourceKey,
  takesBundle,
  isStrayTrust,
  TENANT_LABEL,
  tenantOfNamespace,
  TRUST_CONFIGMAP,
  TRUST_JWKS_KEY,
  TRUST_QUEUE_KEY,
  trustReaderBinding,
  trustReaderRole,
} from './plan.ts';
import type { Keyring } from './signing-keys.ts';
import { standingSpecOf, withAgentStanding } from './containment.ts';
import { MINIMUM_REVISION_KEY, MINIMUM_REVISION_PREFIX, minimumRevisionConfigMap } from '../bundle/revision.ts';
import { ensureKeyring, readKeyring } from './signing-keys.ts';
import { WorkQueue } from './workqueue.ts';

/** Events carry a short message: the first problems, then a count (the status has more room). */
const EVENT_MESSAGE_LENGTH = 1_024;

export const FIELD_MANAGER = 'portcullis-operator';
const PLURALS: Record<ResourceKind, string> = { AgentIdentity: 'agentidentities', ToolPolicy: 'toolpolicies', EgressRule: 'egressrules' };
const KINDS: ResourceKind[] = ['AgentIdentity', 'ToolPolicy', 'EgressRule'];
const GENERATIONS_KEY = 'resources';

export interface OperatorOptions {
  kubeConfig: KubeConfig;
  /** The namespace the operator runs in: its Lease and signing-key Secret live there. */
  namespace: string;
  identity: string;
  signingKeySecret: string;
  leaseName: string;
  leaseTimings: Pick<LeaderElectionOptions, 'leaseDurationMs' | 'renewDeadlineMs' | 'retryPeriodMs'>;
  /** How often every tenant is reconciled even when nothing changed. */
  resyncMs: number;
  compile: (resources: TenantResources) => Promise<CompiledTenant>;
  /** How often the signing keys are read again from their Secret (default 15 s). */
  keyringRefreshMs?: number;
  /** Tenants reconciled at once (the work is mostly waiting on the API server). */
  workers?: number;
  log: Logger;
  metrics: OperatorMetrics;
  now?: () => Date;
}

type AnyResource = TenantResource & KubernetesObject;

export class Operator {
  private readonly options: OperatorOptions;
  private readonly core: CoreV1Api;
  private readonly custom: CustomObjectsApi;
  private readonly objects: KubernetesObjectApi;
  private readonly namespaces: ResilientInformer<V1Namespace>;
  private readonly resources: Map<ResourceKind, ResilientInformer<AnyResource>>;
  private readonly bundles: ResilientInformer<V1ConfigMap>;
  private readonly queue: WorkQueue;
  private readonly elector: LeaderElector;
  /** The generation of each resource (by uid) last seen. */
  private readonly seenGenerations = new Map<string, number>();
  /** The digest of what this process last wrote to each ConfigMap (NAMESPACE/NAME). */
  private readonly written = new Map<string, string>();
  /** The sidecar Role and RoleBinding last applied per namespace, so unchanged ones are not written again. */
  private readonly accessApplied = new Map<string, string>();
  /** Each namespace's tenant as last seen, to enqueue the old tenant when it changes. */
  private readonly tenantOfNs = new Map<string, string>();
  /** The last problems reported per resource, so an Event goes out once per new problem. */
  private readonly reported = new Map<string, string>();
  /** ConfigMaps carrying the operator's labels that it did not write, by uid: the resourceVersion last reported. */
  private readonly foreignReported = new Map<string, string>();
  private keyring: Keyring | undefined;
  private keyringReadAt = 0;
  /** The last bundle each tenant distributed (revision and digest only: bundles are large), kept in force while the tenant is invalid. */
  private readonly lastGood = new Map<string, { revision: string; digest: string; generations: Record<string, number> }>();
  private resyncTimer: NodeJS.Timeout | undefined;
  private keyringTimer: NodeJS.Timeout | undefined;
  private started = false;

  constructor(options: OperatorOptions) {
    this.options = options;
    const kc = options.kubeConfig;
    this.core = kc.makeApiClient(CoreApi);
    this.custom = kc.makeApiClient(CustomApi);
    this.objects = KubernetesObjectApi.makeApiClient(kc);
    const onError = (name: string, error: unknown, retryInMs: number): void => {
      options.metrics.informerRestarts.inc({ informer: name });
      options.log.warn({ informer: name, error: describeError(error), retryInMs }, 'watch failed; restarting');
    };
    this.namespaces = new ResilientInformer<V1Namespace>(kc, '/api/v1/namespaces', () => this.core.listNamespace(), {
      name: 'namespaces',
      onError,
      transform: withoutManagedFields,
    });
    this.resources = new Map(
      KINDS.map((kind) => [
        kind,
        new ResilientInformer<AnyResource>(
          kc,
          `/apis/${GROUP}/${VERSION}/${PLURALS[kind]}`,
          async () => (await this.custom.listClusterCustomObject({ group: GROUP, version: VERSION, plural: PLURALS[kind] })) as KubernetesListObject<AnyResource>,
          { name: PLURALS[kind], onError, transform: (object: AnyResource) => compactSpec(withoutManagedFields(object)) },
        ),
      ]),
    );
    const selector = `${MANAGED_BY_LABEL}=${MANAGED_BY}`;
    this.bundles = new ResilientInformer<V1ConfigMap>(
      kc,
      '/api/v1/configmaps',
      () => this.core.listConfigMapForAllNamespaces({ labelSelector: selector }),
      // Bundles are large (the policy module alone is hundreds of KiB): cache a summary, not the data.
      { name: 'bundle-configmaps', onError, transform: summarizeBundle },
      selector,
    );
    this.queue = new WorkQueue(
      (key) => (key === TRUST_QUEUE_KEY ? this.reconcileTrust() : this.reconcileTenant(key)),
      (key, error, failures) => {
        const trust = key === TRUST_QUEUE_KEY;
        options.metrics.reconcileTotal.inc({ kind: trust ? 'trust' : 'tenant', result: 'error' });
        options.log.error({ ...(trust ? {} : { tenant: key }), error: describeError(error), failures }, trust ? 'publishing the trust failed; retrying with backoff' : 'reconcile failed; retrying with backoff');
      },
      { concurrency: options.workers ?? 4 },
    );
    this.elector = new LeaderElector(
      kc.makeApiClient(CoordinationV1Api),
      { namespace: options.namespace, name: options.leaseName, identity: options.identity, ...options.leaseTimings },
      {
        onStartedLeading: () => { this.startLeading(); },
        onStoppedLeading: () => { this.stopLeading(); },
        onNewLeader: (holder) => { options.log.info({ leader: holder }, 'leader is now %s', holder); },
        onError: (error) => { options.log.warn({ error: describeError(error) }, 'leader election failed; retrying'); },
      },
    );
    this.wireHandlers();
  }

  get isLeader(): boolean {
    return this.elector.isLeader;
  }

  get ready(): boolean {
    return this.started && this.namespaces.hasSynced && this.bundles.hasSynced && [...this.resources.values()].every((i) => i.hasSynced);
  }

  get queueDepth(): number {
    return this.queue.depth;
  }

  /** Waits until every queued reconcile has run (tests and the demo use it). */
  async idle(): Promise<void> {
    await this.queue.idle();
  }

  async start(): Promise<void> {
    this.keyring = await ensureKeyring(this.core, this.options.namespace, this.options.signingKeySecret);
    this.keyringReadAt = Date.now();
    await Promise.all([this.namespaces.start(), this.bundles.start(), ...[...this.resources.values()].map((i) => i.start())]);
    this.started = true;
    this.elector.start();
  }

  async stop(): Promise<void> {
    this.started = false;
    this.queue.stop();
    if (this.resyncTimer) clearInterval(this.resyncTimer);
    if (this.keyringTimer) clearInterval(this.keyringTimer);
    await this.elector.stop();
    await Promise.all([this.namespaces.stop(), this.bundles.stop(), ...[...this.resources.values()].map((i) => i.stop())]);
  }

  private startLeading(): void {
    this.options.metrics.isLeader.set(1);
    this.options.log.info({ identity: this.options.identity }, 'became leader; reconciling');
    this.queue.start();
    this.enqueueAll();
    this.resyncTimer = setInterval(() => { this.enqueueAll(); }, this.options.resyncMs);
    this.resyncTimer.unref();
    // A rotated keyring is noticed even when no resource changes.
    this.keyringTimer = setInterval(() => {
      this.currentKeyring(this.options.log).catch((error: unknown) => {
        this.options.log.warn({ error: describeError(error) }, 'could not read the signing keys; keeping the ones loaded');
      });
    }, this.options.keyringRefreshMs ?? 15_000);
    this.keyringTimer.unref();
  }

  private stopLeading(): void {
    this.options.metrics.isLeader.set(0);
    this.options.log.info({ identity: this.options.identity }, 'lost leadership; reconciling stops');
    this.queue.stop();
    if (this.resyncTimer) clearInterval(this.resyncTimer);
    if (this.keyringTimer) clearInterval(this.keyringTimer);
  }

  private enqueue(tenant: string): void {
    if (!this.elector.isLeader) return;
    this.queue.add(tenant);
    this.options.metrics.queueDepth.set(this.queue.depth);
  }

  private enqueueAll(): void {
    this.enqueue(TRUST_QUEUE_KEY);
    const tenants = new Set<string>();
    for (const ns of this.namespaces.list()) tenants.add(tenantOfNamespace(view(ns)));
    for (const cm of this.bundles.list()) {
      const tenant = cm.metadata?.labels?.[TENANT_LABEL];
      if (tenant) tenants.add(tenant);
      this.noticeForeignName(cm);
    }
    for (const tenant of tenants) this.enqueue(tenant);
  }

  private tenantOfNamespaceName(namespace: string): string {
    const ns = this.namespaces.get(namespace);
    return ns ? tenantOfNamespace(view(ns)) : namespace;
  }

  private wireHandlers(): void {
    this.namespaces.onChange((ns, verb) => {
      const name = ns.metadata?.name ?? '';
      const tenant = tenantOfNamespace(view(ns));
      const previous = this.tenantOfNs.get(name);
      if (previous !== undefined && previous !== tenant) this.enqueue(previous);
      if (verb === 'delete') this.tenantOfNs.delete(name);
      else this.tenantOfNs.set(name, tenant);
      this.enqueue(tenant);
    });
    for (const informer of this.resources.values()) {
      informer.onChange((object, verb) => {
        // Status writes (ours) leave the generation alone: they need no reconcile.
        const uid = object.metadata?.uid ?? '';
        const generation = object.metadata?.generation ?? 0;
        if (verb === 'delete') this.seenGenerations.delete(uid);
        else if (this.seenGenerations.get(uid) === generation) return;
        else this.seenGenerations.set(uid, generation);
        this.enqueue(this.tenantOfNamespaceName(object.metadata?.namespace ?? ''));
      });
    }
    // A bundle edited or deleted by hand is put back; one in a namespace that left is pruned.
    // The echo of the operator's own write changes nothing and is let pass.
    this.bundles.onChange((cm, verb) => {
      const key = `${cm.metadata?.namespace ?? ''}/${cm.metadata?.name ?? ''}`;
      if (verb === 'delete') this.foreignReported.delete(cm.metadata?.uid ?? '');
      else this.noticeForeignName(cm);
      if (verb !== 'delete' && this.written.get(key) === summaryOf(cm)?.digest) return;
      // The trust is no tenant's: edited or deleted by hand it is put back; a copy in a tenant namespace is removed.
      if (cm.metadata?.name === TRUST_CONFIGMAP) {
        this.enqueue(TRUST_QUEUE_KEY);
        return;
      }
      const tenant = cm.metadata?.labels?.[TENANT_LABEL];
      if (tenant) this.enqueue(tenant);
      this.enqueue(this.tenantOfNamespaceName(cm.metadata?.namespace ?? ''));
    });
  }

  // ---- reconcile -------------------------------------------------------

  private async reconcileTenant(tenant: string): Promise<undefined> {
    const started = performance.now();
    const log = this.options.log.child({ tenant });
    const members = this.memberNamespaces(tenant);
    const refs = this.resourcesOf(members);
    const existing = this.existingBundles(members);

    let result: 'success' | 'invalid' = 'success';
    if (members.length > 0) {
      const { outcome, inForce } = await this.compileAndDistribute(tenant, members, refs, await this.inForce(tenant, existing), existing, log);
      if (!outcome.ok) result = 'invalid';
      await this.grantSidecarAccess(tenant, members, refs);
      await this.writeStatuses(tenant, refs, outcome, inForce, log);
    }
    await this.prune(tenant, members, log);
    this.options.metrics.reconcileTotal.inc({ kind: 'tenant', result });
    this.options.metrics.reconcileDuration.observe({ kind: 'tenant' }, (performance.now() - started) / 1000);
    this.options.metrics.queueDepth.set(this.queue.depth);
    return undefined;
  }

  private memberNamespaces(tenant: string): string[] {
    const holding = new Set<string>();
    for (const informer of this.resources.values()) for (const object of informer.list()) holding.add(object.metadata?.namespace ?? '');
    return this.namespaces
      .list()
      .filter((ns) => ns.status?.phase !== 'Terminating' || holding.has(ns.metadata?.name ?? ''))
      .map(view)
      .filter((ns) => tenantOfNamespace(ns) === tenant && takesBundle(ns, holding.has(ns.name)))
      .map((ns) => ns.name)
      .sort();
  }

  private resourcesOf(namespaces: readonly string[]): { kind: ResourceKind; object: AnyResource }[] {
    const refs: { kind: ResourceKind; object: AnyResource }[] = [];
    for (const kind of KINDS) {
      for (const ns of namespaces) {
        const objects = this.resources.get(kind)?.list(ns) ?? [];
        for (const object of [...objects].sort((a, b) => (a.metadata?.name ?? '').localeCompare(b.metadata?.name ?? ''))) {
          refs.push({ kind, object: withSpec(object) });
        }
      }
    }
    return refs;
  }

  /**
   * The bundle ConfigMap of each member namespace, found by name: the only places a tenant's
   * bundle is read from. Labels say nothing: anyone who may write ConfigMaps in some namespace
   * can put the operator's labels on one (see prune for those outside the members).
   */
  private existingBundles(members: readonly string[]): Map<string, V1ConfigMap> {
    const found = new Map<string, V1ConfigMap>();
    for (const namespace of members) {
      const cm = this.bundles.get(BUNDLE_CONFIGMAP, namespace);
      if (cm) found.set(namespace, cm);
    }
    return found;
  }

  /** The tenant whose bundle a namespace takes, or undefined when it takes none. */
  private bundleTenantOf(namespace: string): string | undefined {
    const ns = this.namespaces.get(namespace);
    if (!ns) return undefined;
    const holds = [...this.resources.values()].some((informer) => informer.list(namespace).length > 0);
    return takesBundle(view(ns), holds) ? tenantOfNamespace(view(ns)) : undefined;
  }

  /**
   * The newest revision the operator signed among the tenant's bundles, and the
   * generations it holds: the next bundle is numbered after it. A bundle
   * ConfigMap counts only if this process wrote its content or it verifies
   * under the operator's keys: tenants write ConfigMaps in their namespaces,
   * and a revision one made up must not number the next bundle (a sequence
   * pushed to its 20-digit bound would stop every new bundle of the tenant,
   * a suspended agent's included).
   */
  private async inForce(tenant: string, existing: ReadonlyMap<string, V1ConfigMap>): Promise<InForce> {
    const known = this.lastGood.get(tenant);
    // The unverified manifest orders the candidates only: each is believed once its content is known to be ours.
    const byNewest = [...existing.values()].sort((a, b) => compareSequence(summaryOf(b)?.manifest?.revision, summaryOf(a)?.manifest?.revision));
    for (const cm of byNewest) {
      const summary = summaryOf(cm);
      const manifest = summary?.manifest;
      if (summary === undefined || manifest === undefined) continue;
      if (known !== undefined && compareSequence(known.revision, manifest.revision) >= 0) break;
      const namespace = cm.metadata?.namespace ?? '';
      if (summary.digest === known?.digest || summary.digest === this.written.get(`${namespace}/${BUNDLE_CONFIGMAP}`)) return { revision: manifest.revision, generations: manifest.generations };
      const verified = await this.verifiedInForce(tenant, namespace);
      if (verified !== undefined) return verified;
    }
    return known === undefined ? { revision: undefined, generations: {} } : { revision: known.revision, generations: known.generations };
  }

  /** The bundle of a namespace, read afresh, if it verifies under the operator's keys. */
  private async verifiedInForce(tenant: string, namespace: string): Promise<InForce | undefined> {
    const cm = await this.core.readNamespacedConfigMap({ name: BUNDLE_CONFIGMAP, namespace }).catch(() => undefined);
    if (cm === undefined) return undefined;
    const revision = await this.verifiedRevision(tenant, { data: cm.data ?? {}, binaryData: cm.binaryData ?? {} });
    return revision === undefined ? undefined : { revision, generations: readManifest(cm)?.generations ?? {} };
  }

  private validate(refs: readonly { kind: ResourceKind; object: AnyResource }[]): Map<string, ResourceProblem[]> {
    const problems = new Map<string, ResourceProblem[]>();
    for (const { kind, object } of refs) {
      const key = resourceKey(kind, object.metadata?.namespace ?? '', object.metadata?.name ?? '');
      const errors = validateResource(kind, object as unknown as Record<string, unknown>, key);
      if (errors.length > 0) problems.set(key, errors.map(problemOf));
    }
    return problems;
  }

  private async compileAndDistribute(
    tenant: string,
    members: readonly string[],
    refs: readonly { kind: ResourceKind; object: AnyResource }[],
    inForce: InForce,
    existing: ReadonlyMap<string, V1ConfigMap>,
    log: Logger,
  ): Promise<{ outcome: CompileOutcome; inForce: InForce }> {
    const invalid = this.validate(refs);
    if (invalid.size > 0) {
      return { outcome: { ok: false, problems: invalid, tenantProblems: [] }, inForce: (await this.keepLastGood(tenant, members, refs, existing, log)) ?? inForce };
    }
    const compileStarted = performance.now();
    const compiled = await this.compile(tenant, refs, log);
    if (!('wasm' in compiled)) {
      return { outcome: compiled, inForce: (await this.keepLastGood(tenant, members, refs, existing, log)) ?? inForce };
    }
    this.options.metrics.compileSeconds.set({ tenant }, (performance.now() - compileStarted) / 1000);
    const revision = await this.distribute(tenant, members, refs, compiled, inForce, existing, log);
    const ruleCounts = new Map<string, number>();
    for (const { kind, object } of refs) {
      if (kind === 'ToolPolicy') ruleCounts.set(keyOf(kind, object), (object as ToolPolicy).spec.rules?.length ?? 0);
    }
    return { outcome: { ok: true, revision, ruleCounts }, inForce };
  }

  /** The compiled tenant, or the compiler's problems placed on the resources they concern. */
  private async compile(
    tenant: string,
    refs: readonly { kind: ResourceKind; object: AnyResource }[],
    log: Logger,
  ): Promise<CompiledTenant | Extract<CompileOutcome, { ok: false }>> {
    try {
      return await this.options.compile(toTenantResources(tenant, refs));
    } catch (error) {
      if (!(error instanceof CompileErrors) && !(error instanceof CompileError)) throw error;
      const errors = error instanceof CompileErrors ? error.errors : [error];
      const problems = new Map<string, ResourceProblem[]>();
      const tenantProblems: ResourceProblem[] = [];
      for (const e of errors) {
        if (e.location.resource === undefined) tenantProblems.push(problemOf(e));
        else problems.set(e.location.resource, [...(problems.get(e.location.resource) ?? []), problemOf(e)]);
      }
      if (tenantProblems.length > 0) log.error({ problems: tenantProblems }, 'tenant does not compile');
      return { ok: false, problems, tenantProblems };
    }
  }

  /** Publishes the trust keys if they changed, then signs the bundle and writes it where it differs. Returns the revision. */
  private async distribute(
    tenant: string,
    members: readonly string[],
    refs: readonly { kind: ResourceKind; object: AnyResource }[],
    compiled: CompiledTenant,
    inForce: InForce,
    existing: ReadonlyMap<string, V1ConfigMap>,
    log: Logger,
  ): Promise<string> {
    const generations = Object.fromEntries(refs.map(({ kind, object }) => [keyOf(kind, object), object.metadata?.generation ?? 0]));
    const manifest = {
      roots: ['portcullis'],
      metadata: { tenant, [GENERATIONS_KEY]: generations, sourceDigest: compiled.revision },
      wasm: compiled.entrypoints.map((entrypoint) => ({ entrypoint, module: '/policy.wasm' })),
    };
    return this.signAndWrite(tenant, members, existing, inForce.revision, { manifest, wasm: compiled.wasm, data: compiled.data }, generations, log);
  }

  /** Signs the content as the revision after `previous` and writes it, trust first, where it differs. Returns the revision. */
  private async signAndWrite(
    tenant: string,
    members: readonly string[],
    existing: ReadonlyMap<string, V1ConfigMap>,
    previous: string | undefined,
    content: { manifest: Omit<BundleManifest, 'revision'>; wasm: Uint8Array; data: unknown },
    generations: Record<string, number>,
    log: Logger,
  ): Promise<string> {
    const keyring = await this.currentKeyring(log);
    const minimum = this.minimumRevisionOf(tenant);
    const revision = nextRevision(compareSequence(previous, minimum) >= 0 ? previous : minimum, bundleContentDigest(content));
    const signed = await signBundle({ ...content, manifest: { ...content.manifest, revision } }, keyring.active);
    const payload = toConfigMapData(signed);
    this.options.metrics.bundleBytes.set({ tenant }, configMapBytes(payload));
    this.options.metrics.bundleRevision.set({ tenant }, Number(parseRevision(revision).sequence));
    // Trust first: a sidecar must know the key before it sees a bundle signed with it.
    await this.publishTrust(keyring);
    await this.writeBundles(tenant, members, existing, revision, payload, log);
    this.lastGood.set(tenant, { revision, digest: payloadDigest(payload), generations });
    if (compareSequence(revision, minimum) > 0) await this.raiseMinimumRevision(tenant, revision, minimum === undefined);
    return revision;
  }

  /**
   * The lowest revision the tenant's sidecars may load, as last written to its
   * ConfigMap in the operator's namespace (which tenants cannot write); an
   * unreadable one counts as none.
   */
  private minimumRevisionOf(tenant: string): string | undefined {
    const text = this.bundles.get(minimumRevisionConfigMap(tenant), this.options.namespace)?.data?.[MINIMUM_REVISION_KEY];
    if (text === undefined) return undefined;
    try {
      parseRevision(text);
      return text;
    } catch {
      return undefined;
    }
  }

  /**
   * Raises the tenant's minimum revision to the one just written to every member
   * namespace (never before: a sidecar keeps the bundle it runs, but a starting
   * one would load nothing). A new tenant's record is added to the sidecars' read
   * access in the operator namespace.
   */
  private async raiseMinimumRevision(tenant: string, revision: string, first: boolean): Promise<void> {
    const record = minimumRevisionRecord(this.options.namespace, tenant, revision);
    await this.applyTracked(record, payloadDigest({ data: record.data ?? {} }));
    if (first) this.enqueue(TRUST_QUEUE_KEY);
  }

  private async writeBundles(tenant: string, members: readonly string[], existing: ReadonlyMap<string, V1ConfigMap>, revision: string, payload: ConfigMapData, log: Logger): Promise<void> {
    const digest = payloadDigest(payload);
    for (const namespace of members) {
      const current = existing.get(namespace);
      if (current && summaryOf(current)?.digest === digest) continue;
      await this.applyTracked(bundleConfigMap(namespace, tenant, revision, payload), digest);
      log.info({ namespace, revision }, 'bundle written');
    }
  }

  /**
   * The keys sidecars verify bundles with, as a JWKS in ConfigMap portcullis-trust
   * of the operator's own namespace: tenants, who may write ConfigMaps in their
   * own namespaces, cannot write there (sidecars read it through a Role scoped
   * to that one name, trustReaderRole). Written only when the keys changed.
   */
  private async publishTrust(keyring: Keyring): Promise<void> {
    const namespace = this.options.namespace;
    const jwks = JSON.stringify(await toJwks(keyring.publicKeys));
    if (this.bundles.get(TRUST_CONFIGMAP, namespace)?.data?.[TRUST_JWKS_KEY] === jwks) return;
    const trust = trustConfigMap(namespace, jwks);
    await this.applyTracked(trust, payloadDigest({ data: trust.data ?? {} }));
    this.options.log.info({ namespace, keys: [...keyring.publicKeys.keys()] }, 'trust published');
  }

  /**
   * Publishes the trust and lets every sidecar read it (that ConfigMap only),
   * and removes the trust ConfigMaps earlier versions wrote into tenant namespaces.
   */
  private async reconcileTrust(): Promise<undefined> {
    const started = performance.now();
    await this.publishTrust(await this.currentKeyring(this.options.log));
    const minimumRevisionNames = this.bundles.list(this.options.namespace).map((cm) => cm.metadata?.name ?? '').filter((name) => name.startsWith(MINIMUM_REVISION_PREFIX));
    for (const object of [trustReaderRole(this.options.namespace, minimumRevisionNames), trustReaderBinding(this.options.namespace)]) {
      const key = `${object.kind ?? ''}/${object.metadata?.namespace ?? ''}/trust`;
      const digest = JSON.stringify(object);
      if (this.accessApplied.get(key) === digest) continue;
      await this.objects.patch(object, undefined, undefined, FIELD_MANAGER, true, PatchStrategy.ServerSideApply);
      this.accessApplied.set(key, digest);
    }
    for (const cm of this.bundles.list()) {
      const { name = '', namespace = '', uid, resourceVersion } = cm.metadata ?? {};
      if (!isStrayTrust({ name, namespace }, this.options.namespace)) continue;
      try {
        // Only the object listed: one written since (by whoever) is judged when its own event comes.
        await this.objects.delete({ apiVersion: 'v1', kind: 'ConfigMap', metadata: { name, namespace } }, undefined, undefined, undefined, undefined, undefined, { preconditions: { ...(uid === undefined ? {} : { uid }), ...(resourceVersion === undefined ? {} : { resourceVersion }) } });
        this.options.log.info({ namespace }, 'trust ConfigMap removed from a tenant namespace: sidecars read the trust from the operator namespace only');
      } catch (error) {
        const code = (error as { code?: number } | null)?.code;
        if (code !== 404 && code !== 409) throw error;
      }
    }
    this.options.metrics.reconcileTotal.inc({ kind: 'trust', result: 'success' });
    this.options.metrics.reconcileDuration.observe({ kind: 'trust' }, (performance.now() - started) / 1000);
    return undefined;
  }

  /**
   * While the tenant is invalid, every member namespace keeps (or gets back) the
   * last good bundle: the one this process last wrote, read back from a
   * namespace that still holds it intact, else the newest existing bundle that
   * verifies against the operator's keys. Containment waits for no fix: the
   * agents' standing (suspended, revokedBefore) is set in it as the
   * AgentIdentities say now and signed as the next revision, compiling nothing.
   * Returns what is in force after, or undefined when no bundle verifies.
   */
  private async keepLastGood(
    tenant: string,
    members: readonly string[],
    refs: readonly { kind: ResourceKind; object: AnyResource }[],
    existing: ReadonlyMap<string, V1ConfigMap>,
    log: Logger,
  ): Promise<InForce | undefined> {
    const known = this.lastGood.get(tenant);
    const byNewest = [...existing.values()].sort((a, b) => compareSequence(summaryOf(b)?.manifest?.revision, summaryOf(a)?.manifest?.revision));
    const intact = known ? byNewest.filter((cm) => summaryOf(cm)?.digest === known.digest) : [];
    for (const summary of [...intact, ...byNewest]) {
      const cm = await this.core.readNamespacedConfigMap({ name: BUNDLE_CONFIGMAP, namespace: summary.metadata?.namespace ?? '' }).catch(() => undefined);
      if (!cm) continue;
      const payload = { data: cm.data ?? {}, binaryData: cm.binaryData ?? {} };
      const bundle = await this.verified(tenant, payload);
      if (bundle === undefined) continue;
      const generations = generationsOf(bundle.manifest);
      const standings = refs.filter((r) => r.kind === 'AgentIdentity').map(({ object }) => standingSpecOf(object.metadata?.namespace ?? '', object.metadata?.name ?? '', object.spec));
      const contained = withAgentStanding(bundle.data, standings);
      if (contained.changes.length === 0) {
        this.lastGood.set(tenant, { revision: bundle.manifest.revision, digest: payloadDigest(payload), generations });
        await this.writeBundles(tenant, members, existing, bundle.manifest.revision, payload, log);
        return { revision: bundle.manifest.revision, generations };
      }
      const { revision: previous, ...manifest } = bundle.manifest;
      const revision = await this.signAndWrite(tenant, members, existing, previous, { manifest, wasm: bundle.wasm, data: contained.data }, generations, log);
      this.options.metrics.standingUpdates.inc();
      log.warn({ revision, previous, changes: contained.changes }, 'tenant blocked by invalid resources; agent standing carried into the last good bundle');
      return { revision, generations };
    }
    return undefined;
  }

  private async verifiedRevision(tenant: string, payload: ConfigMapData): Promise<string | undefined> {
    return (await this.verified(tenant, payload))?.manifest.revision;
  }

  /** The bundle, if it verifies under the operator's keys as the tenant's: only then is any of it believed. */
  private async verified(tenant: string, payload: ConfigMapData): Promise<Bundle | undefined> {
    if (!this.keyring) return undefined;
    try {
      return await verifyBundle(fromConfigMapData(payload), { publicKeys: this.keyring.publicKeys, tenant });
    } catch {
      return undefined;
    }
  }

  /**
   * The keyring, read again from its Secret at most every keyringRefreshMs: a
   * rotation reaches every replica without a restart. A new keyring re-signs
   * every tenant, so all bundles soon carry the new key.
   */
  private async currentKeyring(log: Logger): Promise<Keyring> {
    const known = this.keyring;
    if (!known) throw new Error('signing keys are not loaded');
    if (Date.now() - this.keyringReadAt < (this.options.keyringRefreshMs ?? 15_000)) return known;
    const fresh = await readKeyring(this.core, this.options.namespace, this.options.signingKeySecret, known);
    this.keyringReadAt = Date.now();
    if (fresh !== known) {
      this.keyring = fresh;
      log.info({ activeKey: fresh.active.keyId, keys: [...fresh.publicKeys.keys()] }, 'signing keys changed; re-signing every tenant');
      this.enqueueAll();
    }
    return fresh;
  }

  /** Server-side apply of a ConfigMap whose data digest is `digest`, remembered so its watch echo is let pass. */
  private async applyTracked(object: KubernetesObject, digest: string): Promise<void> {
    const key = `${object.metadata?.namespace ?? ''}/${object.metadata?.name ?? ''}`;
    // Before the write: the watch event may arrive before the response does.
    this.written.set(key, digest);
    try {
      await this.objects.patch(object, undefined, undefined, FIELD_MANAGER, true, PatchStrategy.ServerSideApply);
    } catch (error) {
      this.written.delete(key);
      throw error;
    }
  }

  private async writeStatuses(tenant: string, refs: readonly { kind: ResourceKind; object: AnyResource }[], outcome: CompileOutcome, inForce: InForce, log: Logger): Promise<void> {
    const now = this.options.now?.() ?? new Date();
    const resourceRefs: ResourceRef[] = refs.map(({ kind, object }) => ({
      kind,
      namespace: object.metadata?.namespace ?? '',
      name: object.metadata?.name ?? '',
      generation: object.metadata?.generation ?? 0,
      status: object.status,
    }));
    const updates = planStatuses(resourceRefs, tenant, outcome, inForce, now);
    for (const [index, update] of updates.entries()) {
      const object = refs[index]?.object;
      if (!object) continue;
      if (update.ref.kind === 'AgentIdentity') update.status.suspended = (object as AgentIdentity).spec.suspended ?? false;
      if (!statusChanged(object.status, update.status)) continue;
      try {
        await this.custom.patchNamespacedCustomObjectStatus(
          { group: GROUP, version: VERSION, namespace: update.ref.namespace, plural: PLURALS[update.ref.kind], name: update.ref.name, body: { status: update.status } },
          setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
        );
      } catch (error) {
        const code = (error as { code?: number } | null)?.code;
        if (code === 404) continue; // deleted meanwhile
        this.options.metrics.statusWriteFailures.inc({ kind: update.ref.kind, code: String(code ?? 'none') });
        // The API server refuses this status itself: writing it again cannot succeed, and a retry
        // loop would only load it. Said in the log and the metric; the next change reconciles anew.
        if (code === 422) {
          log.error({ resource: resourceKey(update.ref.kind, update.ref.namespace, update.ref.name), err: error }, 'the API server refused the status; not retried');
          continue;
        }
        throw error;
      }
    }
    if (!outcome.ok) await this.reportProblems(outcome, refs, log);
    else for (const { kind, object } of refs) this.reported.delete(resourceKey(kind, object.metadata?.namespace ?? '', object.metadata?.name ?? ''));
  }

  private async reportProblems(outcome: Extract<CompileOutcome, { ok: false }>, refs: readonly { kind: ResourceKind; object: AnyResource }[], log: Logger): Promise<void> {
    for (const { kind, object } of refs) {
      const key = resourceKey(kind, object.metadata?.namespace ?? '', object.metadata?.name ?? '');
      const problems = outcome.problems.get(key);
      if (!problems) continue;
      const message = summarizeProblems(problems.map((p) => p.message), EVENT_MESSAGE_LENGTH);
      if (this.reported.get(key) === message) continue;
      this.reported.set(key, message);
      log.warn({ resource: key, problems }, 'invalid resource; the last good bundle stays in force');
      await this.event(kind, object, 'Warning', 'InvalidPolicy', message);
    }
  }

  private async event(kind: ResourceKind, object: AnyResource, type: 'Normal' | 'Warning', reason: string, message: string): Promise<void> {
    await this.eventAbout({ apiVersion: `${GROUP}/${VERSION}`, kind, metadata: object.metadata ?? {} }, type, reason, message);
  }

  private async eventAbout(object: { apiVersion: string; kind: string; metadata: V1ObjectMeta }, type: 'Normal' | 'Warning', reason: string, message: string): Promise<void> {
    const namespace = object.metadata.namespace ?? 'default';
    const now = new Date();
    await this.core
      .createNamespacedEvent({
        namespace,
        body: {
          metadata: { generateName: `${object.metadata.name ?? 'portcullis'}.`, namespace },
          involvedObject: {
            apiVersion: object.apiVersion,
            kind: object.kind,
            name: object.metadata.name ?? '',
            namespace,
            uid: object.metadata.uid ?? '',
            resourceVersion: object.metadata.resourceVersion ?? '',
          },
          type,
          reason,
          message,
          source: { component: FIELD_MANAGER },
          firstTimestamp: now,
          lastTimestamp: now,
          count: 1,
        },
      })
      .catch((error: unknown) => { this.options.log.warn({ error: describeError(error) }, 'could not record an event'); });
  }

  /** Lets the sidecars of each member namespace read their bundle: a Role, bound to the ServiceAccounts of the namespace's agents. */
  private async grantSidecarAccess(tenant: string, members: readonly string[], refs: readonly { kind: ResourceKind; object: AnyResource }[]): Promise<void> {
    for (const namespace of members) {
      const accounts = refs.flatMap(({ kind, object }) => {
        const account = kind === 'AgentIdentity' && object.metadata?.namespace === namespace ? (object as AgentIdentity).spec.serviceAccountName : undefined;
        return typeof account === 'string' && account !== '' ? [account] : [];
      });
      for (const object of [sidecarRole(namespace, tenant), sidecarRoleBinding(namespace, tenant, accounts)]) {
        const key = `${object.kind ?? ''}/${namespace}`;
        const digest = JSON.stringify(object);
        if (this.accessApplied.get(key) === digest) continue;
        await this.objects.patch(object, undefined, undefined, FIELD_MANAGER, true, PatchStrategy.ServerSideApply);
        this.accessApplied.set(key, digest);
      }
    }
  }

  /**
   * Deletes an object of the tenant from a namespace that left it — only while it is still this
   * tenant's (preconditions on uid and resourceVersion), since the namespace's new tenant may
   * already have written its own.
   */
  private async deleteIfTenants(tenant: string, ref: { apiVersion: string; kind: string; metadata: { name: string; namespace: string } }): Promise<void> {
    for (let attempt = 0; attempt < 3; attempt++) {
      try {
        const current = await this.objects.read(ref);
        const { uid, resourceVersion, labels } = current.metadata ?? {};
        if (labels?.[TENANT_LABEL] !== tenant) return;
        await this.objects.delete(ref, undefined, undefined, undefined, undefined, undefined, { preconditions: { ...(uid === undefined ? {} : { uid }), ...(resourceVersion === undefined ? {} : { resourceVersion }) } });
        return;
      } catch (error) {
        const code = (error as { code?: number } | null)?.code;
        if (code === 404) return;
        // Changed since it was read: read it again to see whose it is now.
        if (code !== 409) throw error;
      }
    }
  }

  /**
   * Bundle ConfigMaps labelled with the tenant outside its member namespaces. One the
   * operator signed for the tenant is in a namespace that left it: deleted (that very
   * version only), with the sidecar access granted there. Any other is not the tenant's,
   * whatever its labels say: left alone, never read as a bundle, and reported — unless
   * the namespace takes another tenant's bundle, whose reconcile overwrites it.
   */
  private async prune(tenant: string, members: readonly string[], log: Logger): Promise<void> {
    const memberSet = new Set(members);
    const outside = this.bundles.list().filter((cm) => cm.metadata?.name === BUNDLE_CONFIGMAP && cm.metadata.labels?.[TENANT_LABEL] === tenant && !memberSet.has(cm.metadata.namespace ?? ''));
    for (const cached of outside) {
      const namespace = cached.metadata?.namespace ?? '';
      if (this.foreignReported.get(cached.metadata?.uid ?? '') === cached.metadata?.resourceVersion) continue;
      const cm = await this.core.readNamespacedConfigMap({ name: BUNDLE_CONFIGMAP, namespace }).catch(() => undefined);
      if (cm?.metadata?.labels?.[TENANT_LABEL] !== tenant) continue;
      const genuine = (await this.verifiedRevision(tenant, { data: cm.data ?? {}, binaryData: cm.binaryData ?? {} })) !== undefined;
      if (!genuine && this.bundleTenantOf(namespace) !== undefined) continue;
      if (genuine) await this.deleteVersion({ apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: BUNDLE_CONFIGMAP, namespace } }, cm.metadata);
      else await this.reportForeign(cm, `is labelled as a bundle of tenant ${tenant} in a namespace that is not the tenant's, and the operator did not sign it`);
      this.written.delete(`${namespace}/${BUNDLE_CONFIGMAP}`);
      for (const kind of ['RoleBinding', 'Role']) {
        this.accessApplied.delete(`${kind}/${namespace}`);
        await this.deleteIfTenants(tenant, { apiVersion: 'rbac.authorization.k8s.io/v1', kind, metadata: { name: SIDECAR_ACCESS_NAME, namespace } });
      }
      if (genuine) log.info({ namespace }, 'bundle and sidecar access pruned from a namespace that left the tenant');
    }
  }

  /** Deletes exactly this version of an object: one written since is judged when its own event comes. */
  private async deleteVersion(ref: { apiVersion: string; kind: string; metadata: { name: string; namespace: string } }, seen: V1ObjectMeta): Promise<void> {
    const { uid, resourceVersion } = seen;
    try {
      await this.objects.delete(ref, undefined, undefined, undefined, undefined, undefined, { preconditions: { ...(uid === undefined ? {} : { uid }), ...(resourceVersion === undefined ? {} : { resourceVersion }) } });
    } catch (error) {
      const code = (error as { code?: number } | null)?.code;
      if (code !== 404 && code !== 409) throw error;
    }
  }

  /**
   * A ConfigMap carrying the operator's labels with a name the operator never writes:
   * someone else's, reported once per version and otherwise ignored. The trust
   * ConfigMap has its own reconcile.
   */
  private noticeForeignName(cm: V1ConfigMap): void {
    const name = cm.metadata?.name ?? '';
    if (!this.elector.isLeader || name === BUNDLE_CONFIGMAP || name === TRUST_CONFIGMAP) return;
    if (cm.metadata?.namespace === this.options.namespace && name.startsWith(MINIMUM_REVISION_PREFIX)) return;
    void this.reportForeign(cm, 'carries the labels of the operator, which writes no ConfigMap of that name');
  }

  /** Counts and reports, once per version, a ConfigMap that carries the operator's labels but is not its own. */
  private async reportForeign(cm: V1ConfigMap, why: string): Promise<void> {
    const { uid = '', resourceVersion = '', name = '', namespace = '' } = cm.metadata ?? {};
    if (this.foreignReported.get(uid) === resourceVersion) return;
    this.foreignReported.set(uid, resourceVersion);
    this.options.metrics.foreignObjects.inc({ kind: 'ConfigMap' });
    this.options.log.warn({ namespace, name, reason: why }, 'a ConfigMap the operator did not write carries its labels; ignored');
    await this.eventAbout({ apiVersion: 'v1', kind: 'ConfigMap', metadata: cm.metadata ?? {} }, 'Warning', 'ForeignObjectIgnored', `ConfigMap ${namespace}/${name} ${why}: ignored, never read as a bundle`);
  }

}

const LAST_APPLIED = 'kubectl.kubernetes.io/last-applied-configuration';
const SPEC_JSON = Symbol('spec as JSON');

type CachedResource = AnyResource & { [SPEC_JSON]?: string };

/**
 * The cache keeps each spec as compact JSON text, not as an object graph: a
 * policy of 100 rules is some 15 KB of text but several times that as objects,
 * and a thousand tenants' worth of graphs kept the heap at its bound (GC took
 * half the time of a full reconcile). A reconcile parses the specs it needs.
 */
function compactSpec(object: AnyResource): AnyResource {
  const cached = object as CachedResource;
  cached[SPEC_JSON] = JSON.stringify(object.spec);
  (cached as { spec: unknown }).spec = undefined;
  return cached;
}

/** The cached resource with its spec parsed back (a new object; the cache is not changed). */
function withSpec(object: AnyResource): AnyResource {
  const text = (object as CachedResource)[SPEC_JSON];
  if (text === undefined) return object;
  return { ...object, spec: JSON.parse(text) as AnyResource['spec'] } as AnyResource;
}

/**
 * The cache drops managedFields and kubectl's last-applied copy of the object:
 * together often larger than the object itself, and never read here.
 */
function withoutManagedFields<T extends KubernetesObject>(object: T): T {
  if (object.metadata?.managedFields) delete object.metadata.managedFields;
  const annotations = object.metadata?.annotations;
  if (annotations?.[LAST_APPLIED] !== undefined && object.metadata) {
    object.metadata.annotations = Object.fromEntries(Object.entries(annotations).filter(([key]) => key !== LAST_APPLIED));
  }
  return object;
}

/** One line about an API or network error, without the response headers and stack. */
export function describeError(error: unknown): string {
  if (!(error instanceof Error)) return String(error);
  const code = (error as { code?: unknown }).code;
  const body = (error as { body?: unknown }).body;
  let detail = error.message.split('\n')[0] ?? '';
  if (typeof body === 'string') {
    try {
      detail = (JSON.parse(body) as { message?: string }).message ?? detail;
    } catch {
      // not a Status object: keep the message
    }
  }
  const cause = error.cause instanceof Error ? `: ${error.cause.message}` : '';
  return `${typeof code === 'number' || typeof code === 'string' ? `${String(code)} ` : ''}${detail}${cause}`;
}

function keyOf(kind: ResourceKind, object: AnyResource): string {
  return resourceKey(kind, object.metadata?.namespace ?? '', object.metadata?.name ?? '');
}

function view(ns: V1Namespace): { name: string; labels: Record<string, string> } {
  return { name: ns.metadata?.name ?? '', labels: ns.metadata?.labels ?? {} };
}

function problemOf(error: CompileError): ResourceProblem {
  const where = [error.location.rule ? `rule ${error.location.rule}` : '', error.location.field ? `field ${error.location.field}` : ''].filter(Boolean).join(', ');
  return { code: error.code, message: where ? `${where}: ${error.detail}` : error.detail };
}

function toTenantResources(tenant: string, refs: readonly { kind: ResourceKind; object: AnyResource }[]): TenantResources {
  const loaded = <T>(kind: ResourceKind): Loaded<T>[] =>
    refs
      .filter((r) => r.kind === kind)
      .map(({ object }, document) => ({
        namespace: object.metadata?.namespace ?? '',
        name: object.metadata?.name ?? '',
        resource: object as unknown as T,
        source: { file: `cluster:${kind}`, document },
      }));
  return { tenant, agents: loaded<AgentIdentity>('AgentIdentity'), policies: loaded<ToolPolicy>('ToolPolicy'), egressRules: loaded<EgressRule>('EgressRule') };
}

interface StoredManifest {
  revision: string;
  generations: Record<string, number>;
}

function readManifest(cm: V1ConfigMap): StoredManifest | undefined {
  try {
    // Only the manifest is read here: verifying is for the sidecar and keepLastGood.
    const text = cm.data?.[MANIFEST_FILE];
    if (text === undefined) return undefined;
    const manifest = JSON.parse(text) as { revision?: unknown; metadata?: { [GENERATIONS_KEY]?: unknown } };
    if (typeof manifest.revision !== 'string') return undefined;
    parseRevision(manifest.revision);
    const generations = manifest.metadata?.[GENERATIONS_KEY];
    return { revision: manifest.revision, generations: typeof generations === 'object' && generations !== null ? (generations as Record<string, number>) : {} };
  } catch {
    return undefined; // a bundle edited by hand: the next write replaces it
  }
}

/** The generations a verified manifest says its bundle holds. */
function generationsOf(manifest: BundleManifest): Record<string, number> {
  const generations = manifest.metadata[GENERATIONS_KEY];
  return typeof generations === 'object' && generations !== null ? (generations as Record<string, number>) : {};
}

function compareSequence(a: string | undefined, b: string | undefined): number {
  const sequence = (revision: string | undefined): bigint => (revision === undefined ? -1n : parseRevision(revision).sequence);
  const [left, right] = [sequence(a), sequence(b)];
  return left === right ? 0 : left < right ? -1 : 1;
}

/** A digest of a ConfigMap's data and binaryData, whatever the key order. */
function payloadDigest(payload: Partial<ConfigMapData>): string {
  const hash = createHash('sha256');
  for (const [section, record] of [['data', payload.data ?? {}], ['binaryData', payload.binaryData ?? {}]] as const) {
    for (const key of Object.keys(record).sort()) hash.update(`${section}\0${key}\0${record[key] ?? ''}\0`);
  }
  return hash.digest('hex');
}

const SUMMARY_ANNOTATION = 'cache.portcullis.dev/summary';

interface BundleSummary {
  digest: string;
  manifest: StoredManifest | undefined;
}

/** What the cache keeps of a bundle ConfigMap: its metadata, a digest of its data and its manifest. */
function summarizeBundle(cm: V1ConfigMap): V1ConfigMap {
  const summary: BundleSummary = { digest: payloadDigest({ data: cm.data ?? {}, binaryData: cm.binaryData ?? {} }), manifest: readManifest(cm) };
  const trust = cm.metadata?.name === TRUST_CONFIGMAP;
  // A minimum-revision record keeps its revision (bounded: a ConfigMap of that name elsewhere could be anyone's).
  const minimum = cm.metadata?.name?.startsWith(MINIMUM_REVISION_PREFIX) === true ? cm.data?.[MINIMUM_REVISION_KEY]?.slice(0, 128) : undefined;
  return {
    metadata: {
      name: cm.metadata?.name,
      namespace: cm.metadata?.namespace,
      uid: cm.metadata?.uid,
      resourceVersion: cm.metadata?.resourceVersion,
      labels: cm.metadata?.labels,
      annotations: { ...cm.metadata?.annotations, [SUMMARY_ANNOTATION]: JSON.stringify(summary) },
    },
    ...(trust ? { data: cm.data ?? {} } : {}),
    ...(minimum === undefined ? {} : { data: { [MINIMUM_REVISION_KEY]: minimum } }),
  };
}

function summaryOf(cm: V1ConfigMap): BundleSummary | undefined {
  const text = cm.metadata?.annotations?.[SUMMARY_ANNOTATION];
  return text === undefined ? undefined : (JSON.parse(text) as BundleSummary);
}

function configMapBytes(payload: { data: Record<string, string>; binaryData: Record<string, string> }): number {
  let total = 0;
  for (const [k, v] of Object.entries(payload.data)) total += k.length + Buffer.byteLength(v);
  for (const [k, v] of Object.entries(payload.binaryData)) total += k.length + v.length;
  return total;
}

const commonLabels = (tenant: string): Record<string, string> => ({
  [MANAGED_BY_LABEL]: MANAGED_BY,
  'app.kubernetes.io/name': 'portcullis',
  [TENANT_LABEL]: tenant,
});

function bundleConfigMap(namespace: string, tenant: string, revision: string, payload: { data: Record<string, string>; binaryData: Record<string, string> }): V1ConfigMap {
  return {
    apiVersion: 'v1',
    kind: 'ConfigMap',
    metadata: {
      name: BUNDLE_CONFIGMAP,
      namespace,
      labels: { ...commonLabels(tenant), 'app.kubernetes.io/component': 'bundle' },
      annotations: { 'portcullis.dev/revision': revision },
    },
    data: payload.data,
    binaryData: payload.binaryData,
  };
}

/** The tenant's minimum revision, in the operator's namespace: see minimumRevisionConfigMap. */
function minimumRevisionRecord(namespace: string, tenant: string, revision: string): V1ConfigMap {
  return {
    apiVersion: 'v1',
    kind: 'ConfigMap',
    metadata: { name: minimumRevisionConfigMap(tenant), namespace, labels: { ...commonLabels(tenant), 'app.kubernetes.io/component': 'minimum-revision' } },
    data: { [MINIMUM_REVISION_KEY]: revision },
  };
}

/** The trust of every tenant (bundles name their tenant in the signed payload): no tenant label. */
function trustConfigMap(namespace: string, jwks: string): V1ConfigMap {
  return {
    apiVersion: 'v1',
    kind: 'ConfigMap',
    metadata: { name: TRUST_CONFIGMAP, namespace, labels: { [MANAGED_BY_LABEL]: MANAGED_BY, 'app.kubernetes.io/name': 'portcullis', 'app.kubernetes.io/component': 'trust' } },
    data: { [TRUST_JWKS_KEY]: jwks },
  };
}
