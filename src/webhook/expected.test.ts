import type { V1Container, V1EnvVar, V1Pod } from '@kubernetes/client-node';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { applicationContainers, isInjected, proxyMismatches, sidecarMismatches } from './expected.ts';
import type { InjectionConfig } from './inject.ts';
import { AUTHZ_CONTAINER, ENVOY_CONTAINER, inject, INJECTED_ANNOTATION, PROXY_ENV, withProxyEnv } from './inject.ts';
import type { PodModifier } from './test-support.ts';
import { agentPod, FINANCE, INJECTION } from './test-support.ts';

// By digest: what is compared is the image as configured, to the letter.
const config: InjectionConfig = { ...INJECTION, sidecarImage: 'ghcr.io/portcullis-dev/portcullis@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef' };
const context = FINANCE;
const pod = agentPod;

const injected = (...modifiers: PodModifier[]): V1Pod => {
  const built = inject(pod(), config, context);
  for (const modify of modifiers) modify(built);
  return built;
};

function sidecar(p: V1Pod, name: string): V1Container {
  const found = [...(p.spec?.initContainers ?? []), ...(p.spec?.containers ?? [])].find((c) => c.name === name);
  if (!found) throw new Error(`no ${name}`);
  return found;
}
const onAuthz = (change: (c: V1Container) => void): PodModifier => (p) => { change(sidecar(p, AUTHZ_CONTAINER)); };
const onEnvoy = (change: (c: V1Container) => void): PodModifier => (p) => { change(sidecar(p, ENVOY_CONTAINER)); };
const onApp = (change: (c: V1Container) => void): PodModifier => (p) => { change(sidecar(p, 'agent')); };

