import type { V1Container, V1Pod } from '@kubernetes/client-node';
import jsonPatch from 'fast-json-patch';
import type { Operation } from 'fast-json-patch';
import { describe, expect, it } from 'vitest';
import { mutate, parseAdmissionReview } from './admission.ts';
import { createCertificateAuthority } from './certs.ts';
import { injectorConfiguration, requireInjectionPolicy } from './configurations.ts';
import type { envoyBootstrap } from './envoy-bootstrap.ts';
import { PORTS } from './envoy-bootstrap.ts';
import type { InjectionConfig } from './inject.ts';
import { AUTHZ_CONTAINER, ENVOY_CONTAINER, inject, INJECTED_ANNOTATION, SIDECAR_NODE_OPTIONS, SIDECAR_RESOURCES, TOKEN_SERVICE_CA_ENV, TOKEN_VOLUME } from './inject.ts';
import { isInjected } from './expected.ts';
import { needsRenewal } from './serving-certs.ts';

const config: InjectionConfig = {
  sidecarImage: 'ghcr.io/portcullis-dev/portcullis:0.1.0',
  envoyImage: 'envoyproxy/envoy:v1.36.0',
  version: '0.1.0',
  nativeSidecars: true
};

const context = { tenant: 'finance' };

type PodModifier = (pod: V1Pod) => void;

function pod(name: string, ...modifiers: PodModifier[]): V1Pod {
  const built: V1Pod = {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name, namespace: 'finance', annotations: { 'portcullis.dev/inject': 'true' } },
    spec: { serviceAccountName: 'finance-agent', containers: [{ name: 'agent', image: 'agent:1', env: [{ name: 'MODEL', value: 'gpt' }] }] },
  };
  for (const modify of modifiers) modify(built);
  return built;
}

const withEnv = (name: string, value: string): PodModifier => (p) => {
  p.spec?.containers[0]?.env?.push({ name, value });
};
const withInitContainer: PodModifier = (p) => {
  if (p.spec) p.spec.initContainers = [{ name: 'migrate', image: 'migrate:1' }];
};
const annotated = (value: string): PodModifier => (p) => {
  if (p.metadata) p.metadata.annotations = { 'portcullis.dev/inject': value };
};

const envOf = (container: V1Container | undefined): Record<string, string | undefined> =>
  Object.fromEntries((container?.env ?? []).map((e) => [e.name, e.value]));

