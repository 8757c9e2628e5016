// Admission checks what runs, not what it is called: attacks by a user with
// the `edit` role in an opted-in namespace, against the real API server, with
// the injector up and then down (the ValidatingAdmissionPolicies alone).

import { join } from 'node:path';
import { CoreV1Api } from '@kubernetes/client-node';
import type { V1Container, V1Pod, V1PodSpec } from '@kubernetes/client-node';
import { afterAll, beforeAll, describe, expect, inject as injectContext, it } from 'vitest';
import { stringify } from 'yaml';
import { createCertificateAuthority } from '../../src/webhook/certs.ts';
import { startWebhook } from '../../src/webhook/index.ts';
import type { RunningWebhook } from '../../src/webhook/index.ts';
import { GUARD_UNCHANGED_POLICY, INJECTOR_NAME, REQUIRE_INJECTION_POLICY } from '../../src/webhook/configurations.ts';
import { AUTHZ_CONTAINER, ENVOY_CONTAINER, PROXY_ENV } from '../../src/webhook/inject.ts';
import { eventually, kubeConfigOf } from '../harness/cluster.ts';
import { localWebhookOptions, serviceAccountKubeConfig } from '../harness/local-parts.ts';
import { aggregateClusterRoles } from '../harness/rbac.ts';
import type { KubectlResult } from '../harness/control-plane.ts';
import { freePort, kubectl, REPO_ROOT } from '../harness/control-plane.ts';

const plane = injectContext('controlPlane');
const core = kubeConfigOf(plane).makeApiClient(CoreV1Api);
const SYSTEM_NS = 'portcullis-system';
// Opted in by its label, tenant finance; the attacker holds `edit` here.
const NS = 'admission-finance';
const ATTACKER = 'mallory';
const PROXY = 'http://127.0.0.1:15001';
const SIDECAR_IMAGE = `ghcr.io/portcullis-dev/portcullis@sha256:${'0123456789abcdef'.repeat(4)}`;

let webhook: RunningWebhook;
let counter = 0;
const fresh = (prefix: string): string => `${prefix}-${++counter}`;

const asAttacker = (args: string[], input?: string): Promise<KubectlResult> =>
  kubectl(plane, [...args, `--as=${ATTACKER}`], { allowFailure: true, ...(input === undefined ? {} : { input }) });

const createAsAttacker = (pod: unknown): Promise<KubectlResult> => asAttacker(['create', '-f', '-'], JSON.stringify(pod));

function appPod(name: string, spec: Partial<V1PodSpec> = {}, annotations: Record<string, string> = {}): V1Pod {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name, namespace: NS, annotations },
    spec: { serviceAccountName: 'agent', containers: [{ name: 'agent', image: 'agent:1' }], ...spec },
  };
}

const readPod = (name: string, namespace = NS): Promise<V1Pod> => core.readNamespacedPod({ name, namespace });
const exists = (name: string): Promise<boolean> => readPod(name).then(() => true, () => false);
const allContainers = (pod: V1Pod): V1Container[] => [...(pod.spec?.initContainers ?? []), ...(pod.spec?.containers ?? []), ...(pod.spec?.ephemeralContainers ?? [])];
const containerOf = (pod: V1Pod, name: string): V1Container | undefined => allContainers(pod).find((c) => c.name === name);

/** A pod injected by the real webhook: its spec, defaults applied, is what a forger would copy. */
let injected: V1Pod;

function injectedSpec(): V1PodSpec {
  if (!injected.spec) throw new Error('the injected pod has no spec');
  return injected.spec;
}

/** The injected pod resubmitted under a new name, changed by `modify`. */
function forged(name: string, modify: (spec: V1PodSpec) => void = () => undefined): V1Pod {
  const spec = structuredClone(injectedSpec());
  modify(spec);
  return { apiVersion: 'v1', kind: 'Pod', metadata: { name, namespace: NS }, spec };
}

function sidecar(spec: V1PodSpec, name: string): V1Container {
  const found = [...(spec.initContainers ?? []), ...spec.containers].find((c) => c.name === name);
  if (!found) throw new Error(`the injected pod has no ${name}`);
  return found;
}
const authz = (spec: V1PodSpec): V1Container => sidecar(spec, AUTHZ_CONTAINER);
const envoy = (spec: V1PodSpec): V1Container => sidecar(spec, ENVOY_CONTAINER);
const app = (spec: V1PodSpec): V1Container => sidecar(spec, 'agent');
const setEnv = (container: V1Container, name: string, value: string): void => {
  container.env = [...(container.env ?? []).filter((e) => e.name !== name), { name, value }];
};