describe('what an opted-in pod must carry', () => {
  it('is what injection makes, natively or not', () => {
    expect(isInjected(injected(), config, context)).toBe(true);
    const plain = { ...config, nativeSidecars: false };
    expect(isInjected(inject(pod(), plain, context), plain, context)).toBe(true);
  });

  it('is read as the API server stores it, its defaults applied', () => {
    const defaulted = injected(
      onAuthz((c) => {
        for (const port of c.ports ?? []) port.protocol = 'TCP';
        for (const e of c.env ?? []) if (e.valueFrom?.fieldRef) e.valueFrom.fieldRef.apiVersion = 'v1';
        for (const probe of [c.startupProbe, c.readinessProbe]) {
          if (probe?.httpGet) Object.assign(probe, { timeoutSeconds: 1, successThreshold: 1, httpGet: Object.assign(probe.httpGet, { scheme: 'HTTP' }) });
        }
        c.imagePullPolicy = 'IfNotPresent';
        c.terminationMessagePath = '/dev/termination-log';
      }),
    );
    expect(sidecarMismatches(defaulted, config, context)).toEqual([]);
  });

  it.each([
    { name: 'a container named portcullis-authz, of any image, and nothing else', pod: pod((p) => { p.spec?.containers.push({ name: AUTHZ_CONTAINER, image: 'busybox:1' }); }), says: 'portcullis-authz must be in spec.initContainers once' },
    { name: 'the annotation injection writes, and no sidecar', pod: pod((p) => { p.metadata = { name: 'agent', annotations: { [INJECTED_ANNOTATION]: '{}' } }; }), says: 'no portcullis-authz sidecar' },
    { name: 'the sidecar under its configured tag instead of its digest', pod: injected(onAuthz((c) => { c.image = 'ghcr.io/portcullis-dev/portcullis:0.1.0'; })), says: 'portcullis-authz: image' },
    { name: 'a command of its own', pod: injected(onAuthz((c) => { c.command = ['sh']; })), says: 'portcullis-authz: command' },
    { name: 'another tenant', pod: injected(onAuthz((c) => { c.args = c.args?.map((a) => a.replace('--tenant=finance', '--tenant=lenient')); })), says: 'portcullis-authz: args' },
    { name: 'code loaded through NODE_OPTIONS', pod: injected(onAuthz((c) => { c.env = [...(c.env ?? []), { name: 'NODE_OPTIONS', value: '--require /x.js' }]; })), says: 'portcullis-authz: env' },
    { name: 'a variable taken from a Secret instead of the pod', pod: injected(onAuthz((c) => { c.env = c.env?.map((e) => (e.name === 'PORTCULLIS_AGENT' ? { name: e.name, valueFrom: { secretKeyRef: { name: 's', key: 'k' } } } : e)); })), says: 'portcullis-authz: env' },
    { name: 'env from a ConfigMap', pod: injected(onAuthz((c) => { c.envFrom = [{ configMapRef: { name: 'x' } }]; })), says: 'portcullis-authz: envFrom' },
    { name: 'a port on the node', pod: injected(onAuthz((c) => { for (const port of c.ports ?? []) port.hostPort = port.containerPort; })), says: 'portcullis-authz: ports' },
    { name: 'root', pod: injected(onAuthz((c) => { c.securityContext = Object.assign({}, c.securityContext, { runAsUser: 0 }); })), says: 'portcullis-authz: securityContext' },
    { name: 'a capability added', pod: injected(onAuthz((c) => { c.securityContext = Object.assign({}, c.securityContext, { capabilities: { drop: ['ALL'], add: ['NET_ADMIN'] } }); })), says: 'portcullis-authz: securityContext' },
    { name: 'a volume over its code', pod: injected(onAuthz((c) => { c.volumeMounts = [...(c.volumeMounts ?? []), { name: 'code', mountPath: '/app' }]; })), says: 'portcullis-authz: volumeMounts' },
    { name: 'its token mounted writable', pod: injected(onAuthz((c) => { for (const mount of c.volumeMounts ?? []) mount.readOnly = false; })), says: 'portcullis-authz: volumeMounts' },
    { name: 'a postStart hook', pod: injected(onAuthz((c) => { c.lifecycle = { postStart: { exec: { command: ['true'] } } }; })), says: 'portcullis-authz: lifecycle' },
    { name: 'an exec probe', pod: injected(onAuthz((c) => { c.livenessProbe = { exec: { command: ['cat', '/etc/passwd'] } }; })), says: 'portcullis-authz: livenessProbe' },
    { name: 'no restart policy: an init container that exits', pod: injected(onAuthz((c) => { delete c.restartPolicy; })), says: 'portcullis-authz: restartPolicy' },
    { name: 'an Envoy that fails open', pod: injected(onEnvoy((c) => { c.args = c.args?.map((a) => a.replace('"failure_mode_allow":false', '"failure_mode_allow":true')); })), says: 'portcullis-envoy: args' },
    { name: 'Envoy twice', pod: injected((p) => { p.spec?.containers.push(sidecar(p, ENVOY_CONTAINER)); }), says: 'portcullis-envoy must be in spec.initContainers once' },
    { name: 'Envoy as an ephemeral container', pod: injected((p) => { if (p.spec) p.spec.ephemeralContainers = [{ name: ENVOY_CONTAINER, image: 'busybox:1' }]; }), says: 'portcullis-envoy must be in spec.initContainers once' },
  ])('is not $name', ({ pod: candidate, says }) => {
    expect(sidecarMismatches(candidate, config, context).join('; ')).toContain(says);
    expect(isInjected(candidate, config, context)).toBe(false);
  });

  it('names every fact that differs', () => {
    const changed = injected(onAuthz((c) => { c.image = 'busybox:1'; c.command = ['sh']; }));
    expect(sidecarMismatches(changed, config, context)).toEqual(["portcullis-authz: image, command not as the operator's configuration injects"]);
  });

  it('is not a pod injected for another tenant', () => {
    expect(isInjected(inject(pod(), config, { tenant: 'lenient' }), config, context)).toBe(false);
  });

  it.each([
    { name: 'its own ALL_PROXY', modify: onApp((c) => { c.env = [...(c.env ?? []), { name: 'ALL_PROXY', value: 'socks5://evil:1080' }]; }), says: 'ALL_PROXY not set once to Envoy' },
    { name: 'HTTPS_PROXY from a ConfigMap', modify: onApp((c) => { c.env = c.env?.map((e) => (e.name === 'HTTPS_PROXY' ? { name: e.name, valueFrom: { configMapKeyRef: { name: 'p', key: 'k' } } } : e)); }), says: 'HTTPS_PROXY not set once to Envoy' },
    { name: 'a proxy variable in another spelling', modify: onApp((c) => { c.env = [...(c.env ?? []), { name: 'Https_Proxy', value: 'http://evil:3128' }]; }), says: 'Https_Proxy would be read as a proxy setting' },
    { name: 'REQUEST_METHOD', modify: onApp((c) => { c.env = [...(c.env ?? []), { name: 'REQUEST_METHOD', value: 'GET' }]; }), says: 'REQUEST_METHOD makes HTTP clients ignore HTTP_PROXY' },
  ])('is not an application container with $name', ({ modify, says }) => {
    const candidate = injected(modify);
    expect(applicationContainers(candidate, config).flatMap(proxyMismatches).join('; ')).toContain(says);
    expect(isInjected(candidate, config, context)).toBe(false);
  });

  it.each(['hostNetwork', 'hostPID', 'shareProcessNamespace'] as const)('is not a pod with %s, whatever it carries', (field) => {
    expect(isInjected(injected((p) => { if (p.spec) p.spec[field] = true; }), config, context)).toBe(false);
  });
});