describe('inject', () => {
  it('adds the authz sidecar and Envoy as native sidecars, first, with probes, limits and a restricted security context', () => {
    const injected = inject(pod('a', withInitContainer), config, context);
    const init = injected.spec?.initContainers ?? [];
    expect(init.map((c) => c.name)).toEqual([AUTHZ_CONTAINER, ENVOY_CONTAINER, 'migrate']);
    for (const sidecar of init.slice(0, 2)) {
      expect(sidecar.restartPolicy).toBe('Always');
      expect(sidecar.startupProbe).toBeDefined();
      expect(sidecar.readinessProbe).toBeDefined();
      expect(sidecar.resources?.limits?.memory).toBeDefined();
      expect(sidecar.securityContext).toMatchObject({
        runAsNonRoot: true,
        readOnlyRootFilesystem: true,
        allowPrivilegeEscalation: false,
        capabilities: { drop: ['ALL'] },
      });
    }
    expect(injected.spec?.containers.map((c) => c.name)).toEqual(['agent']);
  });

  it.each([
    { name: 'the authz sidecar', container: AUTHZ_CONTAINER },
    { name: 'Envoy', container: ENVOY_CONTAINER },
  ])('bounds $name in CPU, memory and ephemeral storage, and pulls its image at every start', ({ container }) => {
    const sidecar = inject(pod('a'), config, context).spec?.initContainers?.find((c) => c.name === container);
    for (const bounds of [sidecar?.resources?.requests, sidecar?.resources?.limits]) {
      expect(Object.keys(bounds ?? {}).sort()).toEqual(['cpu', 'ephemeral-storage', 'memory']);
    }
    expect(sidecar?.imagePullPolicy).toBe('Always');
  });

  it('points every application container, and the init containers that run after the proxy, at Envoy', () => {
    const injected = inject(pod('a', withInitContainer, withEnv('HTTPS_PROXY', 'http://evil:1')), config, context);
    const proxy = `http://127.0.0.1:${PORTS.proxy}`;
    const agentEnv = envOf(injected.spec?.containers[0]);
    expect(agentEnv).toMatchObject({ HTTP_PROXY: proxy, HTTPS_PROXY: proxy, http_proxy: proxy, https_proxy: proxy, NO_PROXY: 'localhost,127.0.0.1,::1', MODEL: 'gpt' });
    expect(injected.spec?.containers[0]?.env?.filter((e) => e.name === 'HTTPS_PROXY')).toHaveLength(1);
    expect(envOf(injected.spec?.initContainers?.[2]).HTTP_PROXY).toBe(proxy);
  });

  it('tells the sidecar its tenant and its agent, the AgentIdentity named like the ServiceAccount', () => {
    const authz = inject(pod('a'), config, { tenant: 'payments-team' }).spec?.initContainers?.[0];
    expect(authz?.args).toContain('--tenant=payments-team');
    // Its Envoy runs ext_proc after ext_authz, so sanitize decisions pass ext_authz to be rewritten.
    expect(authz?.args).toContain('--sanitize-with-ext-proc');
    expect(authz?.env?.find((e) => e.name === 'PORTCULLIS_AGENT')?.valueFrom?.fieldRef?.fieldPath).toBe('spec.serviceAccountName');
  });

  it("bounds the sidecar's V8 heap, with a memory limit that leaves the rest of the process room", () => {
    const authz = inject(pod('a'), config, context).spec?.initContainers?.[0];
    expect(envOf(authz).NODE_OPTIONS).toBe('--max-old-space-size=128 --max-semi-space-size=8');
    expect(authz?.resources).toEqual(SIDECAR_RESOURCES);
    const flag = (name: string): number => Number(new RegExp(`--${name}=(\\d+)`).exec(SIDECAR_NODE_OPTIONS)?.[1]);
    const mebibytes = (quantity: string): number => Number(/^(\d+)Mi$/.exec(quantity)?.[1]);
    // The young generation is three semi-spaces at most; about 100 MB more are the node binary, code and WASM memory (bench sidecar).
    const heap = flag('max-old-space-size') + 3 * flag('max-semi-space-size');
    expect(heap + 100).toBeLessThanOrEqual(mebibytes(SIDECAR_RESOURCES.limits.memory));
    expect(mebibytes(SIDECAR_RESOURCES.requests.memory)).toBeLessThan(mebibytes(SIDECAR_RESOURCES.limits.memory));
    // Each pod gets its own copy: a webhook that edits one pod's resources leaves the others alone.
    expect(authz?.resources).not.toBe(SIDECAR_RESOURCES);
  });

  it('points the sidecar at the token service over TLS, with its CA in the pod spec, and the projected token, when a token service is configured', () => {
    const tokenServiceCa = '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n';
    const withTokens = inject(pod('a'), { ...config, tokenService: 'https://portcullis-tokens.portcullis-system.svc:8443', tokenServiceCa }, { tenant: 't' }).spec?.initContainers?.[0];
    expect(withTokens?.args).toEqual(expect.arrayContaining(['--token-service=https://portcullis-tokens.portcullis-system.svc:8443', '--service-account-token=/var/run/secrets/portcullis.dev/token']));
    expect(envOf(withTokens)[TOKEN_SERVICE_CA_ENV]).toBe(tokenServiceCa);
    expect(withTokens?.args?.some((a) => a.startsWith('--allow-http-token-service'))).toBe(false);
    const without = inject(pod('a'), config, { tenant: 't' }).spec?.initContainers?.[0];
    expect(without?.args?.some((a) => a.startsWith('--token-service'))).toBe(false);
    expect(envOf(without)[TOKEN_SERVICE_CA_ENV]).toBeUndefined();
  });

  const hostNetwork: PodModifier = (p) => {
    if (p.spec) p.spec.hostNetwork = true;
  };
  const authzOf = (injected: V1Pod): V1Container | undefined =>
    [...(injected.spec?.initContainers ?? []), ...(injected.spec?.containers ?? [])].find((c) => c.name === AUTHZ_CONTAINER);
  const addressOf = (container: V1Container | undefined, flag: string): string | undefined =>
    container?.args?.find((a) => a.startsWith(`--${flag}=`))?.slice(flag.length + 3);

  it.each([
    ['a pod with native sidecars', pod('a'), config],
    ['a pod without native sidecars', pod('a'), { ...config, nativeSidecars: false }],
    ['a hostNetwork pod, whose loopback is the node\'s', pod('a', hostNetwork), config],
  ])('decides only on loopback in %s; on the pod address only the status listener, which the probes use', (_name, original, injection) => {
    const authz = authzOf(inject(original, injection, context));
    expect(addressOf(authz, 'http-address')).toBe(`127.0.0.1:${PORTS.authzHttp}`);
    expect(addressOf(authz, 'grpc-address')).toBe(`127.0.0.1:${PORTS.authzGrpc}`);
    expect(addressOf(authz, 'envoy-http-address')).toBeUndefined();
    expect(addressOf(authz, 'status-address')).toBe(`0.0.0.0:${PORTS.authzStatus}`);
    // The only port declared (and, with hostNetwork, taken on the node) is the status listener's.
    expect(authz?.ports).toEqual([{ name: 'authz-status', containerPort: PORTS.authzStatus }]);
    for (const probe of [authz?.startupProbe, authz?.readinessProbe]) expect(probe?.httpGet).toEqual({ path: '/readyz', port: PORTS.authzStatus });
  });

  it("probes Envoy on its readiness listener, the only one of Envoy's on the pod address", () => {
    const envoy = inject(pod('a'), config, context).spec?.initContainers?.find((c) => c.name === ENVOY_CONTAINER);
    for (const probe of [envoy?.startupProbe, envoy?.readinessProbe]) expect(probe?.httpGet).toEqual({ path: '/ready', port: PORTS.envoyReady });
    expect(envoy?.startupProbe?.tcpSocket).toBeUndefined();
  });

  it('mounts a projected token with the portcullis audience for the token exchange', () => {
    const injected = inject(pod('a'), config, context);
    const volume = injected.spec?.volumes?.find((v) => v.name === TOKEN_VOLUME);
    expect(volume?.projected?.sources?.[0]?.serviceAccountToken).toMatchObject({ audience: 'portcullis', path: 'token' });
    expect(injected.spec?.initContainers?.[0]?.volumeMounts?.[0]).toMatchObject({ name: TOKEN_VOLUME, readOnly: true });
  });

  it('names the default ServiceAccount when the pod names none, as a projected token requires', () => {
    const bare = pod('a');
    if (bare.spec) delete bare.spec.serviceAccountName;
    expect(inject(bare, config, context).spec?.serviceAccountName).toBe('default');
    expect(inject(pod('a'), config, context).spec?.serviceAccountName).toBe('finance-agent');
  });

  it('records what it injected and by which version', () => {
    const injected = inject(pod('a'), config, context);
    expect(JSON.parse(injected.metadata?.annotations?.[INJECTED_ANNOTATION] ?? '{}')).toEqual({
      version: '0.1.0',
      tenant: 'finance',
      containers: [AUTHZ_CONTAINER, ENVOY_CONTAINER],
      native: true,
    });
  });

  it('changes nothing when injected again, and leaves its input alone', () => {
    const original = pod('a', withInitContainer);
    const copy = structuredClone(original);
    const once = inject(original, config, context);
    expect(original).toEqual(copy);
    expect(isInjected(once, config, context)).toBe(true);
    expect(inject(once, config, context)).toEqual(once);
    // Another version re-records only itself: the containers are rebuilt, not taken from the pod.
    expect(inject(structuredClone(once), { ...config, version: '9.9.9' }, context).spec).toEqual(once.spec);
  });

  it('falls back to plain containers, leaving init containers alone, where native sidecars are not supported', () => {
    const injected = inject(pod('a', withInitContainer), { ...config, nativeSidecars: false }, context);
    expect(injected.spec?.containers.map((c) => c.name)).toEqual([AUTHZ_CONTAINER, ENVOY_CONTAINER, 'agent']);
    expect(injected.spec?.initContainers?.map((c) => c.name)).toEqual(['migrate']);
    expect(envOf(injected.spec?.initContainers?.[0]).HTTP_PROXY).toBeUndefined();
    expect(injected.spec?.containers[0]?.restartPolicy).toBeUndefined();
  });

  it('gives Envoy a bootstrap that fails closed and inspects bodies', () => {
    const injected = inject(pod('a'), config, context);
    const args = injected.spec?.initContainers?.[1]?.args ?? [];
    const bootstrap = JSON.parse(args[args.indexOf('--config-yaml') + 1] ?? '{}') as ReturnType<typeof envoyBootstrap>;
    const text = JSON.stringify(bootstrap);
    expect(text).toContain('"failure_mode_allow":false');
    expect(text).toContain('"pack_as_bytes":true');
    expect(text).toContain(`"port_value":${PORTS.proxy}`);
    expect(JSON.stringify(bootstrap.admin)).toContain('127.0.0.1');
  });
});

