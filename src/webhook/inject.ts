// What injection does to a pod, as a pure function: the authz sidecar and
// Envoy join it (as native sidecars where the server supports them), the
// application containers are pointed at Envoy, and the projected token the
// sidecar exchanges for its agent identity is mounted. Containers named like
// ours are replaced, never trusted: injecting an injected pod changes nothing.

import type { V1Container, V1EnvVar, V1Pod, V1SecurityContext, V1Volume } from '@kubernetes/client-node';
import { INJECTED_ANNOTATION } from '../api/index.ts';
import { envoyBootstrap, PORTS } from './envoy-bootstrap.ts';

export { INJECT_ANNOTATION, INJECTED_ANNOTATION, INJECTION_LABEL } from '../api/index.ts';
export const AUTHZ_CONTAINER = 'portcullis-authz';
export const ENVOY_CONTAINER = 'portcullis-envoy';
export const TOKEN_VOLUME = 'portcullis-token';
export const TOKEN_AUDIENCE = 'portcullis';
export const TOKEN_MOUNT = '/var/run/secrets/portcullis.dev';

export interface InjectionConfig {
  /** The Portcullis image (runs `portcullis sidecar`). */
  sidecarImage: string;
  envoyImage: string;
  /** Recorded in the injected annotation. */
  version: string;
  /** Native sidecars (init containers with restartPolicy Always) need Kubernetes 1.29 or later. */
  nativeSidecars: boolean;
  /** The token service's base URL, where the sidecar exchanges the pod's token for its agent token. */
  tokenService?: string;
  /** PEM: the CA of the token service's certificate, the only one the sidecar trusts for it. */
  tokenServiceCa?: string;
  /** The operator's namespace, whose ConfigMap portcullis-trust holds the keys the sidecar verifies bundles with (the sidecar's default when unset). */
  trustNamespace?: string;
  /** Counters in Redis (docs/counters.md): the URL, with no credentials; the password comes from the agent's Secret, mounted in the sidecar only. */
  countersRedisUrl?: string;
}

/** The volume of the agent's Redis password (Secret portcullis-redis-AGENT), mounted in the authz sidecar and no other container. */
export const REDIS_VOLUME = 'portcullis-redis';
export const REDIS_MOUNT = '/var/run/secrets/portcullis-redis';
export const REDIS_SECRET_PREFIX = 'portcullis-redis-';

/** The sidecar reads the token service's CA from this variable (its --token-service-ca default). */
export const TOKEN_SERVICE_CA_ENV = 'PORTCULLIS_TOKEN_SERVICE_CA';

/** What injection needs to know of the pod's namespace. */
export interface PodContext {
  /** The namespace's tenant: the only tenant whose bundle the sidecar accepts. */
  tenant: string;
}

export interface InjectedRecord {
  version: string;
  tenant: string;
  containers: string[];
  native: boolean;
}

const RESTRICTED: V1SecurityContext = {
  runAsNonRoot: true,
  runAsUser: 65532,
  runAsGroup: 65532,
  readOnlyRootFilesystem: true,
  allowPrivilegeEscalation: false,
  privileged: false,
  capabilities: { drop: ['ALL'] },
  seccompProfile: { type: 'RuntimeDefault' },
};

/**
 * The authz sidecar's V8 heap bounds (bench sidecar; docs/sidecar.md, Measured).
 * With V8's defaults its RSS grows to 340–500 MB under load: the old space is
 * left to grow far past the live heap (25–30 MB after a GC) before it is
 * collected. Bounded at 128 MB of old space and 8 MB semi-spaces, the RSS after
 * the same load is about 155 MB, for about 12 % of the throughput at saturation
 * (seven alternated runs on one core: 2,400 rps against 2,720): more frequent
 * collections. 2 MB semi-spaces cost a quarter to a third of it to save 15 MB
 * more; 32 MB ones gained little for 50 MB more. 48 MB of old space ran out of
 * heap while the sidecar still loaded the Kubernetes client (a live heap of
 * about 50 MB).
 */
export const SIDECAR_NODE_OPTIONS = '--max-old-space-size=128 --max-semi-space-size=8';

/**
 * Memory: about what it uses under load (RSS 140–210 MB, some 60 MB of it the
 * node binary's pages), and room over the heap bounds above for the rest of the
 * process (about 100 MB: code, WASM memory, buffers), so V8 stops the process
 * at its heap bound before the kernel would. CPU: one core, what its single
 * JavaScript thread saturates at (bench sidecar), so an agent that floods its
 * sidecar takes no more than that from the node. Ephemeral storage: it writes
 * nothing but its logs, of which the kubelet keeps up to 50 MB.
 */
export const SIDECAR_RESOURCES = {
  requests: { cpu: '50m', memory: '192Mi', 'ephemeral-storage': '32Mi' },
  limits: { cpu: '1', memory: '320Mi', 'ephemeral-storage': '128Mi' },
};

/** Envoy's, bounded as the authz sidecar's: one core, and storage for its logs only. */
export const ENVOY_RESOURCES = {
  requests: { cpu: '50m', memory: '64Mi', 'ephemeral-storage': '32Mi' },
  limits: { cpu: '1', memory: '256Mi', 'ephemeral-storage': '128Mi' },
};

