// What an opted-in pod must carry, derived from the containers injection adds
// (sidecarContainers), so what is injected and what is checked cannot drift
// apart. Each fact of a container is read twice, the same way: here, for the
// webhook, and in CEL, for the ValidatingAdmissionPolicy the API server
// evaluates when the webhook is down. A fact reads the container as the API
// server holds it, defaults applied (a port's protocol, a probe's scheme), and
// reduces it to strings and numbers, so both readings compare the same values.
//
// Compared: everything that decides what runs in the container and what it can
// reach: image, command, args, working directory, env, envFrom, ports, security
// context, volume mounts and devices, lifecycle hooks, probes' handlers (an exec
// probe runs a command inside it), restart policy. Not compared: resources and
// probe timings, which bound the guard itself (it fails closed), and the pull
// policy (the image is compared by its reference, by digest where configured).

import type { V1Container, V1ContainerPort, V1EnvVar, V1Pod, V1Probe, V1VolumeMount } from '@kubernetes/client-node';
import type { InjectionConfig, PodContext } from './inject.ts';
import { AUTHZ_CONTAINER, DROPPED_ENV, ENVOY_CONTAINER, PROXY_ENV, sidecarContainers } from './inject.ts';

export const SIDECAR_NAMES: readonly string[] = [AUTHZ_CONTAINER, ENVOY_CONTAINER];

export type FactValue = string | number | readonly string[];

export interface ContainerFact {
  /** Names the field in a refusal. */
  field: string;
  read: (container: V1Container) => FactValue;
  /** The same reading in CEL, of the container bound to `c`. */
  cel: string;
}

function at(value: unknown, path: readonly string[]): unknown {
  let here = value;
  for (const key of path) {
    if (typeof here !== 'object' || here === null) return undefined;
    here = (here as Record<string, unknown>)[key];
  }
  return here;
}

type Kind = 'bool' | 'int' | 'string' | 'list' | 'set';

/** The security context's fields, each with how it reads as an entry `path=value`. */
const SECURITY_FIELDS: readonly (readonly [string, Kind])[] = [
  ['runAsNonRoot', 'bool'],
  ['runAsUser', 'int'],
  ['runAsGroup', 'int'],
  ['readOnlyRootFilesystem', 'bool'],
  ['allowPrivilegeEscalation', 'bool'],
  ['privileged', 'bool'],
  ['procMount', 'string'],
  ['capabilities.add', 'list'],
  ['capabilities.drop', 'list'],
  ['seccompProfile.type', 'string'],
  ['seccompProfile.localhostProfile', 'string'],
  ['appArmorProfile.type', 'string'],
  ['appArmorProfile.localhostProfile', 'string'],
  ['seLinuxOptions', 'set'],
  ['windowsOptions', 'set'],
];

function securityEntries(container: V1Container): string[] {
  return SECURITY_FIELDS.flatMap(([path, kind]) => {
    const value = at(container.securityContext, path.split('.'));
    if (value === undefined || value === null) return [];
    if (kind === 'list' && Array.isArray(value)) return value.map((item: unknown) => `${path}=${typeof item === 'string' ? item : JSON.stringify(item)}`);
    if (kind === 'set' || typeof value === 'object') return [`${path} set`];
    return [`${path}=${typeof value === 'string' ? value : JSON.stringify(value)}`];
  });
}

function securityCel(): string {
  const terms = SECURITY_FIELDS.map(([path, kind]) => {
    const segments = ['securityContext', ...path.split('.')];
    const present = segments.map((_, i) => `has(c.${segments.slice(0, i + 1).join('.')})`).join(' && ');
    const expr = `c.${segments.join('.')}`;
    const entry = {
      bool: `['${path}=' + (${expr} ? 'true' : 'false')]`,
      int: `['${path}=' + string(${expr})]`,
      string: `['${path}=' + ${expr}]`,
      list: `${expr}.map(x, '${path}=' + x)`,
      set: `['${path} set']`,
    }[kind];
    return `(${present} ? ${entry} : [])`;
  });
  return terms.join(' + ');
}

function envEntry(e: V1EnvVar): string {
  if (e.valueFrom === undefined) return `${e.name}=${e.value ?? ''}`;
  return `${e.name} from ${e.valueFrom.fieldRef ? `field ${e.valueFrom.fieldRef.fieldPath}` : 'another source'}`;
}
const ENV_ENTRY_CEL = "has(e.valueFrom) ? e.name + ' from ' + (has(e.valueFrom.fieldRef) ? 'field ' + e.valueFrom.fieldRef.fieldPath : 'another source') : e.name + '=' + e.?value.orValue('')";

