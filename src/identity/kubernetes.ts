// The token service's collaborators that talk to the API server: TokenReview, the pod lookup, the
// AgentIdentity directory (informer caches of AgentIdentities and Namespaces), and the status writer of
// `lastTokenIssued`.

import type { CustomObjectsApi, KubeConfig, KubernetesListObject, V1Namespace } from '@kubernetes/client-node';
import { AuthenticationV1Api, CoreV1Api, CustomObjectsApi as CustomApi, PatchStrategy, setHeaderOptions } from '@kubernetes/client-node';
import type { Logger } from 'pino';
import type { AgentIdentity } from '../api/index.ts';
import { GROUP, VERSION } from '../api/index.ts';
import { TENANT_LABEL } from '../compiler/index.ts';
import { parseDuration } from '../compiler/durations.ts';
import { ResilientInformer } from '../operator/informers.ts';
import { INJECTED_ANNOTATION } from '../api/labels.ts';
import { PodLookupUnavailableError, TokenReviewUnavailableError } from './errors.ts';
import type { AgentDirectory, AgentRecord, LookupPod, PodRecord, ReviewToken, ServiceAccountReview } from './token-service.ts';
import { SERVICE_ACCOUNT_TOKEN_AUDIENCE } from './token-service.ts';

/** A TokenReview of a ServiceAccount token for the `portcullis` audience. */
export function tokenReviewer(kubeConfig: KubeConfig, audience = SERVICE_ACCOUNT_TOKEN_AUDIENCE): ReviewToken {
  const api = kubeConfig.makeApiClient(AuthenticationV1Api);
  return async (token: string): Promise<ServiceAccountReview> => {
    let status;
    try {
      ({ status } = await api.createTokenReview({ body: { apiVersion: 'authentication.k8s.io/v1', kind: 'TokenReview', spec: { token, audiences: [audience] } } }));
    } catch (error) {
      throw new TokenReviewUnavailableError(`the TokenReview failed: ${error instanceof Error ? error.message.split('\n')[0] ?? '' : String(error)}`, { cause: error });
    }
    return {
      authenticated: status?.authenticated === true,
      ...(status?.user?.username !== undefined ? { username: status.user.username } : {}),
      ...(status?.user?.extra !== undefined ? { extra: status.user.extra } : {}),
      ...(status?.audiences !== undefined ? { audiences: status.audiences } : {}),
      ...(status?.error !== undefined ? { error: status.error } : {}),
    };
  };
}

/**
 * Reads the pod a ServiceAccount token is bound to with one GET (the operator's ClusterRole grants
 * `get pods`, nothing more of them): read live rather than from a cache of every pod of the
 * cluster, so a pod just deleted is gone and the operator holds no list or watch of pods.
 */
export function podLookup(kubeConfig: KubeConfig): LookupPod {
  const core = kubeConfig.makeApiClient(CoreV1Api);
  return async (namespace: string, name: string): Promise<PodRecord | undefined> => {
    let pod;
    try {
      pod = await core.readNamespacedPod({ namespace, name });
    } catch (error) {
      if (statusCodeOf(error) === 404) return undefined;
      throw new PodLookupUnavailableError(`reading pod ${namespace}/${name} failed: ${error instanceof Error ? error.message.split('\n')[0] ?? '' : String(error)}`, { cause: error });
    }
    return {
      uid: pod.metadata?.uid ?? '',
      serviceAccountName: pod.spec?.serviceAccountName ?? 'default',
      ...(pod.status?.phase !== undefined ? { phase: pod.status.phase } : {}),
      deleting: pod.metadata?.deletionTimestamp !== undefined,
      injected: pod.metadata?.annotations?.[INJECTED_ANNOTATION] !== undefined,
    };
  };
}

function statusCodeOf(error: unknown): number | undefined {
  const code = typeof error === 'object' && error !== null ? (error as { code?: unknown }).code : undefined;
  return typeof code === 'number' ? code : undefined;
}

/** An AgentIdentity as the token service sees it; a `tokenTTL` that does not parse means the default. */
export function agentRecordOf(identity: AgentIdentity, tenant: string): AgentRecord {
  const ttl = identity.spec.tokenTTL !== undefined ? parseDuration(identity.spec.tokenTTL) : undefined;
  const revokedBefore = identity.spec.revokedBefore !== undefined ? new Date(identity.spec.revokedBefore) : undefined;
  return {
    namespace: identity.metadata?.namespace ?? '',
    name: identity.metadata?.name ?? '',
    tenant,
    serviceAccountName: identity.spec.serviceAccountName,
    roles: identity.spec.roles ?? [],
    scopes: identity.spec.scopes ?? [],
    ...(ttl !== undefined && ttl > 0 ? { tokenTTLMs: ttl } : {}),
    suspended: identity.spec.suspended === true,
    // An unreadable time revokes everything rather than nothing.
    ...(revokedBefore ? { revokedBefore: Number.isNaN(revokedBefore.getTime()) ? new Date(8.64e15) : revokedBefore } : {}),
  };
}