function review(object: unknown, overrides: Record<string, unknown> = {}): unknown {
  return {
    apiVersion: 'admission.k8s.io/v1',
    kind: 'AdmissionReview',
    request: { uid: 'u-1', kind: { group: '', version: 'v1', kind: 'Pod' }, operation: 'CREATE', namespace: 'finance', object, ...overrides },
  };
}

describe('mutate', () => {
  const excluded = ['kube-system', 'kube-node-lease', 'portcullis-system'];

  it('answers with a JSON patch that turns the pod into the injected pod', () => {
    const original = pod('a');
    const outcome = mutate(parseAdmissionReview(review(original)), config, excluded, context);
    expect(outcome.reason).toBe('injected');
    const { response } = outcome.review;
    expect(response).toMatchObject({ uid: 'u-1', allowed: true, patchType: 'JSONPatch' });
    const patch = JSON.parse(Buffer.from(response.patch ?? '', 'base64').toString('utf8')) as Operation[];
    const patched = jsonPatch.applyPatch(structuredClone(original), patch).newDocument;
    expect(patched).toEqual(inject(original, config, context));
  });

  it.each([
    { name: 'a pod in an excluded namespace passes unchanged', request: review(pod('a'), { namespace: 'kube-system' }), reason: 'namespace kube-system is never injected' },
    { name: 'a pod that opts out passes unchanged', request: review(pod('a', annotated('false'))), reason: 'the pod opts out (portcullis.dev/inject: "false")' },
    { name: 'an injected pod passes unchanged', request: review(inject(pod('a'), config, context)), reason: 'already injected' },
    { name: 'an update passes unchanged', request: review(pod('a'), { operation: 'UPDATE' }), reason: 'only pod creation is mutated, not UPDATE' },
    { name: 'another kind passes unchanged', request: review({}, { kind: { group: 'apps', version: 'v1', kind: 'Deployment' } }), reason: 'not a pod' },
  ])('$name', ({ request, reason }) => {
    const outcome = mutate(parseAdmissionReview(request), config, excluded, context);
    expect(outcome.reason).toBe(reason);
    expect(outcome.review.response.allowed).toBe(true);
    expect(outcome.review.response.patch).toBeUndefined();
  });

  it.each([
    { name: 'a body that is not an AdmissionReview', body: { kind: 'Pod' }, message: 'not an admission.k8s.io/v1 AdmissionReview' },
    { name: 'a review without a request', body: { apiVersion: 'admission.k8s.io/v1', kind: 'AdmissionReview' }, message: 'has no request' },
    { name: 'a request without a uid', body: { apiVersion: 'admission.k8s.io/v1', kind: 'AdmissionReview', request: { kind: { kind: 'Pod' }, operation: 'CREATE' } }, message: 'request.uid is missing' },
  ])('refuses $name', ({ body, message }) => {
    expect(() => parseAdmissionReview(body)).toThrow(message);
  });
});

