import type { V1Pod } from '@kubernetes/client-node';
import jsonPatch from 'fast-json-patch';
import type { Operation } from 'fast-json-patch';
import { describe, expect, it } from 'vitest';
import type { MutationOutcome } from './admission.ts';
import { mutate, parseAdmissionReview } from './admission.ts';
import { GUARD_UNCHANGED_POLICY, guardUnchangedPolicy, requireInjectionPolicy } from './configurations.ts';
import type { InjectionConfig } from './inject.ts';
import { AUTHZ_CONTAINER, ENVOY_CONTAINER, inject, PROXY_ENV } from './inject.ts';

const config: InjectionConfig = {
  sidecarImage: 'ghcr.io/portcullis-dev/portcullis:0.1.0',
  envoyImage: 'envoyproxy/envoy:v1.36.0',
  version: '0.1.0',
  nativeSidecars: true,
};
const context = { tenant: 'finance' };
const excluded = ['kube-system'];

function pod(spec: Partial<NonNullable<V1Pod['spec']>> = {}): V1Pod {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name: 'agent', namespace: 'finance', annotations: { 'portcullis.dev/inject': 'true' } },
    spec: { serviceAccountName: 'finance-agent', containers: [{ name: 'agent', image: 'agent:1' }], ...spec },
  };
}

function admit(object: unknown): MutationOutcome {
  return mutate(parseAdmissionReview({
    apiVersion: 'admission.k8s.io/v1',
    kind: 'AdmissionReview',
    request: { uid: 'u-1', kind: { group: '', version: 'v1', kind: 'Pod' }, operation: 'CREATE', namespace: 'finance', object },
  }), config, excluded, context);
}

const patched = (original: V1Pod, outcome: MutationOutcome): V1Pod =>
  jsonPatch.applyPatch(structuredClone(original), JSON.parse(Buffer.from(outcome.review.response.patch ?? '', 'base64').toString('utf8')) as Operation[]).newDocument;

describe('the injector', () => {
  it.each([
    { name: 'a pod that brings its own portcullis-authz, of any image', pod: pod({ containers: [{ name: 'agent', image: 'agent:1' }, { name: AUTHZ_CONTAINER, image: 'busybox:1' }] }), says: 'portcullis-authz must be in spec.initContainers once' },
    { name: 'a pod that brings an Envoy of its own beside a copy of the sidecar', pod: pod({ initContainers: [{ name: ENVOY_CONTAINER, image: 'envoyproxy/envoy:v1.36.0', restartPolicy: 'Always' }] }), says: 'portcullis-envoy: args, env, securityContext, startupProbe, readinessProbe' },
    { name: 'a pod on the node\'s network', pod: pod({ hostNetwork: true }), says: 'hostNetwork' },
    { name: 'a pod in the node\'s process namespace', pod: pod({ hostPID: true }), says: 'hostPID' },
    { name: 'a pod whose containers share a process namespace', pod: pod({ shareProcessNamespace: true }), says: 'shareProcessNamespace' },
  ])('refuses $name, saying why', ({ pod: candidate, says }) => {
    const outcome = admit(candidate);
    expect(outcome.result).toBe('refused');
    expect(outcome.review.response).toMatchObject({ uid: 'u-1', allowed: false, status: { code: 403, reason: 'Forbidden' } });
    expect(outcome.review.response.status?.message).toContain(says);
    expect(outcome.review.response.patch).toBeUndefined();
  });

  it('lets an injected pod through unchanged', () => {
    const outcome = admit(inject(pod(), config, context));
    expect(outcome).toMatchObject({ result: 'skipped', reason: 'already injected' });
  });

  it('points a container another mutator added after injection at Envoy, and leaves the sidecars as they are', () => {
    const later = inject(pod(), config, context);
    later.spec?.containers.push({ name: 'added-later', image: 'helper:1', env: [{ name: 'ALL_PROXY', value: 'socks5://evil:1080' }] });
    const outcome = admit(later);
    expect(outcome.result).toBe('injected');
    const result = patched(later, outcome);
    expect(result.spec?.initContainers).toEqual(later.spec?.initContainers);
    const env = Object.fromEntries((result.spec?.containers.find((c) => c.name === 'added-later')?.env ?? []).map((e) => [e.name, e.value]));
    expect(env).toEqual(PROXY_ENV);
  });
});

describe('the admission policies', () => {
  const policies = requireInjectionPolicy(excluded, config);
  const text = JSON.stringify(policies);

  it('hold pods to the configured images and the namespace\'s tenant, from the containers injection builds', () => {
    expect(text).toContain(JSON.stringify(JSON.stringify(config.sidecarImage)).slice(1, -1));
    expect(text).toContain('variables.tenant');
    expect(text).not.toContain('\\u0000');
    const other = JSON.stringify(requireInjectionPolicy(excluded, { ...config, sidecarImage: 'registry.example/portcullis@sha256:ab' }));
    expect(other).toContain('registry.example/portcullis@sha256:ab');
    expect(other).not.toContain(config.sidecarImage);
  });

  it('look for the sidecars where injection puts them', () => {
    expect(text).toContain("object.spec.?initContainers.orValue([]).filter(c, c.name == 'portcullis-authz')");
    const plain = JSON.stringify(requireInjectionPolicy(excluded, { ...config, nativeSidecars: false }));
    expect(plain).toContain("object.spec.containers.filter(c, c.name == 'portcullis-authz')");
  });

  it('keep the guard as admitted: updates of pods and their ephemeral containers, failing closed', () => {
    const [policy, binding] = guardUnchangedPolicy(excluded);
    expect(policy).toMatchObject({
      kind: 'ValidatingAdmissionPolicy',
      metadata: { name: GUARD_UNCHANGED_POLICY },
      spec: { failurePolicy: 'Fail', matchConstraints: { resourceRules: [{ operations: ['UPDATE'], resources: ['pods', 'pods/ephemeralcontainers'] }] } },
    });
    expect(binding).toMatchObject({ kind: 'ValidatingAdmissionPolicyBinding', spec: { policyName: GUARD_UNCHANGED_POLICY, validationActions: ['Deny'] } });
    expect(JSON.stringify(binding)).toContain('"NotIn","values":["kube-system"]');
  });
});
