// The admission objects that route pods to the injector and make sure no
// opted-in pod runs without it. Pure: the operator applies what these return.
//
// Failure policy: the mutating webhook fails open (Ignore, 3 s), so a webhook
// outage never blocks a pod, system pods included. What keeps an opted-in pod
// from running unguarded is a ValidatingAdmissionPolicy, evaluated inside the
// API server (no webhook to be down): it refuses an opted-in pod that does not
// carry exactly the sidecar and Envoy the operator's configuration injects, or
// whose application is not pointed at Envoy, or that shares the node's network
// or a process namespace with the sidecar.
// The expected values are rendered into the policy's CEL from the same
// function that builds the containers (expected.ts); the tenant, the one value
// that differs between pods, is read from the pod's namespace by the policy
// itself. A second policy keeps the guard as it was admitted: on UPDATE the
// images of our containers cannot change and no ephemeral container joins.
// System namespaces and the operator's own are excluded from all of them.

import type { FactValue } from './expected.ts';
import { CONTAINER_FACTS, SIDECAR_NAMES, sidecarList, UNGUARDABLE } from './expected.ts';
import type { InjectionConfig } from './inject.ts';
import { DROPPED_ENV, INJECT_ANNOTATION, INJECTION_LABEL, PROXY_ENV, sidecarContainers } from './inject.ts';
import { TENANT_LABEL } from '../api/index.ts';

export const INJECTOR_NAME = 'portcullis-injector';
export const REQUIRE_INJECTION_POLICY = 'portcullis-require-injection';
export const GUARD_UNCHANGED_POLICY = 'portcullis-guard-unchanged';

export type ClientConfig =
  | { service: { name: string; namespace: string; path: string; port: number } }
  | { url: string };

export interface InjectorOptions {
  clientConfig: ClientConfig;
  /** PEM CA bundle; omitted in cert-manager mode, where cainjector fills it. */
  caBundle?: string;
  /** cert-manager mode: NAMESPACE/CERTIFICATE for cert-manager.io/inject-ca-from. */
  certManagerCertificate?: string;
  excludedNamespaces: readonly string[];
}

// Optional field access: a pod without annotations, or a namespace without labels, reads as ''.
const annotationIs = (value: string): string => `object.metadata.?annotations[?'${INJECT_ANNOTATION}'].orValue('') == '${value}'`;

const podRules = [{ operations: ['CREATE'], apiGroups: [''], apiVersions: ['v1'], resources: ['pods'], scope: 'Namespaced' }];

function notExcluded(excluded: readonly string[]): Record<string, unknown> {
  return { key: 'kubernetes.io/metadata.name', operator: 'NotIn', values: [...excluded] };
}

export function injectorConfiguration(options: InjectorOptions): Record<string, unknown> {
  const clientConfig = { ...options.clientConfig, ...(options.caBundle ? { caBundle: Buffer.from(options.caBundle).toString('base64') } : {}) };
  const common = {
    clientConfig,
    rules: podRules,
    sideEffects: 'None',
    admissionReviewVersions: ['v1'],
    failurePolicy: 'Ignore',
    timeoutSeconds: 3,
    // Run again after later mutators add containers; injecting twice changes nothing.
    reinvocationPolicy: 'IfNeeded',
  };
  return {
    apiVersion: 'admissionregistration.k8s.io/v1',
    kind: 'MutatingWebhookConfiguration',
    metadata: {
      name: INJECTOR_NAME,
      labels: { 'app.kubernetes.io/name': 'portcullis', 'app.kubernetes.io/component': 'webhook' },
      ...(options.certManagerCertificate ? { annotations: { 'cert-manager.io/inject-ca-from': options.certManagerCertificate } } : {}),
    },
    webhooks: [
      {
        // Namespaces labelled portcullis.dev/injection=enabled: every pod, unless it opts out.
        name: 'namespace.inject.portcullis.dev',
        ...common,
        namespaceSelector: { matchExpressions: [{ key: INJECTION_LABEL, operator: 'In', values: ['enabled'] }, notExcluded(options.excludedNamespaces)] },
        matchConditions: [{ name: 'not-opted-out', expression: `!(${annotationIs('false')})` }],
      },
      {
        // Other namespaces: pods annotated portcullis.dev/inject=true.
        name: 'pod.inject.portcullis.dev',
        ...common,
        namespaceSelector: { matchExpressions: [{ key: INJECTION_LABEL, operator: 'NotIn', values: ['enabled'] }, notExcluded(options.excludedNamespaces)] },
        matchConditions: [{ name: 'opted-in', expression: annotationIs('true') }],
      },
    ],
  };
}

// Stands for the pod's tenant in the expected containers; rendered as variables.tenant.
const TENANT_PLACEHOLDER = '\u0000tenant\u0000';