// Each names the field the refusal must name.
const forgeries: { attack: string; field: string; modify: (spec: V1PodSpec) => void }[] = [
  { attack: 'another image under the sidecar\'s name', field: 'image', modify: (s) => { authz(s).image = 'busybox:1'; } },
  { attack: 'the configured image by tag instead of its digest', field: 'image', modify: (s) => { authz(s).image = 'ghcr.io/portcullis-dev/portcullis:0.1.0'; } },
  { attack: 'a command that replaces the entrypoint', field: 'command', modify: (s) => { authz(s).command = ['/bin/sh', '-c', 'sleep infinity']; } },
  { attack: 'args naming another tenant', field: 'args', modify: (s) => { authz(s).args = authz(s).args?.map((a) => (a.startsWith('--tenant=') ? '--tenant=lenient' : a)); } },
  { attack: 'NODE_OPTIONS that load the attacker\'s code', field: 'env', modify: (s) => { setEnv(authz(s), 'NODE_OPTIONS', '--require /tmp/x.js'); } },
  { attack: 'env from a ConfigMap', field: 'envFrom', modify: (s) => { authz(s).envFrom = [{ configMapRef: { name: 'anything' } }]; } },
  { attack: 'its port taken on the node', field: 'ports', modify: (s) => { for (const port of authz(s).ports ?? []) port.hostPort = port.containerPort; } },
  { attack: 'running as root', field: 'securityContext', modify: (s) => { authz(s).securityContext = Object.assign({}, authz(s).securityContext, { runAsUser: 0, runAsNonRoot: false }); } },
  { attack: 'an added capability', field: 'securityContext', modify: (s) => { authz(s).securityContext = Object.assign({}, authz(s).securityContext, { capabilities: { drop: ['ALL'], add: ['NET_ADMIN'] } }); } },
  {
    attack: 'a volume mounted over its code',
    field: 'volumeMounts',
    modify: (s) => {
      s.volumes = [...(s.volumes ?? []), { name: 'code', emptyDir: {} }];
      authz(s).volumeMounts = [...(authz(s).volumeMounts ?? []), { name: 'code', mountPath: '/app' }];
    },
  },
  { attack: 'an exec probe that runs a command inside it', field: 'readinessProbe', modify: (s) => { authz(s).readinessProbe = { exec: { command: ['cat', '/var/run/secrets/portcullis.dev/token'] } }; } },
  { attack: 'a postStart hook', field: 'lifecycle', modify: (s) => { authz(s).lifecycle = { postStart: { exec: { command: ['true'] } } }; } },
  {
    attack: 'a plain init container that exits before the application starts',
    field: 'restartPolicy',
    // An init container that is not a sidecar may have no probes.
    modify: (s) => {
      const container = authz(s);
      delete container.restartPolicy;
      delete container.startupProbe;
      delete container.readinessProbe;
    },
  },
  {
    attack: 'an Envoy that fails open',
    field: 'args',
    modify: (s) => { envoy(s).args = envoy(s).args?.map((a) => a.replaceAll('"failure_mode_allow":false', '"failure_mode_allow":true')); },
  },
  { attack: 'no Envoy at all', field: ENVOY_CONTAINER, modify: (s) => { s.initContainers = s.initContainers?.filter((c) => c.name !== ENVOY_CONTAINER); } },
];

// What the injector fixes (it sets the application's proxy variables again) but the policy refuses.
const applicationForgeries: { attack: string; field: string; modify: (spec: V1PodSpec) => void }[] = [
  { attack: 'an application whose ALL_PROXY points elsewhere', field: 'not pointed at Envoy', modify: (s) => { setEnv(app(s), 'ALL_PROXY', 'socks5://evil.example:1080'); } },
  { attack: 'an application with a proxy variable in another spelling', field: 'another spelling', modify: (s) => { setEnv(app(s), 'Https_Proxy', 'http://evil.example:3128'); } },
  { attack: 'an application that sets REQUEST_METHOD', field: 'REQUEST_METHOD', modify: (s) => { setEnv(app(s), 'REQUEST_METHOD', 'GET'); } },
  { attack: 'an application that uses the node\'s network', field: 'hostNetwork', modify: (s) => { s.hostNetwork = true; } },
  { attack: 'an application that sees the node\'s processes', field: 'hostPID', modify: (s) => { s.hostPID = true; } },
  { attack: 'an application that shares its process namespace with the sidecar', field: 'shareProcessNamespace', modify: (s) => { s.shareProcessNamespace = true; } },
];

