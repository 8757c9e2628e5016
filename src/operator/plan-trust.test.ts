import { describe, expect, it } from 'vitest';
import { isStrayTrust, TRUST_CONFIGMAP, trustReaderBinding, trustReaderRole } from './plan.ts';

describe('the trust in the operator namespace', () => {
  it.each([
    ['the trust of the operator namespace is kept', { name: TRUST_CONFIGMAP, namespace: 'portcullis-system' }, false],
    ['a trust ConfigMap in a tenant namespace is stray', { name: TRUST_CONFIGMAP, namespace: 'finance' }, true],
    ['a bundle ConfigMap is not a trust', { name: 'portcullis-bundle', namespace: 'finance' }, false],
  ])('%s', (_name, configMap, stray) => {
    expect(isStrayTrust(configMap, 'portcullis-system')).toBe(stray);
  });

  it('is readable by name only, and by ServiceAccounts only', () => {
    expect(trustReaderRole('portcullis-system').rules).toEqual([{ apiGroups: [''], resources: ['configmaps'], resourceNames: [TRUST_CONFIGMAP], verbs: ['get', 'list', 'watch'] }]);
    const binding = trustReaderBinding('portcullis-system');
    expect(binding.metadata?.namespace).toBe('portcullis-system');
    expect(binding.subjects).toEqual([{ apiGroup: 'rbac.authorization.k8s.io', kind: 'Group', name: 'system:serviceaccounts' }]);
  });
});
