// What a tenant reconcile should write, computed purely from what it
// gathered: which namespaces belong to the tenant, the status of every
// resource, and whether a new bundle goes out. I/O lives in reconciler.ts.

import type { V1Role, V1RoleBinding } from '@kubernetes/client-node';
import type { AgentIdentity, Condition, EgressRule, ToolPolicy } from '../api/index.ts';
import { INJECTION_LABEL, TENANT_LABEL } from '../api/index.ts';

export { TENANT_LABEL };
import type { DesiredCondition } from './conditions.ts';
import { LISTED_PROBLEMS, setConditions, summarizeProblems } from './conditions.ts';

export const BUNDLE_CONFIGMAP = 'portcullis-bundle';
/**
 * The public keys bundles are verified with, published in the operator's own
 * namespace only: a tenant that could write it could sign its own bundles.
 */
export const TRUST_CONFIGMAP = 'portcullis-trust';
export const TRUST_JWKS_KEY = 'jwks.json';
/**
 * The work queue key of the trust: publishing it and removing the copies older
 * versions wrote into tenant namespaces. A colon is in no tenant or namespace name.
 */
export const TRUST_QUEUE_KEY = 'portcullis:trust';
export const MANAGED_BY_LABEL = 'app.kubernetes.io/managed-by';
export const MANAGED_BY = 'portcullis-operator';

export type ResourceKind = 'AgentIdentity' | 'ToolPolicy' | 'EgressRule';
export type TenantResource = AgentIdentity | ToolPolicy | EgressRule;

export interface NamespaceView {
  name: string;
  labels: Readonly<Record<string, string>>;
}

/** A namespace's tenant: its `portcullis.dev/tenant` label, else its own name. */
export function tenantOfNamespace(ns: NamespaceView): string {
  const label = ns.labels[TENANT_LABEL];
  return label !== undefined && label !== '' ? label : ns.name;
}

/**
 * Whether a namespace gets its tenant's bundle: it names a tenant, opts in to
 * injection, or holds a Portcullis resource. Other namespaces are left alone.
 */
export function takesBundle(ns: NamespaceView, holdsResources: boolean): boolean {
  return TENANT_LABEL in ns.labels || ns.labels[INJECTION_LABEL] === 'enabled' || holdsResources;
}

export const TRUST_READER = 'portcullis-trust-reader';
const TRUST_READER_LABELS = { [MANAGED_BY_LABEL]: MANAGED_BY, 'app.kubernetes.io/name': 'portcullis', 'app.kubernetes.io/component': 'trust' };

/**
 * Read of the trust ConfigMap and of the tenants' minimum-revision ConfigMaps
 * by name, and of nothing else of the operator's namespace. A list or watch
 * that selects one name (fieldSelector metadata.name=NAME), as the sidecar's
 * do, is authorized by resourceNames. Both hold nothing secret: public keys,
 * and a revision per tenant.
 */
export function trustReaderRole(namespace: string, minimumRevisionNames: readonly string[] = []): V1Role {
  return {
    apiVersion: 'rbac.authorization.k8s.io/v1',
    kind: 'Role',
    metadata: { name: TRUST_READER, namespace, labels: TRUST_READER_LABELS },
    rules: [{ apiGroups: [''], resources: ['configmaps'], resourceNames: [TRUST_CONFIGMAP, ...[...new Set(minimumRevisionNames)].sort()], verbs: ['get', 'list', 'watch'] }],
  };
}

/** Every ServiceAccount, so every sidecar whatever its agent: the trust holds public keys only. */
export function trustReaderBinding(namespace: string): V1RoleBinding {
  return {
    apiVersion: 'rbac.authorization.k8s.io/v1',
    kind: 'RoleBinding',
    metadata: { name: TRUST_READER, namespace, labels: TRUST_READER_LABELS },
    roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'Role', name: TRUST_READER },
    subjects: [{ apiGroup: 'rbac.authorization.k8s.io', kind: 'Group', name: 'system:serviceaccounts' }],
  };
}

/**
 * Whether a ConfigMap the operator labelled is a trust ConfigMap outside its own
 * namespace: written there by older versions, read by nothing now, and removed.
 */
export function isStrayTrust(configMap: { name: string; namespace: string }, operatorNamespace: string): boolean {
  return configMap.name === TRUST_CONFIGMAP && configMap.namespace !== operatorNamespace;
}

/** How the compiler names a resource in its errors: `Kind namespace/name`. */
export function resourceKey(kind: ResourceKind, namespace: string, name: string): string {
  return `${kind} ${namespace}/${name}`;
}

/** The problems of one resource, as the compiler reported them. */
export interface ResourceProblem {
  code: string;
  message: string;
}

export type CompileOutcome =
  | { ok: true; revision: string; ruleCounts: ReadonlyMap<string, number> }
  | { ok: false; problems: ReadonlyMap<string, ResourceProblem[]>; tenantProblems: ResourceProblem[] };