/** A CEL string literal (JSON's escapes are CEL's), the tenant placeholder spliced in as the policy's variable. */
function celString(value: string): string {
  return value.split(TENANT_PLACEHOLDER).map((part) => JSON.stringify(part)).join(' + variables.tenant + ');
}

function celLiteral(value: FactValue): string {
  if (typeof value === 'number') return String(value);
  if (typeof value === 'string') return celString(value);
  return `[${value.map(celString).join(', ')}]`;
}

const celNames = `[${SIDECAR_NAMES.map((n) => `'${n}'`).join(', ')}]`;
const listOf = (object: string, list: 'initContainers' | 'containers'): string =>
  list === 'containers' ? `${object}.spec.containers` : `${object}.spec.?initContainers.orValue([])`;

interface Validation {
  expression: string;
  reason: 'Forbidden';
  message: string;
  messageExpression?: string;
}

const forbid = (expression: string, message: string, messageExpression?: string): Validation =>
  ({ expression, reason: 'Forbidden', message, ...(messageExpression === undefined ? {} : { messageExpression }) });

/**
 * The policy's variables, for each of our containers (0, 1…): sidecarN, the containers named like it
 * where injection puts it; differingN, for each of them the facts that are not as injected.
 */
function sidecarVariables(injection: InjectionConfig): { name: string; expression: string }[] {
  return sidecarContainers(injection, { tenant: TENANT_PLACEHOLDER }).flatMap((expected, i) => {
    const differing = CONTAINER_FACTS.map((fact) => `(${fact.cel}) == ${celLiteral(fact.read(expected))} ? '' : '${fact.field}'`);
    return [
      { name: `sidecar${i}`, expression: `${listOf('object', sidecarList(injection))}.filter(c, c.name == '${expected.name}')` },
      { name: `differing${i}`, expression: `variables.sidecar${i}.map(c, [${differing.join(', ')}].filter(f, f != ''))` },
    ];
  });
}