/** The registry is asked at every start: a node's cache never supplies the guard's image without the pod's own pull credentials. */
const PULL_POLICY = 'Always';

const PROXY_URL = `http://127.0.0.1:${PORTS.proxy}`;
// Loopback never goes through the proxy: the sidecars themselves live there.
const NO_PROXY = 'localhost,127.0.0.1,::1';

/**
 * The proxy settings every application container gets, in both spellings:
 * curl reads http_proxy only in lower case, and the lower case wins over the
 * upper in Python's urllib; ALL_PROXY is the fallback of curl, requests and
 * httpx; GRPC_PROXY and NO_GRPC_PROXY are gRPC's own; npm_config_* come
 * before the others in proxy-from-env (axios). Every other spelling of these
 * names is dropped, as Python folds the case of the names it reads.
 */
export const PROXY_ENV: Readonly<Record<string, string>> = Object.fromEntries(
  Object.entries({
    HTTP_PROXY: PROXY_URL,
    HTTPS_PROXY: PROXY_URL,
    ALL_PROXY: PROXY_URL,
    GRPC_PROXY: PROXY_URL,
    NPM_CONFIG_PROXY: PROXY_URL,
    NPM_CONFIG_HTTP_PROXY: PROXY_URL,
    NPM_CONFIG_HTTPS_PROXY: PROXY_URL,
    NO_PROXY,
    NO_GRPC_PROXY: NO_PROXY,
    NPM_CONFIG_NO_PROXY: NO_PROXY,
  }).flatMap(([name, value]) => [[name, value], [name.toLowerCase(), value]]),
);

/** Dropped from an application container's env: where it is set, Go's net/http and Python's urllib ignore HTTP_PROXY (a CGI guard). */
export const DROPPED_ENV = ['REQUEST_METHOD'] as const;

function authzContainer(config: InjectionConfig, context: PodContext): V1Container {
  // The kubelet probes the pod's address: the status listener, which only reports.
  const probe = { httpGet: { path: '/readyz', port: PORTS.authzStatus } };
  return {
    name: AUTHZ_CONTAINER,
    image: config.sidecarImage,
    imagePullPolicy: PULL_POLICY,
    args: [
      'sidecar',
      // Deciding (and so spending the agent's limits and budgets) only on loopback: Envoy and the
      // application share the pod's network namespace, other pods do not. On the pod's address
      // only the read-only status listener. Loopback even with hostNetwork.
      `--grpc-address=127.0.0.1:${PORTS.authzGrpc}`,
      `--http-address=127.0.0.1:${PORTS.authzHttp}`,
      `--status-address=0.0.0.0:${PORTS.authzStatus}`,
      `--tenant=${context.tenant}`,
      ...(config.trustNamespace === undefined ? [] : [`--trust-namespace=${config.trustNamespace}`]),
      // The injected Envoy runs ext_proc after ext_authz (envoy-bootstrap.ts), which rewrites sanitized calls.
      '--sanitize-with-ext-proc',
      ...(config.tokenService === undefined ? [] : [`--token-service=${config.tokenService}`, `--service-account-token=${TOKEN_MOUNT}/token`]),
      ...(config.countersRedisUrl === undefined ? [] : ['--counters=redis', `--redis-url=${config.countersRedisUrl}`, `--redis-password-file=${REDIS_MOUNT}/password`]),
    ],
    env: [
      { name: 'POD_NAME', valueFrom: { fieldRef: { fieldPath: 'metadata.name' } } },
      // Agent tokens name the pod by uid too: a pod re-created under the same name is another pod.
      { name: 'POD_UID', valueFrom: { fieldRef: { fieldPath: 'metadata.uid' } } },
      { name: 'POD_NAMESPACE', valueFrom: { fieldRef: { fieldPath: 'metadata.namespace' } } },
      // The agent is the AgentIdentity named like the pod's ServiceAccount.
      { name: 'PORTCULLIS_AGENT', valueFrom: { fieldRef: { fieldPath: 'spec.serviceAccountName' } } },
      { name: 'NODE_OPTIONS', value: SIDECAR_NODE_OPTIONS },
      ...(config.tokenService === undefined || config.tokenServiceCa === undefined ? [] : [{ name: TOKEN_SERVICE_CA_ENV, value: config.tokenServiceCa }]),
    ],
    ports: [{ name: 'authz-status', containerPort: PORTS.authzStatus }],
    startupProbe: { ...probe, periodSeconds: 1, failureThreshold: 60 },
    readinessProbe: { ...probe, periodSeconds: 5 },
    resources: structuredClone(SIDECAR_RESOURCES),
    securityContext: RESTRICTED,
    volumeMounts: [
      { name: TOKEN_VOLUME, mountPath: TOKEN_MOUNT, readOnly: true },
      ...(config.countersRedisUrl === undefined ? [] : [{ name: REDIS_VOLUME, mountPath: REDIS_MOUNT, readOnly: true }]),
    ],
  };
}

