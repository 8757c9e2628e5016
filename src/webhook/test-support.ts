// Shared by the webhook's unit tests: an injection configuration and an opted-in pod built with modifiers.
import type { V1Pod } from '@kubernetes/client-node';
import type { InjectionConfig, PodContext } from './inject.ts';

export const INJECTION: InjectionConfig = {
  sidecarImage: 'ghcr.io/portcullis-dev/portcullis:0.1.0',
  envoyImage: 'envoyproxy/envoy:v1.36.0',
  version: '0.1.0',
  nativeSidecars: true,
};

export const FINANCE: PodContext = { tenant: 'finance' };

export type PodModifier = (pod: V1Pod) => void;

/** A pod of the finance agent, opted in by its annotation, changed by each modifier in turn. */
export function agentPod(...modifiers: PodModifier[]): V1Pod {
  const built: V1Pod = {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name: 'agent-0', namespace: 'finance', annotations: { 'portcullis.dev/inject': 'true' } },
    spec: { serviceAccountName: 'finance-agent', containers: [{ name: 'agent', image: 'agent:1' }] },
  };
  for (const modify of modifiers) modify(built);
  return built;
}
