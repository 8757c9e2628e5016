// What kube-controller-manager's ClusterRole aggregation controller does, for a
// control plane that runs no controller-manager: the default roles `admin`,
// `edit` and `view` hold no rules of their own, only an aggregationRule, and
// get their rules from the ClusterRoles its selectors match.

import type { V1ClusterRole, V1PolicyRule } from '@kubernetes/client-node';
import { RbacAuthorizationV1Api } from '@kubernetes/client-node';
import { kubeConfigOf } from './cluster.ts';
import type { ControlPlaneInfo } from './control-plane.ts';

const labelSelector = (labels: Record<string, string>): string => Object.entries(labels).map(([k, v]) => `${k}=${v}`).join(',');

/**
 * Fills the rules of the aggregated ClusterRoles named (and, first, of those
 * they aggregate: `edit` takes `view`'s rules) from the roles their selectors
 * match, as the aggregation controller would.
 */
export async function aggregateClusterRoles(plane: Pick<ControlPlaneInfo, 'kubeconfig'>, names: readonly string[]): Promise<void> {
  const rbac = kubeConfigOf(plane).makeApiClient(RbacAuthorizationV1Api);
  const aggregate = async (role: V1ClusterRole, seen: Set<string>): Promise<void> => {
    const name = role.metadata?.name ?? '';
    if (seen.has(name) || role.aggregationRule === undefined) return;
    seen.add(name);
    const rules: V1PolicyRule[] = [];
    for (const selector of role.aggregationRule.clusterRoleSelectors ?? []) {
      const matched = await rbac.listClusterRole({ labelSelector: labelSelector(selector.matchLabels ?? {}) });
      for (const member of matched.items.sort((a, b) => (a.metadata?.name ?? '').localeCompare(b.metadata?.name ?? ''))) {
        await aggregate(member, seen);
        const current = await rbac.readClusterRole({ name: member.metadata?.name ?? '' });
        rules.push(...(current.rules ?? []));
      }
    }
    const latest = await rbac.readClusterRole({ name });
    await rbac.replaceClusterRole({ name, body: { metadata: latest.metadata, ...(latest.aggregationRule === undefined ? {} : { aggregationRule: latest.aggregationRule }), rules } });
  };
  const seen = new Set<string>();
  for (const name of names) await aggregate(await rbac.readClusterRole({ name }), seen);
}