beforeAll(async () => {
  for (const [name, labels] of [
    [SYSTEM_NS, {}],
    [NS, { 'portcullis.dev/injection': 'enabled', 'portcullis.dev/tenant': 'finance' }],
  ] as const) {
    await kubectl(plane, ['apply', '-f', '-'], { input: stringify({ apiVersion: 'v1', kind: 'Namespace', metadata: { name, labels } }) });
  }
  // No controller-manager fills the default roles: as its aggregation controller would.
  await aggregateClusterRoles(plane, ['edit']);
  await kubectl(plane, ['create', 'rolebinding', 'mallory-edit', '--clusterrole=edit', `--user=${ATTACKER}`, '-n', NS]);
  // Neither edit nor admin may add ephemeral containers; a namespace that lets its users debug grants it.
  await kubectl(plane, ['create', 'role', 'debugger', '--verb=get,patch,update', '--resource=pods/ephemeralcontainers', '-n', NS]);
  await kubectl(plane, ['create', 'rolebinding', 'mallory-debugger', '--role=debugger', `--user=${ATTACKER}`, '-n', NS]);
  await kubectl(plane, ['apply', '-k', join(REPO_ROOT, 'config', 'rbac')]);
  const operatorClient = await serviceAccountKubeConfig(plane, SYSTEM_NS, 'portcullis-operator');
  const options = localWebhookOptions(operatorClient, SYSTEM_NS, await freePort());
  // The sidecar by digest, and a token service whose CA (a multi-line PEM) the policies must spell out too.
  const tokenServiceCa = (await createCertificateAuthority('token-service-ca')).cert;
  webhook = await startWebhook({ ...options, injection: { ...options.injection, sidecarImage: SIDECAR_IMAGE, tokenService: 'https://portcullis-tokens.portcullis-system.svc:8443', tokenServiceCa } });
  injected = await eventually('the injector to be called, and its pod admitted by the policies', async () => {
    const name = fresh('probe');
    await createAsAttacker(appPod(name));
    const pod = await readPod(name).catch(() => undefined);
    return pod && containerOf(pod, AUTHZ_CONTAINER) ? pod : undefined;
  }, 30_000, 500);
  // The API server compiles the policies a moment after they are written.
  await eventually('the policies to be in force', async () => {
    const swap = await asAttacker(['set', 'image', '-n', NS, `pod/${injected.metadata?.name ?? ''}`, `${AUTHZ_CONTAINER}=busybox:1`, '--dry-run=server']);
    return swap.stderr.includes(GUARD_UNCHANGED_POLICY) ? true : undefined;
  }, 30_000, 500);
});

afterAll(async () => {
  await webhook.stop();
  await kubectl(plane, ['delete', 'mutatingwebhookconfiguration', INJECTOR_NAME, '--ignore-not-found']);
  await kubectl(plane, ['delete', 'validatingadmissionpolicybinding,validatingadmissionpolicy', '-l', 'app.kubernetes.io/component=webhook', '--ignore-not-found']);
});

