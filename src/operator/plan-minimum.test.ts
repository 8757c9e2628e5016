import { describe, expect, it } from 'vitest';
import { minimumRevisionConfigMap } from '../bundle/revision.ts';
import { TRUST_CONFIGMAP, trustReaderRole } from './plan.ts';

describe("the tenants' minimum revisions in the operator namespace", () => {
  it('are readable by name next to the trust, once each and in a stable order', () => {
    const names = [minimumRevisionConfigMap('payments'), minimumRevisionConfigMap('finance'), minimumRevisionConfigMap('payments')];
    const [rule] = trustReaderRole('portcullis-system', names).rules ?? [];
    expect(rule?.resourceNames).toEqual([TRUST_CONFIGMAP, ...[minimumRevisionConfigMap('finance'), minimumRevisionConfigMap('payments')].sort()]);
    expect(rule?.verbs).toEqual(['get', 'list', 'watch']);
  });

  it.each([
    ['a plain tenant', 'finance'],
    ['a tenant label no ConfigMap name could hold', 'Finance_EU.2'],
    ['the longest tenant label', 'a'.repeat(63)],
  ])('are named validly for %s', (_name, tenant) => {
    expect(minimumRevisionConfigMap(tenant)).toMatch(/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/u);
    expect(minimumRevisionConfigMap(tenant).length).toBeLessThanOrEqual(253);
    expect(minimumRevisionConfigMap(tenant)).not.toBe(minimumRevisionConfigMap(`${tenant}x`));
  });
});