describe('admission objects', () => {
  it('route opted-in namespaces and annotated pods to the injector, failing open, never in excluded namespaces', () => {
    const config = injectorConfiguration({ clientConfig: { url: 'https://127.0.0.1:9443/inject' }, caBundle: 'PEM', excludedNamespaces: ['kube-system'] });
    const webhooks = config.webhooks as Record<string, unknown>[];
    expect(webhooks.map((w) => w.name)).toEqual(['namespace.inject.portcullis.dev', 'pod.inject.portcullis.dev']);
    for (const webhook of webhooks) {
      expect(webhook).toMatchObject({ failurePolicy: 'Ignore', sideEffects: 'None', timeoutSeconds: 3, reinvocationPolicy: 'IfNeeded' });
      expect(JSON.stringify(webhook.namespaceSelector)).toContain('"NotIn","values":["kube-system"]');
      expect(webhook.clientConfig).toEqual({ url: 'https://127.0.0.1:9443/inject', caBundle: Buffer.from('PEM').toString('base64') });
    }
  });

  it('in cert-manager mode carry no caBundle and ask cainjector for one', () => {
    const config = injectorConfiguration({ clientConfig: { url: 'https://x/inject' }, certManagerCertificate: 'portcullis-system/webhook', excludedNamespaces: [] });
    expect(JSON.stringify(config)).not.toContain('caBundle');
    expect(config.metadata).toMatchObject({ annotations: { 'cert-manager.io/inject-ca-from': 'portcullis-system/webhook' } });
  });

  it('refuse opted-in pods without the sidecar, failing closed', () => {
    const objects = requireInjectionPolicy(['kube-system'], config);
    expect(objects.map((o) => o.kind)).toEqual(['ValidatingAdmissionPolicy', 'ValidatingAdmissionPolicyBinding', 'ValidatingAdmissionPolicy', 'ValidatingAdmissionPolicyBinding']);
    for (const object of objects) {
      if (object.kind === 'ValidatingAdmissionPolicy') expect(object).toMatchObject({ spec: { failurePolicy: 'Fail' } });
      else expect(JSON.stringify(object)).toContain('"validationActions":["Deny"]');
    }
  });
});

describe('serving certificates', () => {
  it('are renewed once less than a third of their life is left', async () => {
    const now = new Date('2026-11-23T00:00:00Z');
    const ca = await createCertificateAuthority('test-ca', { now });
    const serving = await ca.issue({ commonName: 'webhook', dnsNames: ['localhost'], usage: 'server', days: 90 });
    expect(needsRenewal(serving.cert, now)).toBe(false);
    expect(needsRenewal(serving.cert, new Date('2027-01-20T00:00:00Z'))).toBe(false);
    expect(needsRenewal(serving.cert, new Date('2027-01-23T00:00:00Z'))).toBe(true);
  });
});