describe('with the injector up', () => {
  it('admits the injected pod the policies check field by field, the tenant read from the namespace', () => {
    expect(authz(injectedSpec()).image).toBe(SIDECAR_IMAGE);
    expect(authz(injectedSpec()).args).toContain('--tenant=finance');
    expect(authz(injectedSpec()).env?.find((e) => e.name === 'PORTCULLIS_TOKEN_SERVICE_CA')?.value).toContain('\n');
    expect(envoy(injectedSpec()).args).toContain('$(POD_NAME)');
  });

  it('refuses a pod that brings its own portcullis-authz container, whatever its image, naming the container', async () => {
    const name = fresh('fake-sidecar');
    const result = await createAsAttacker(appPod(name, { containers: [{ name: 'agent', image: 'agent:1' }, { name: AUTHZ_CONTAINER, image: 'busybox:1' }] }));
    expect(result.code).not.toBe(0);
    expect(result.stderr).toContain('brings containers named like Portcullis');
    expect(result.stderr).toContain(AUTHZ_CONTAINER);
    expect(await exists(name)).toBe(false);
  });

  it('refuses a pod that brings its own guard under the annotation the injector writes', async () => {
    const name = fresh('fake-annotated');
    const record = JSON.stringify({ version: '0.1.0', tenant: 'finance', containers: [AUTHZ_CONTAINER, ENVOY_CONTAINER], native: true });
    const pod = appPod(name, { initContainers: [{ name: AUTHZ_CONTAINER, image: 'busybox:1', restartPolicy: 'Always' }] }, { 'portcullis.dev/injected': record });
    expect((await createAsAttacker(pod)).code).not.toBe(0);
    expect(await exists(name)).toBe(false);
  });

  it.each(forgeries)('refuses a copy of the injected pod with $attack, naming $field', async ({ field, modify }) => {
    const name = fresh('forged');
    const result = await createAsAttacker(forged(name, modify));
    expect(result.code).not.toBe(0);
    expect(result.stderr).toContain(field);
    expect(await exists(name)).toBe(false);
  });

  it('admits a copy of the injected pod as it was stored, unchanged', async () => {
    const name = fresh('copy');
    expect((await createAsAttacker(forged(name))).stderr).toBe('');
    const stored = await readPod(name);
    expect(stored.spec?.initContainers).toEqual(injected.spec?.initContainers);
    expect(stored.spec?.containers).toEqual(injected.spec?.containers);
  });

  it.each([
    { setting: 'the node\'s network', field: 'hostNetwork', spec: { hostNetwork: true } },
    { setting: 'the node\'s processes', field: 'hostPID', spec: { hostPID: true } },
    { setting: 'one process namespace for its containers', field: 'shareProcessNamespace', spec: { shareProcessNamespace: true } },
  ])('refuses an opted-in pod with $setting, with the reason', async ({ field, spec }) => {
    const name = fresh('unguardable');
    const result = await createAsAttacker(appPod(name, spec));
    expect(result.code).not.toBe(0);
    expect(result.stderr).toContain(field);
    expect(await exists(name)).toBe(false);
  });

  it('sets every proxy variable to Envoy over what the application sets, in env, in other spellings or from a ConfigMap', async () => {
    const name = fresh('own-proxy');
    await kubectl(plane, ['create', 'configmap', 'proxies', '-n', NS, '--from-literal=HTTPS_PROXY=http://evil.example:3128', '--from-literal=ALL_PROXY=socks5://evil.example:1080']);
    const result = await createAsAttacker(appPod(name, {
      containers: [{
        name: 'agent',
        image: 'agent:1',
        envFrom: [{ configMapRef: { name: 'proxies' } }],
        env: [
          { name: 'ALL_PROXY', value: 'socks5://evil.example:1080' },
          { name: 'all_proxy', value: 'socks5://evil.example:1080' },
          { name: 'Https_Proxy', value: 'http://evil.example:3128' },
          { name: 'npm_config_https_proxy', value: 'http://evil.example:3128' },
          { name: 'GRPC_PROXY', valueFrom: { configMapKeyRef: { name: 'proxies', key: 'HTTPS_PROXY' } } },
          { name: 'NO_PROXY', value: '*' },
          { name: 'REQUEST_METHOD', value: 'GET' },
          { name: 'MODEL', value: 'gpt' },
        ],
      }],
    }));
    expect(result.stderr).toBe('');
    const env = (await readPod(name)).spec?.containers.find((c) => c.name === 'agent')?.env ?? [];
    // Entries in env win over envFrom: each proxy variable is set once, here, to Envoy.
    for (const [variable, value] of Object.entries(PROXY_ENV)) {
      expect(env.filter((e) => e.name === variable).map((e) => e.value ?? 'from another source'), variable).toEqual([value]);
    }
    expect(env.find((e) => e.name === 'ALL_PROXY')?.value).toBe(PROXY);
    expect(env.map((e) => e.name)).not.toContain('Https_Proxy');
    expect(env.map((e) => e.name)).not.toContain('REQUEST_METHOD');
    expect(env.find((e) => e.name === 'MODEL')?.value).toBe('gpt');
  });
});