type CachedIdentity = AgentIdentity & { metadata: NonNullable<AgentIdentity['metadata']> };

/** Only names, labels and specs are read: managed fields and annotations (kubectl's last-applied copy) are not cached. */
function slim<T extends { metadata?: { managedFields?: unknown; annotations?: unknown } }>(object: T): T {
  if (object.metadata) {
    delete object.metadata.managedFields;
    delete object.metadata.annotations;
  }
  return object;
}

/** AgentIdentities and the tenants of their namespaces, from watch caches. */
export class InformerAgentDirectory implements AgentDirectory {
  private readonly identities: ResilientInformer<CachedIdentity>;
  private readonly namespaces: ResilientInformer<V1Namespace>;

  constructor(kubeConfig: KubeConfig, log: Logger) {
    const custom = kubeConfig.makeApiClient(CustomApi);
    const core = kubeConfig.makeApiClient(CoreV1Api);
    const onError = (name: string, error: unknown, retryInMs: number): void => {
      log.warn({ informer: name, error: error instanceof Error ? error.message : String(error), retryInMs }, 'watch failed; restarting');
    };
    this.identities = new ResilientInformer<CachedIdentity>(
      kubeConfig,
      `/apis/${GROUP}/${VERSION}/agentidentities`,
      async () => (await custom.listClusterCustomObject({ group: GROUP, version: VERSION, plural: 'agentidentities' })) as KubernetesListObject<CachedIdentity>,
      { name: 'token-service-agentidentities', onError, transform: slim },
    );
    this.namespaces = new ResilientInformer<V1Namespace>(kubeConfig, '/api/v1/namespaces', () => core.listNamespace(), { name: 'token-service-namespaces', onError, transform: slim });
  }

  get hasSynced(): boolean {
    return this.identities.hasSynced && this.namespaces.hasSynced;
  }

  async start(): Promise<void> {
    await Promise.all([this.identities.start(), this.namespaces.start()]);
  }

  async stop(): Promise<void> {
    await Promise.all([this.identities.stop(), this.namespaces.stop()]);
  }

  boundTo(namespace: string, serviceAccount: string): AgentRecord[] {
    return this.identities
      .list(namespace)
      .filter((identity) => identity.spec.serviceAccountName === serviceAccount)
      .map((identity) => agentRecordOf(identity, this.tenantOf(namespace)));
  }

  get(namespace: string, name: string): AgentRecord | undefined {
    const identity = this.identities.get(name, namespace);
    return identity ? agentRecordOf(identity, this.tenantOf(namespace)) : undefined;
  }

  private tenantOf(namespace: string): string {
    return this.namespaces.get(namespace)?.metadata?.labels?.[TENANT_LABEL] ?? namespace;
  }
}

/**
 * Writes `status.lastTokenIssued` with a merge patch of that one field (so the operator's
 * conditions are left alone), at most once per agent per interval: a fleet refreshing tokens
 * must not turn into a stream of status writes.
 */
export class LastIssuedRecorder {
  private readonly custom: CustomObjectsApi;
  private readonly log: Logger;
  private readonly minIntervalMs: number;
  private readonly recorded = new Map<string, number>();

  constructor(kubeConfig: KubeConfig, log: Logger, minIntervalMs = 30_000) {
    this.custom = kubeConfig.makeApiClient(CustomApi);
    this.log = log;
    this.minIntervalMs = minIntervalMs;
  }

  record(agent: Pick<AgentRecord, 'namespace' | 'name'>, at: Date): void {
    const key = `${agent.namespace}/${agent.name}`;
    const last = this.recorded.get(key);
    if (last !== undefined && at.getTime() - last < this.minIntervalMs) return;
    this.recorded.set(key, at.getTime());
    this.custom
      .patchNamespacedCustomObjectStatus(
        { group: GROUP, version: VERSION, namespace: agent.namespace, plural: 'agentidentities', name: agent.name, body: { status: { lastTokenIssued: at.toISOString() } } },
        setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
      )
      .catch((error: unknown) => {
        // Let the next token try again.
        this.recorded.delete(key);
        this.log.warn({ agent: key, error: error instanceof Error ? error.message.split('\n')[0] : String(error) }, 'could not record lastTokenIssued');
      });
  }
}