export interface InForce {
  /** The revision of the bundle in force, if any. */
  revision: string | undefined;
  /** resourceKey → the generation that bundle holds. */
  generations: Readonly<Record<string, number>>;
}

export interface ResourceRef {
  kind: ResourceKind;
  namespace: string;
  name: string;
  generation: number;
  status: { conditions?: Condition[] } | undefined;
}

export interface StatusUpdate {
  ref: ResourceRef;
  status: Record<string, unknown>;
}

/** A CamelCase condition reason from a compiler code such as regex_error. */
export function reasonFromCode(code: string): string {
  return code
    .split(/[^A-Za-z0-9]+/)
    .filter(Boolean)
    .map((part) => part.charAt(0).toUpperCase() + part.slice(1))
    .join('');
}

/** The first names of a list, then how many more: a thousand invalid resources still fit a status message. */
function listBounded(names: readonly string[]): string {
  const listed = names.slice(0, LISTED_PROBLEMS).join(', ');
  return names.length > LISTED_PROBLEMS ? `${listed} and ${names.length - LISTED_PROBLEMS} more` : listed;
}

function conditionsFor(ref: ResourceRef, key: string, outcome: CompileOutcome, inForce: InForce): DesiredCondition[] {
  if (outcome.ok) {
    return [
      { type: 'Compiled', status: 'True', reason: 'Compiled', message: `compiled into revision ${outcome.revision}` },
      { type: 'Distributed', status: 'True', reason: 'BundleWritten', message: `bundle revision ${outcome.revision} written to every namespace of the tenant` },
      { type: 'Ready', status: 'True', reason: 'InForce', message: `in force at bundle revision ${outcome.revision}` },
    ];
  }
  const own = outcome.problems.get(key) ?? [];
  const inForceNow = inForce.generations[key] === ref.generation;
  // An agent's standing goes out while the tenant is blocked (containment.ts): say so, or the status would say it waits.
  const standing = ref.kind === 'AgentIdentity' && inForce.revision !== undefined ? `; its suspension and revokedBefore are in force at revision ${inForce.revision}` : '';
  const kept = inForce.revision === undefined ? 'no bundle is in force yet' : `revision ${inForce.revision} stays in force${standing}`;
  if (own.length > 0) {
    const [first] = own;
    const message = summarizeProblems(own.map((p) => p.message));
    return [
      { type: 'Compiled', status: 'False', reason: reasonFromCode(first?.code ?? 'invalid'), message },
      { type: 'Distributed', status: 'False', reason: 'NotCompiled', message: `not distributed: ${kept}` },
      { type: 'Ready', status: 'False', reason: reasonFromCode(first?.code ?? 'invalid'), message: `${message} (${kept})` },
    ];
  }
  const blockers = listBounded([...outcome.problems.keys(), ...(outcome.tenantProblems.length > 0 ? ['the tenant'] : [])]);
  const distributed: DesiredCondition = inForceNow
    ? { type: 'Distributed', status: 'True', reason: 'BundleWritten', message: `this generation is in revision ${inForce.revision ?? ''}` }
    : { type: 'Distributed', status: 'False', reason: 'TenantBlocked', message: `waiting on invalid resources of the tenant (${blockers}); ${kept}` };
  return [
    { type: 'Compiled', status: 'True', reason: 'Compiled', message: 'valid' },
    distributed,
    inForceNow
      ? { type: 'Ready', status: 'True', reason: 'InForce', message: `in force at bundle revision ${inForce.revision ?? ''}; other resources of the tenant are invalid (${blockers})` }
      : { type: 'Ready', status: 'False', reason: 'TenantBlocked', message: `valid, but the tenant bundle cannot be rebuilt until ${blockers} is fixed; ${kept}` },
  ];
}

/** The status every resource of the tenant should have after this reconcile. */
export function planStatuses(refs: readonly ResourceRef[], tenant: string, outcome: CompileOutcome, inForce: InForce, now: Date): StatusUpdate[] {
  return refs.map((ref) => {
    const key = resourceKey(ref.kind, ref.namespace, ref.name);
    const conditions = setConditions(ref.status?.conditions, conditionsFor(ref, key, outcome, inForce), ref.generation, now);
    const ready = conditions.find((c) => c.type === 'Ready')?.status === 'True';
    const status: Record<string, unknown> = { ...ref.status, observedGeneration: ref.generation, conditions, tenant };
    if (ref.kind !== 'AgentIdentity') {
      const revision = outcome.ok ? outcome.revision : inForce.revision;
      if (ready && revision !== undefined) status.bundleRevision = revision;
    }
    if (ref.kind === 'ToolPolicy' && outcome.ok) status.ruleCount = outcome.ruleCounts.get(key) ?? 0;
    return { ref, status };
  });
}