function portEntry(p: V1ContainerPort): string {
  const host = p.hostPort || p.hostIP ? ` host ${p.hostIP ?? ''}:${p.hostPort ?? 0}` : '';
  return `${p.name ?? ''} ${p.containerPort}/${p.protocol ?? 'TCP'}${host}`;
}
const PORT_ENTRY_CEL = "p.?name.orValue('') + ' ' + string(p.containerPort) + '/' + p.?protocol.orValue('TCP') + (p.?hostPort.orValue(0) != 0 || p.?hostIP.orValue('') != '' ? ' host ' + p.?hostIP.orValue('') + ':' + string(p.?hostPort.orValue(0)) : '')";

function mountEntry(m: V1VolumeMount): string {
  const options = [
    m.readOnly ? 'ro' : 'rw',
    ...(m.subPath ? [`subPath=${m.subPath}`] : []),
    ...(m.subPathExpr ? [`subPathExpr=${m.subPathExpr}`] : []),
    ...(m.mountPropagation ? [`propagation=${m.mountPropagation}`] : []),
    ...(m.recursiveReadOnly ? [`recursiveReadOnly=${m.recursiveReadOnly}`] : []),
  ];
  return `${m.name} at ${m.mountPath} ${options.join(' ')}`;
}
const MOUNT_ENTRY_CEL = [
  "m.name + ' at ' + m.mountPath + ' ' + (m.?readOnly.orValue(false) ? 'ro' : 'rw')",
  ...['subPath', 'subPathExpr'].map((f) => `(m.?${f}.orValue('') != '' ? ' ${f}=' + m.${f} : '')`),
  "(m.?mountPropagation.orValue('') != '' ? ' propagation=' + m.mountPropagation : '')",
  "(m.?recursiveReadOnly.orValue('') != '' ? ' recursiveReadOnly=' + m.recursiveReadOnly : '')",
].join(' + ');

function probeEntry(p: V1Probe | undefined): string {
  if (p === undefined) return '';
  if (p.exec) return 'exec';
  if (p.httpGet) return `http ${p.httpGet.scheme ?? 'HTTP'} ${p.httpGet.host ?? ''}:${String(p.httpGet.port)}${p.httpGet.path ?? ''}`;
  if (p.tcpSocket) return `tcp ${p.tcpSocket.host ?? ''}:${String(p.tcpSocket.port)}`;
  if (p.grpc) return `grpc ${p.grpc.port}`;
  return 'another handler';
}
function probeCel(field: string): string {
  const p = `c.${field}`;
  const http = `'http ' + ${p}.httpGet.?scheme.orValue('HTTP') + ' ' + ${p}.httpGet.?host.orValue('') + ':' + string(${p}.httpGet.port) + ${p}.httpGet.?path.orValue('')`;
  const tcp = `'tcp ' + ${p}.tcpSocket.?host.orValue('') + ':' + string(${p}.tcpSocket.port)`;
  return `!has(${p}) ? '' : has(${p}.exec) ? 'exec' : has(${p}.httpGet) ? ${http} : has(${p}.tcpSocket) ? ${tcp} : has(${p}.grpc) ? 'grpc ' + string(${p}.grpc.port) : 'another handler'`;
}

export const CONTAINER_FACTS: readonly ContainerFact[] = [
  { field: 'image', read: (c) => c.image ?? '', cel: "c.?image.orValue('')" },
  { field: 'command', read: (c) => c.command ?? [], cel: 'c.?command.orValue([])' },
  { field: 'args', read: (c) => c.args ?? [], cel: 'c.?args.orValue([])' },
  { field: 'workingDir', read: (c) => c.workingDir ?? '', cel: "c.?workingDir.orValue('')" },
  { field: 'env', read: (c) => (c.env ?? []).map(envEntry), cel: `c.?env.orValue([]).map(e, ${ENV_ENTRY_CEL})` },
  { field: 'envFrom', read: (c) => (c.envFrom ?? []).length, cel: 'size(c.?envFrom.orValue([]))' },
  { field: 'ports', read: (c) => (c.ports ?? []).map(portEntry), cel: `c.?ports.orValue([]).map(p, ${PORT_ENTRY_CEL})` },
  { field: 'securityContext', read: securityEntries, cel: securityCel() },
  { field: 'volumeMounts', read: (c) => (c.volumeMounts ?? []).map(mountEntry), cel: `c.?volumeMounts.orValue([]).map(m, ${MOUNT_ENTRY_CEL})` },
  { field: 'volumeDevices', read: (c) => (c.volumeDevices ?? []).length, cel: 'size(c.?volumeDevices.orValue([]))' },
  { field: 'lifecycle', read: (c) => (c.lifecycle ? 'set' : ''), cel: "has(c.lifecycle) ? 'set' : ''" },
  { field: 'startupProbe', read: (c) => probeEntry(c.startupProbe), cel: probeCel('startupProbe') },
  { field: 'readinessProbe', read: (c) => probeEntry(c.readinessProbe), cel: probeCel('readinessProbe') },
  { field: 'livenessProbe', read: (c) => probeEntry(c.livenessProbe), cel: probeCel('livenessProbe') },
  { field: 'restartPolicy', read: (c) => c.restartPolicy ?? '', cel: "c.?restartPolicy.orValue('')" },
];

