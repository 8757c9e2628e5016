import { describe, expect, it } from 'vitest';
import { sidecarRole, sidecarRoleBinding } from './sidecar-access.ts';

describe('sidecar access', () => {
  it('binds the Role to each ServiceAccount once, in a stable order', () => {
    const binding = sidecarRoleBinding('finance', 'acme', ['worker', 'finance-agent', 'worker']);
    expect(binding.subjects).toEqual([
      { kind: 'ServiceAccount', name: 'finance-agent', namespace: 'finance' },
      { kind: 'ServiceAccount', name: 'worker', namespace: 'finance' },
    ]);
    expect(binding.roleRef).toEqual({ apiGroup: 'rbac.authorization.k8s.io', kind: 'Role', name: 'portcullis-sidecar' });
    expect(binding.metadata?.labels?.['portcullis.dev/tenant']).toBe('acme');
  });

  it('grants reading the bundle ConfigMap by name and recording events, and nothing that writes a bundle', () => {
    const verbs = sidecarRole('finance', 'acme').rules?.flatMap((r) => (r.resources ?? []).map((res) => `${res}${r.resourceNames === undefined ? '' : `/${r.resourceNames.join('|')}`}:${r.verbs.join(',')}`));
    expect(verbs).toEqual(['configmaps/portcullis-bundle:get,list,watch', 'events:create,patch']);
  });
});