function envoyContainer(config: InjectionConfig): V1Container {
  // The kubelet probes the pod's address; the proxy and the admin interface are on loopback only,
  // so Envoy answers its readiness on a listener of its own that only says so.
  const probe = { httpGet: { path: '/ready', port: PORTS.envoyReady } };
  return {
    name: ENVOY_CONTAINER,
    image: config.envoyImage,
    imagePullPolicy: PULL_POLICY,
    // The node is named after the pod by the kubelet ($(POD_NAME)), so the arguments are the same
    // for every pod of a tenant and admission can hold them to exactly what is injected.
    args: ['--config-yaml', JSON.stringify(envoyBootstrap()), '--service-node', '$(POD_NAME)', '--log-level', 'warn'],
    env: [{ name: 'POD_NAME', valueFrom: { fieldRef: { fieldPath: 'metadata.name' } } }],
    startupProbe: { ...probe, periodSeconds: 1, failureThreshold: 60 },
    readinessProbe: { ...probe, periodSeconds: 5 },
    resources: structuredClone(ENVOY_RESOURCES),
    securityContext: RESTRICTED,
  };
}

function tokenVolume(): V1Volume {
  return {
    name: TOKEN_VOLUME,
    projected: { sources: [{ serviceAccountToken: { audience: TOKEN_AUDIENCE, expirationSeconds: 3600, path: 'token' } }] },
  };
}

const overridden = new Set([...Object.keys(PROXY_ENV).map((name) => name.toLowerCase()), ...DROPPED_ENV.map((name) => name.toLowerCase())]);

/**
 * The container's env with the proxy variables set to Envoy, after its own entries. Entries in
 * env win over envFrom (ConfigMaps, Secrets), so these hold whatever envFrom brings.
 */
export function withProxyEnv(env: readonly V1EnvVar[] | undefined): V1EnvVar[] {
  const kept = (env ?? []).filter((e) => !overridden.has(e.name.toLowerCase()));
  return [...kept, ...Object.entries(PROXY_ENV).map(([name, value]) => ({ name, value }))];
}

/** The containers injection adds, in order: what admission holds an opted-in pod to. */
export function sidecarContainers(config: InjectionConfig, context: PodContext): V1Container[] {
  const sidecars = [authzContainer(config, context), envoyContainer(config)];
  return config.nativeSidecars ? sidecars.map((c) => ({ ...c, restartPolicy: 'Always' })) : sidecars;
}

const SIDECAR_NAMES: readonly string[] = [AUTHZ_CONTAINER, ENVOY_CONTAINER];
const notOurs = (c: V1Container): boolean => !SIDECAR_NAMES.includes(c.name);

/** An application container is never given the sidecar's Redis password. */
function withoutRedisMount(c: V1Container): V1Container {
  const mounts = c.volumeMounts?.filter((m) => m.name !== REDIS_VOLUME);
  return mounts === undefined ? c : { ...c, volumeMounts: mounts };
}

/** An application container: pointed at Envoy, without the sidecar's Redis password. */
const applicationContainer = (c: V1Container): V1Container => withoutRedisMount({ ...c, env: withProxyEnv(c.env) });

/** The pod with Portcullis injected; the input is not changed. */
export function inject(original: V1Pod, config: InjectionConfig, context: PodContext): V1Pod {
  const pod = structuredClone(original);
  const spec = pod.spec ?? { containers: [] };
  pod.spec = spec;
  const sidecars = sidecarContainers(config, context);

  spec.containers = spec.containers.filter(notOurs).map(applicationContainer);
  spec.initContainers = (spec.initContainers ?? []).filter(notOurs);
  if (config.nativeSidecars) {
    // First, so they are up before the application's own init containers run, which go through them too.
    spec.initContainers = [...sidecars, ...spec.initContainers.map(applicationContainer)];
  } else {
    // Without native sidecars the application's init containers run before the proxy exists.
    spec.containers = [...sidecars, ...spec.containers];
    spec.initContainers = spec.initContainers.map(withoutRedisMount);
  }
  if (spec.initContainers.length === 0) delete spec.initContainers;
  // A projected token needs a named ServiceAccount; the pod runs as `default` anyway when it names none.
  spec.serviceAccountName ??= 'default';
  spec.volumes = [
    ...(spec.volumes ?? []).filter((v) => v.name !== TOKEN_VOLUME && v.name !== REDIS_VOLUME),
    tokenVolume(),
    // The agent is the pod's ServiceAccount: its own password, which its tenant's platform team creates (docs/counters.md).
    ...(config.countersRedisUrl === undefined ? [] : [{ name: REDIS_VOLUME, secret: { secretName: `${REDIS_SECRET_PREFIX}${spec.serviceAccountName}` } }]),
  ];

  const record: InjectedRecord = { version: config.version, tenant: context.tenant, containers: sidecars.map((c) => c.name), native: config.nativeSidecars };
  pod.metadata ??= {};
  pod.metadata.annotations = { ...pod.metadata.annotations, [INJECTED_ANNOTATION]: JSON.stringify(record) };
  return pod;
}
