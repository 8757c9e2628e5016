// What the sidecars of a tenant namespace may do through the API, granted by
// the operator in every member namespace: read the bundle ConfigMap, by name
// (watched, so a new bundle reaches the sidecar at once), and record Events
// about bundles they refuse. The trust is read in the operator's namespace
// (trustReaderRole). Bound to the ServiceAccounts of the namespace's
// AgentIdentities, which are the accounts injected pods run as. Pure.
import type { V1Role, V1RoleBinding } from '@kubernetes/client-node';
import { BUNDLE_CONFIGMAP } from './plan.ts';

export const SIDECAR_ACCESS_NAME = 'portcullis-sidecar';

const labels = (tenant: string): Record<string, string> => ({
  'app.kubernetes.io/managed-by': 'portcullis-operator',
  'app.kubernetes.io/name': 'portcullis',
  'app.kubernetes.io/component': 'sidecar-access',
  'portcullis.dev/tenant': tenant,
});

export function sidecarRole(namespace: string, tenant: string): V1Role {
  return {
    apiVersion: 'rbac.authorization.k8s.io/v1',
    kind: 'Role',
    metadata: { name: SIDECAR_ACCESS_NAME, namespace, labels: labels(tenant) },
    rules: [
      // The bundle only: the sidecar lists and watches it with fieldSelector metadata.name, which
      // resourceNames authorizes. Other ConfigMaps of the namespace are the application's.
      { apiGroups: [''], resources: ['configmaps'], resourceNames: [BUNDLE_CONFIGMAP], verbs: ['get', 'list', 'watch'] },
      { apiGroups: ['', 'events.k8s.io'], resources: ['events'], verbs: ['create', 'patch'] },
    ],
  };
}

/** The binding for these ServiceAccounts (sorted and unique, so equal inputs give equal objects). */
export function sidecarRoleBinding(namespace: string, tenant: string, serviceAccounts: readonly string[]): V1RoleBinding {
  return {
    apiVersion: 'rbac.authorization.k8s.io/v1',
    kind: 'RoleBinding',
    metadata: { name: SIDECAR_ACCESS_NAME, namespace, labels: labels(tenant) },
    roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'Role', name: SIDECAR_ACCESS_NAME },
    subjects: [...new Set(serviceAccounts)].sort().map((name) => ({ kind: 'ServiceAccount', name, namespace })),
  };
}