describe('the proxy settings of an application container', () => {
  it('override the application\'s own, in every spelling and from every source, keeping the rest in order', () => {
    const env: V1EnvVar[] = [
      { name: 'MODEL', value: 'gpt' },
      { name: 'ALL_PROXY', value: 'socks5://evil:1080' },
      { name: 'all_proxy', value: 'socks5://evil:1080' },
      { name: 'Https_Proxy', value: 'http://evil:3128' },
      { name: 'npm_config_https_proxy', value: 'http://evil:3128' },
      { name: 'GRPC_PROXY', valueFrom: { configMapKeyRef: { name: 'p', key: 'k' } } },
      { name: 'NO_PROXY', value: '*' },
      { name: 'REQUEST_METHOD', value: 'GET' },
      { name: 'REGION', value: 'eu' },
    ];
    const result = withProxyEnv(env);
    expect(result.slice(0, 2)).toEqual([{ name: 'MODEL', value: 'gpt' }, { name: 'REGION', value: 'eu' }]);
    expect(Object.fromEntries(result.slice(2).map((e) => [e.name, e.value]))).toEqual(PROXY_ENV);
    expect(proxyMismatches({ name: 'agent', env: result })).toEqual([]);
    expect(withProxyEnv(result)).toEqual(result);
  });

  it('cover ALL_PROXY, gRPC\'s and npm\'s variables, each in both cases, and exempt only loopback', () => {
    for (const name of ['HTTP_PROXY', 'HTTPS_PROXY', 'ALL_PROXY', 'GRPC_PROXY', 'NPM_CONFIG_PROXY', 'NPM_CONFIG_HTTPS_PROXY']) {
      expect(PROXY_ENV[name]).toBe('http://127.0.0.1:15001');
      expect(PROXY_ENV[name.toLowerCase()]).toBe('http://127.0.0.1:15001');
    }
    for (const name of ['NO_PROXY', 'no_proxy', 'NO_GRPC_PROXY', 'npm_config_no_proxy']) expect(PROXY_ENV[name]).toBe('localhost,127.0.0.1,::1');
  });

  it('leave no way around Envoy, whatever proxy variables the application sets', () => {
    const proxyName = fc.constantFrom(...Object.keys(PROXY_ENV), 'REQUEST_METHOD').chain((name) =>
      fc.array(fc.boolean(), { minLength: name.length, maxLength: name.length }).map((upper) => Array.from(name, (ch, i) => (upper[i] ? ch.toUpperCase() : ch.toLowerCase())).join('')));
    const entry = fc.record({ name: fc.oneof(proxyName, fc.constantFrom('MODEL', 'PATH')), value: fc.string(), fromSecret: fc.boolean() })
      .map(({ name, value, fromSecret }): V1EnvVar => (fromSecret ? { name, valueFrom: { secretKeyRef: { name: 's', key: 'k' } } } : { name, value }));
    fc.assert(fc.property(fc.array(entry, { maxLength: 12 }), (env) => {
      expect(proxyMismatches({ name: 'agent', env: withProxyEnv(env) })).toEqual([]);
    }));
  });
});