const same = (a: FactValue, b: FactValue): boolean => JSON.stringify(a) === JSON.stringify(b);

/** Where injection puts its containers. */
export function sidecarList(config: Pick<InjectionConfig, 'nativeSidecars'>): 'initContainers' | 'containers' {
  return config.nativeSidecars ? 'initContainers' : 'containers';
}

/** How the pod's containers named like ours differ from what the configuration injects; empty when they are exactly that. */
export function sidecarMismatches(pod: V1Pod, config: InjectionConfig, context: PodContext): string[] {
  const where = sidecarList(config);
  const lists = { initContainers: pod.spec?.initContainers ?? [], containers: pod.spec?.containers ?? [], ephemeralContainers: pod.spec?.ephemeralContainers ?? [] };
  return sidecarContainers(config, context).flatMap((expected) => {
    const named = (list: readonly { name: string }[]): number => list.filter((c) => c.name === expected.name).length;
    const elsewhere = Object.entries(lists).some(([list, containers]) => list !== where && named(containers) > 0);
    const actual = lists[where].filter((c) => c.name === expected.name);
    if (actual.length === 0 && !elsewhere) return [`no ${expected.name} sidecar in spec.${where}`];
    if (actual.length !== 1 || elsewhere) return [`${expected.name} must be in spec.${where} once, and nowhere else`];
    const [container] = actual as [V1Container];
    const differing = CONTAINER_FACTS.filter((fact) => !same(fact.read(container), fact.read(expected))).map((fact) => fact.field);
    return differing.length === 0 ? [] : [`${expected.name}: ${differing.join(', ')} not as the operator's configuration injects`];
  });
}

/** The containers injection points at Envoy: every one of the application's, and its init containers when the proxy runs before them. */
export function applicationContainers(pod: V1Pod, config: Pick<InjectionConfig, 'nativeSidecars'>): V1Container[] {
  const ours = (c: V1Container): boolean => SIDECAR_NAMES.includes(c.name);
  return [...(config.nativeSidecars ? (pod.spec?.initContainers ?? []) : []), ...(pod.spec?.containers ?? [])].filter((c) => !ours(c));
}

const PROXY_NAMES = Object.keys(PROXY_ENV);
const FOLDED_NAMES = new Set(PROXY_NAMES.map((name) => name.toLowerCase()));

/** How an application container's env could lead its HTTP clients around Envoy; empty when it cannot. */
export function proxyMismatches(container: V1Container): string[] {
  const env = container.env ?? [];
  const unset = PROXY_NAMES.filter((name) => !same(env.filter((e) => e.name === name).map(envEntry), [`${name}=${PROXY_ENV[name] ?? ''}`]));
  const respelled = env.filter((e) => FOLDED_NAMES.has(e.name.toLowerCase()) && !PROXY_NAMES.includes(e.name)).map((e) => e.name);
  const dropped = env.filter((e) => (DROPPED_ENV as readonly string[]).includes(e.name)).map((e) => e.name);
  return [
    ...(unset.length > 0 ? [`container ${container.name}: ${unset.join(', ')} not set once to Envoy`] : []),
    ...(respelled.length > 0 ? [`container ${container.name}: ${respelled.join(', ')} would be read as a proxy setting`] : []),
    ...(dropped.length > 0 ? [`container ${container.name}: ${dropped.join(', ')} makes HTTP clients ignore HTTP_PROXY`] : []),
  ];
}

/** Pod settings with which no injection can guard the pod: each refused, with why. */
export const UNGUARDABLE: readonly { field: 'hostNetwork' | 'hostPID' | 'shareProcessNamespace'; why: string }[] = [
  { field: 'hostNetwork', why: "uses the node's network (hostNetwork): its sidecars would listen on the node's addresses and its traffic could not be held to Envoy" },
  { field: 'hostPID', why: "shares the node's process namespace (hostPID): its application could see and signal the sidecar's process" },
  { field: 'shareProcessNamespace', why: "shares one process namespace between its containers (shareProcessNamespace): its application could reach into the sidecar's process and files through /proc" },
];

/** Why the pod cannot be guarded at all, whatever is injected; undefined when it can. */
export function unguardable(pod: V1Pod): string | undefined {
  const found = UNGUARDABLE.find(({ field }) => pod.spec?.[field] === true);
  return found === undefined ? undefined : `the pod ${found.why}`;
}

/** Whether the pod carries exactly what injection adds, judged by what runs, not by names or annotations. */
export function isInjected(pod: V1Pod, config: InjectionConfig, context: PodContext): boolean {
  return unguardable(pod) === undefined
    && sidecarMismatches(pod, config, context).length === 0
    && applicationContainers(pod, config).every((c) => proxyMismatches(c).length === 0);
}
