import type { V1Pod } from '@kubernetes/client-node';
import { describe, expect, it } from 'vitest';
import type { InjectionConfig } from './inject.ts';
import { AUTHZ_CONTAINER, inject } from './inject.ts';

const config: InjectionConfig = { sidecarImage: 'ghcr.io/portcullis-dev/portcullis:0.1.0', envoyImage: 'envoyproxy/envoy:v1.36.0', version: '0.1.0', nativeSidecars: true };

const agentPod: V1Pod = {
  apiVersion: 'v1',
  kind: 'Pod',
  metadata: { name: 'agent-0', namespace: 'finance', annotations: { 'portcullis.dev/inject': 'true' } },
  spec: { serviceAccountName: 'finance-agent', containers: [{ name: 'agent', image: 'agent:1' }] },
};

function authzArgs(injected: V1Pod): string[] {
  return [...(injected.spec?.initContainers ?? []), ...(injected.spec?.containers ?? [])].find((c) => c.name === AUTHZ_CONTAINER)?.args ?? [];
}

describe('where the injected sidecar reads the bundle keys', () => {
  it('is the operator namespace the webhook names, written into the pod spec', () => {
    const args = authzArgs(inject(agentPod, { ...config, trustNamespace: 'portcullis-system' }, { tenant: 'finance' }));
    expect(args.filter((a) => a.startsWith('--trust-namespace'))).toEqual(['--trust-namespace=portcullis-system']);
  });

  it('is left to the sidecar default when none is named, never the pod namespace', () => {
    const args = authzArgs(inject(agentPod, config, { tenant: 'finance' }));
    expect(args.some((a) => a.startsWith('--trust-namespace'))).toBe(false);
  });
});