describe('after admission', () => {
  let guarded: string;
  let unguarded: string;

  beforeAll(async () => {
    guarded = fresh('guarded');
    unguarded = fresh('unguarded');
    expect((await createAsAttacker(appPod(guarded))).stderr).toBe('');
    expect((await createAsAttacker(appPod(unguarded, {}, { 'portcullis.dev/inject': 'false' }))).stderr).toBe('');
  });

  it.each([AUTHZ_CONTAINER, ENVOY_CONTAINER])('refuses kubectl set image on %s of an injected pod', async (container) => {
    const before = containerOf(await readPod(guarded), container)?.image;
    const result = await asAttacker(['set', 'image', '-n', NS, `pod/${guarded}`, `${container}=busybox:1`]);
    expect(result.code).not.toBe(0);
    expect(result.stderr).toContain(GUARD_UNCHANGED_POLICY);
    expect(containerOf(await readPod(guarded), container)?.image).toBe(before);
  });

  it('still lets the application\'s own image be set', async () => {
    const result = await asAttacker(['set', 'image', '-n', NS, `pod/${guarded}`, 'agent=agent:2']);
    expect(result.stderr).toBe('');
    expect(containerOf(await readPod(guarded), 'agent')?.image).toBe('agent:2');
  });

  it('refuses kubectl debug on an injected pod: no ephemeral container joins the guard', async () => {
    const result = await asAttacker(['debug', '-n', NS, `pod/${guarded}`, '--image=busybox:1', '--profile=general', `--target=${AUTHZ_CONTAINER}`, '--container=peek']);
    expect(result.code).not.toBe(0);
    expect(result.stderr).toContain('ephemeral containers cannot be added');
    expect((await readPod(guarded)).spec?.ephemeralContainers ?? []).toEqual([]);
  });

  it.each([
    { how: 'as it was stored', flags: ['--keep-startup', '--keep-readiness', '--keep-annotations'] },
    { how: 'without its sidecars, injected again', flags: ['--keep-init-containers=false'] },
  ])('lets a copy of an injected pod be debugged instead, $how', async ({ flags }) => {
    const copy = fresh('debug-copy');
    const result = await asAttacker(['debug', '-n', NS, `pod/${guarded}`, '--image=busybox:1', '--profile=general', `--copy-to=${copy}`, '--share-processes=false', '--container=peek', ...flags]);
    expect(result.code, result.stderr).toBe(0);
    const debugged = await readPod(copy);
    expect(containerOf(debugged, AUTHZ_CONTAINER)?.image).toBe(SIDECAR_IMAGE);
    expect(containerOf(debugged, 'peek')?.env?.find((e) => e.name === 'HTTPS_PROXY')?.value).toBe(PROXY);
  });

  it('lets kubectl debug add an ephemeral container to a pod that opted out', async () => {
    const result = await asAttacker(['debug', '-n', NS, `pod/${unguarded}`, '--image=busybox:1', '--profile=general', '--container=peek']);
    expect(result.code, result.stderr).toBe(0);
    expect((await readPod(unguarded)).spec?.ephemeralContainers?.map((c) => c.name)).toEqual(['peek']);
  });
});

describe('with the injector down: the policies alone', () => {
  beforeAll(async () => {
    await webhook.stop();
    await eventually('the API server to call the stopped injector and fall back on the policies', async () => {
      const name = fresh('down-probe');
      const result = await createAsAttacker(appPod(name));
      return result.code !== 0 && result.stderr.includes(REQUIRE_INJECTION_POLICY) ? true : undefined;
    }, 30_000, 500);
  });

  it('admits a copy of the injected pod as it was stored: the policy reads the containers as the injector wrote them', async () => {
    const name = fresh('copy-down');
    expect((await createAsAttacker(forged(name))).stderr).toBe('');
    expect(await exists(name)).toBe(true);
  });

  it('refuses a pod that brings its own portcullis-authz container', async () => {
    const name = fresh('fake-down');
    const result = await createAsAttacker(appPod(name, { initContainers: [{ name: AUTHZ_CONTAINER, image: 'busybox:1', restartPolicy: 'Always' }] }));
    expect(result.code).not.toBe(0);
    expect(result.stderr).toContain(REQUIRE_INJECTION_POLICY);
    expect(await exists(name)).toBe(false);
  });

  it.each([...forgeries, ...applicationForgeries])('refuses a copy of the injected pod with $attack, naming $field', async ({ field, modify }) => {
    const name = fresh('forged-down');
    const result = await createAsAttacker(forged(name, modify));
    expect(result.code).not.toBe(0);
    expect(result.stderr).toContain(REQUIRE_INJECTION_POLICY);
    expect(result.stderr).toContain(field);
    expect(await exists(name)).toBe(false);
  });
});
