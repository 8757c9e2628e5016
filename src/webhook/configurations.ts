// The admission objects that route pods to the injector and make sure no
// opted-in pod runs without it. Pure: the operator applies what these return.
//
// Failure policy: the mutating webhook fails open (Ignore, 3 s), so a webhook
// outage never blocks a pod, system pods included. What keeps an opted-in pod
// from running unguarded is a ValidatingAdmissionPolicy, evaluated inside the
// API server (no webhook to be down): it refuses an opted-in pod that lacks the
// authz sidecar. System namespaces and the operator's own are excluded from both.

import { AUTHZ_CONTAINER, INJECT_ANNOTATION, INJECTION_LABEL } from './inject.ts';

export const INJECTOR_NAME = 'portcullis-injector';
export const REQUIRE_INJECTION_POLICY = 'portcullis-require-injection';

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

/**
 * Two policies, as the injector has two webhooks: pods in namespaces labelled
 * for injection (unless they opt out), and pods annotated for it elsewhere. The
 * namespace is matched by the bindings' selectors, not by CEL: namespaceObject
 * is not always filled in for a policy's conditions.
 */
export function requireInjectionPolicy(excludedNamespaces: readonly string[]): Record<string, unknown>[] {
  const hasSidecar = `object.spec.?initContainers.orValue([]).exists(c, c.name == '${AUTHZ_CONTAINER}') || object.spec.containers.exists(c, c.name == '${AUTHZ_CONTAINER}')`;
  const labels = { 'app.kubernetes.io/name': 'portcullis', 'app.kubernetes.io/component': 'webhook' };
  const variants = [
    { name: REQUIRE_INJECTION_POLICY, condition: `!(${annotationIs('false')})`, namespaces: [{ key: INJECTION_LABEL, operator: 'In', values: ['enabled'] }] },
    { name: `${REQUIRE_INJECTION_POLICY}-annotated`, condition: annotationIs('true'), namespaces: [] },
  ];
  return variants.flatMap(({ name, condition, namespaces }) => [
    {
      apiVersion: 'admissionregistration.k8s.io/v1',
      kind: 'ValidatingAdmissionPolicy',
      metadata: { name, labels },
      spec: {
        failurePolicy: 'Fail',
        matchConstraints: { resourceRules: podRules.map(({ scope: _scope, ...rule }) => rule) },
        matchConditions: [{ name: 'opted-in', expression: condition }],
        validations: [
          {
            expression: hasSidecar,
            reason: 'Forbidden',
            message: `this pod is opted in to Portcullis but has no ${AUTHZ_CONTAINER} sidecar: the injector did not run (is the operator up?); pods opted in never run unguarded`,
          },
        ],
      },
    },
    {
      apiVersion: 'admissionregistration.k8s.io/v1',
      kind: 'ValidatingAdmissionPolicyBinding',
      metadata: { name, labels },
      spec: {
        policyName: name,
        validationActions: ['Deny'],
        matchResources: { namespaceSelector: { matchExpressions: [...namespaces, notExcluded(excludedNamespaces)] } },
      },
    },
  ]);
}
