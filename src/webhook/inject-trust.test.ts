import type { V1Pod } from '@kubernetes/client-node';
import { describe, expect, it } from 'vitest';
import { AUTHZ_CONTAINER, inject } from './inject.ts';
import { agentPod as buildAgentPod, INJECTION } from './test-support.ts';

const config = INJECTION;
const agentPod = buildAgentPod();

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
