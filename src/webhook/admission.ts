// The mutating webhook's decision, apart from HTTP: decode an AdmissionReview,
// run the guards (each lets the pod through unchanged, or refuses it, with its
// reason), inject, and answer with the JSON patch between the pod as sent and as
// injected. A pod that brings containers named like ours is refused unless they
// are exactly what injection makes; one that cannot be guarded is refused.

import type { V1Pod } from '@kubernetes/client-node';
// Its main entry is CommonJS, whose named exports Node cannot see: take them from the default.
import jsonPatch from 'fast-json-patch';
import type { InjectionConfig, PodContext } from './inject.ts';
import { INJECT_ANNOTATION, inject } from './inject.ts';
import { SIDECAR_NAMES, sidecarMismatches, unguardable } from './expected.ts';

/** Namespaces the webhook never touches, whatever their labels say. */
export const SYSTEM_NAMESPACES = ['kube-system', 'kube-node-lease', 'kube-public'] as const;

export interface AdmissionResponse {
  uid: string;
  allowed: boolean;
  patchType?: 'JSONPatch';
  patch?: string;
  status?: { code: number; reason?: string; message: string };
  auditAnnotations?: Record<string, string>;
}

export interface AdmissionReviewResponse {
  apiVersion: 'admission.k8s.io/v1';
  kind: 'AdmissionReview';
  response: AdmissionResponse;
}

export interface MutationOutcome {
  review: AdmissionReviewResponse;
  result: 'injected' | 'skipped' | 'refused';
  /** Why the pod was let through unchanged or refused, or `injected`. */
  reason: string;
  namespace: string;
  pod: string;
}

export class AdmissionReviewError extends Error {
  override readonly name = 'AdmissionReviewError';
}

interface AdmissionRequest {
  uid: string;
  kind: { group: string; version: string; kind: string };
  operation: string;
  namespace?: string;
  name?: string;
  object?: unknown;
  dryRun?: boolean;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** The request of an admission.k8s.io/v1 AdmissionReview; throws naming what is wrong. */
export function parseAdmissionReview(body: unknown): AdmissionRequest {
  if (!isRecord(body) || body.apiVersion !== 'admission.k8s.io/v1' || body.kind !== 'AdmissionReview') {
    throw new AdmissionReviewError('the body is not an admission.k8s.io/v1 AdmissionReview');
  }
  const request = body.request;
  if (!isRecord(request)) throw new AdmissionReviewError('the AdmissionReview has no request');
  if (typeof request.uid !== 'string' || request.uid === '') throw new AdmissionReviewError('request.uid is missing');
  if (!isRecord(request.kind) || typeof request.kind.kind !== 'string') throw new AdmissionReviewError('request.kind is missing');
  if (typeof request.operation !== 'string') throw new AdmissionReviewError('request.operation is missing');
  return request as unknown as AdmissionRequest;
}

function allow(uid: string, reason: string, namespace: string, pod: string): MutationOutcome {
  return {
    review: { apiVersion: 'admission.k8s.io/v1', kind: 'AdmissionReview', response: { uid, allowed: true, auditAnnotations: { skipped: reason } } },
    result: 'skipped',
    reason,
    namespace,
    pod,
  };
}

function refuse(uid: string, reason: string, namespace: string, pod: string): MutationOutcome {
  const message = `Portcullis refuses this opted-in pod: ${reason}`;
  return {
    review: { apiVersion: 'admission.k8s.io/v1', kind: 'AdmissionReview', response: { uid, allowed: false, status: { code: 403, reason: 'Forbidden', message } } },
    result: 'refused',
    reason,
    namespace,
    pod,
  };
}

const carriesSidecar = (pod: V1Pod): boolean =>
  [...(pod.spec?.initContainers ?? []), ...pod.spec?.containers ?? [], ...(pod.spec?.ephemeralContainers ?? [])].some((c) => SIDECAR_NAMES.includes(c.name));

/** Guards first, each with its reason; then inject and diff. */
export function mutate(request: AdmissionRequest, config: InjectionConfig, excludedNamespaces: readonly string[], context: PodContext): MutationOutcome {
  const namespace = request.namespace ?? '';
  const object = request.object;
  const metadata = isRecord(object) && isRecord(object.metadata) ? object.metadata : {};
  const named = metadata.name ?? metadata.generateName;
  const podName = typeof named === 'string' ? named : '';
  if (request.kind.kind !== 'Pod' || request.kind.group !== '') return allow(request.uid, 'not a pod', namespace, podName);
  if (request.operation !== 'CREATE') return allow(request.uid, `only pod creation is mutated, not ${request.operation}`, namespace, podName);
  if (excludedNamespaces.includes(namespace)) return allow(request.uid, `namespace ${namespace} is never injected`, namespace, podName);
  if (!isRecord(object) || !isRecord(object.spec)) return allow(request.uid, 'the request carries no pod', namespace, podName);
  const pod = object as V1Pod;
  if (pod.metadata?.annotations?.[INJECT_ANNOTATION] === 'false') return allow(request.uid, `the pod opts out (${INJECT_ANNOTATION}: "false")`, namespace, podName);
  const cannot = unguardable(pod);
  if (cannot !== undefined) return refuse(request.uid, cannot, namespace, podName);
  // Ours (a reinvocation, a pod resubmitted as it was stored) only if exactly what injection makes.
  const mismatches = carriesSidecar(pod) ? sidecarMismatches(pod, config, context) : [];
  if (mismatches.length > 0) return refuse(request.uid, `it brings containers named like Portcullis's own that are not what the operator's configuration injects: ${mismatches.join('; ')}`, namespace, podName);

  const injected = inject(pod, config, context);
  const patch = jsonPatch.compare(object, injected);
  if (patch.length === 0) return allow(request.uid, 'already injected', namespace, podName);
  return {
    review: {
      apiVersion: 'admission.k8s.io/v1',
      kind: 'AdmissionReview',
      response: { uid: request.uid, allowed: true, patchType: 'JSONPatch', patch: Buffer.from(JSON.stringify(patch)).toString('base64') },
    },
    result: 'injected',
    reason: 'injected',
    namespace,
    pod: podName,
  };
}