/** Each of our containers exactly once where injection puts it, each fact as injected; the refusal names every fact that differs. */
function sidecarValidations(injection: InjectionConfig): Validation[] {
  const where = sidecarList(injection);
  const other = where === 'containers' ? 'initContainers' : 'containers';
  return sidecarContainers(injection, { tenant: TENANT_PLACEHOLDER }).flatMap((expected, i) => {
    const refusal = `this pod is opted in to Portcullis but its ${expected.name} container is not what the operator's configuration injects`;
    return [
      forbid(
        `size(variables.sidecar${i}) == 1 && !${listOf('object', other)}.exists(c, c.name == '${expected.name}')`,
        `this pod is opted in to Portcullis but has no ${expected.name} sidecar once in spec.${where}, where the injector puts it: the injector did not run (is the operator up?), or the pod brought its own; pods opted in never run unguarded`,
      ),
      forbid(
        `variables.differing${i}.all(d, size(d) == 0)`,
        `${refusal}: opted-in pods carry exactly the injected sidecar and Envoy`,
        `${celString(`${refusal} (`)} + variables.differing${i}.map(d, d.join(', ')).join('; ') + ${celString(' differ): opted-in pods carry exactly the injected sidecar and Envoy')}`,
      ),
    ];
  });
}

/** Every application container pointed at Envoy, in one spelling, nothing that makes clients ignore it. */
function applicationValidations(injection: InjectionConfig): Validation[] {
  // As applicationContainers (expected.ts) chooses them.
  const lists = [...(injection.nativeSidecars ? [listOf('object', 'initContainers')] : []), listOf('object', 'containers')];
  const applications = lists.map((list) => `${list}.filter(c, !(c.name in ${celNames}))`).join(' + ');
  const names = Object.keys(PROXY_ENV);
  const setOnce = names.map((name) => `c.?env.orValue([]).filter(e, e.name == '${name}').map(e, has(e.valueFrom) ? 'another source' : e.?value.orValue('')) == [${celString(PROXY_ENV[name] ?? '')}]`);
  const folded = `[${names.map((n) => `'${n.toLowerCase()}'`).join(', ')}]`;
  return [
    forbid(
      `(${applications}).all(c, ${setOnce.join(' && ')})`,
      `this pod is opted in to Portcullis but an application container is not pointed at Envoy: each must set ${names.join(', ')} once, to the injected values`,
    ),
    forbid(
      `(${applications}).all(c, c.?env.orValue([]).all(e, !(e.name.lowerAscii() in ${folded}) || e.name in [${names.map((n) => `'${n}'`).join(', ')}]))`,
      'this pod is opted in to Portcullis but an application container sets a proxy variable in another spelling, which some HTTP clients would read instead of the injected one',
    ),
    forbid(
      `(${applications}).all(c, c.?env.orValue([]).all(e, !(e.name in [${DROPPED_ENV.map((n) => `'${n}'`).join(', ')}])))`,
      `this pod is opted in to Portcullis but an application container sets ${DROPPED_ENV.join(', ')}, with which Go's and Python's HTTP clients ignore HTTP_PROXY`,
    ),
  ];
}

const policyLabels = { 'app.kubernetes.io/name': 'portcullis', 'app.kubernetes.io/component': 'webhook' };

function binding(name: string, namespaces: Record<string, unknown>[], excludedNamespaces: readonly string[]): Record<string, unknown> {
  return {
    apiVersion: 'admissionregistration.k8s.io/v1',
    kind: 'ValidatingAdmissionPolicyBinding',
    metadata: { name, labels: policyLabels },
    spec: {
      policyName: name,
      validationActions: ['Deny'],
      matchResources: { namespaceSelector: { matchExpressions: [...namespaces, notExcluded(excludedNamespaces)] } },
    },
  };
}

/**
 * Two policies, as the injector has two webhooks: pods in namespaces labelled
 * for injection (unless they opt out), and pods annotated for it elsewhere. The
 * namespace is matched by the bindings' selectors, not by CEL: namespaceObject
 * is not always filled in for a policy's conditions. The validations read it
 * (the tenant): there it is.
 */
export function requireInjectionPolicy(excludedNamespaces: readonly string[], injection: InjectionConfig): Record<string, unknown>[] {
  const tenant = `namespaceObject.metadata.?labels[?'${TENANT_LABEL}'].orValue('') != '' ? namespaceObject.metadata.labels['${TENANT_LABEL}'] : namespaceObject.metadata.name`;
  const validations = [
    ...UNGUARDABLE.map(({ field, why }) => forbid(`!object.spec.?${field}.orValue(false)`, `this pod is opted in to Portcullis but ${why}`)),
    ...sidecarValidations(injection),
    ...applicationValidations(injection),
  ];
  const variants = [
    { name: REQUIRE_INJECTION_POLICY, condition: `!(${annotationIs('false')})`, namespaces: [{ key: INJECTION_LABEL, operator: 'In', values: ['enabled'] }] },
    { name: `${REQUIRE_INJECTION_POLICY}-annotated`, condition: annotationIs('true'), namespaces: [] },
  ];
  return variants.flatMap(({ name, condition, namespaces }) => [
    {
      apiVersion: 'admissionregistration.k8s.io/v1',
      kind: 'ValidatingAdmissionPolicy',
      metadata: { name, labels: policyLabels },
      spec: {
        failurePolicy: 'Fail',
        matchConstraints: { resourceRules: podRules.map(({ scope: _scope, ...rule }) => rule) },
        matchConditions: [{ name: 'opted-in', expression: condition }],
        variables: [{ name: 'tenant', expression: tenant }, ...sidecarVariables(injection)],
        validations,
      },
    },
    binding(name, namespaces, excludedNamespaces),
  ]);
}

/**
 * The guard stays as admitted: on a pod that carries our containers (opted in
 * or not: its annotations could change with the same update), their images
 * cannot change (the only field of a container an update may change), and no
 * ephemeral container joins it (kubectl debug), which would run beside the
 * guard with none of its settings and could enter its process namespace.
 */
export function guardUnchangedPolicy(excludedNamespaces: readonly string[]): Record<string, unknown>[] {
  const images = (object: string): string => (['initContainers', 'containers'] as const)
    .map((list) => `${listOf(object, list)}.filter(c, c.name in ${celNames}).map(c, c.name + '=' + c.image)`)
    .join(' + ');
  const ephemeral = (object: string): string => `size(${object}.spec.?ephemeralContainers.orValue([]))`;
  return [
    {
      apiVersion: 'admissionregistration.k8s.io/v1',
      kind: 'ValidatingAdmissionPolicy',
      metadata: { name: GUARD_UNCHANGED_POLICY, labels: policyLabels },
      spec: {
        failurePolicy: 'Fail',
        matchConstraints: { resourceRules: [{ operations: ['UPDATE'], apiGroups: [''], apiVersions: ['v1'], resources: ['pods', 'pods/ephemeralcontainers'] }] },
        matchConditions: [{ name: 'guarded', expression: `size(${images('oldObject')}) > 0` }],
        validations: [
          forbid(`${images('object')} == ${images('oldObject')}`, `the ${SIDECAR_NAMES.join(' and ')} containers of a pod are fixed when it is admitted: their images cannot be changed; roll out a new pod instead`),
          forbid(
            `${ephemeral('object')} == ${ephemeral('oldObject')}`,
            'ephemeral containers cannot be added to a pod guarded by Portcullis: they would run beside the guard without its proxy settings; debug a copy of the pod instead (kubectl debug --copy-to=NAME --share-processes=false --keep-startup --keep-readiness), which is admitted like any new pod',
          ),
        ],
      },
    },
    binding(GUARD_UNCHANGED_POLICY, [], excludedNamespaces),
  ];
}
