// The injector as the operator runs it on every replica: certificates (its own
// Secret, or cert-manager's files), the HTTPS server, and the admission objects
// that route pods to it, with renewal while it runs.

import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { KubeConfig } from '@kubernetes/client-node';
import { CoreV1Api, KubernetesObjectApi, PatchStrategy, VersionApi } from '@kubernetes/client-node';
import type { Logger } from 'pino';
import { TENANT_LABEL } from '../api/index.ts';
import type { Histogram } from 'prom-client';
import type { Pem } from './certs.ts';
import type { ClientConfig } from './configurations.ts';
import { guardUnchangedPolicy, injectorConfiguration, requireInjectionPolicy } from './configurations.ts';
import type { InjectionConfig } from './inject.ts';
import { SYSTEM_NAMESPACES } from './admission.ts';
import type { WebhookServer } from './server.ts';
import { startWebhookServer } from './server.ts';
import { ensureServingCerts, needsRenewal } from './serving-certs.ts';

export { inject } from './inject.ts';
export { isInjected } from './expected.ts';
export type { InjectionConfig } from './inject.ts';
export { envoyBootstrap, PORTS } from './envoy-bootstrap.ts';
export { guardUnchangedPolicy, injectorConfiguration, requireInjectionPolicy } from './configurations.ts';

const FIELD_MANAGER = 'portcullis-operator';

export interface WebhookOptions {
  kubeConfig: KubeConfig;
  /** The operator's namespace: never injected; holds the certificate Secret. */
  namespace: string;
  host: string;
  port: number;
  clientConfig: ClientConfig;
  /** Names the serving certificate must carry (the Service's DNS names, or localhost). */
  dnsNames: string[];
  ips: string[];
  /** cert-manager mode: NAMESPACE/CERTIFICATE, and the folder its Secret is mounted at (tls.crt, tls.key). */
  certManager?: { certificate: string; certDir: string };
  secretName: string;
  injection: Omit<InjectionConfig, 'nativeSidecars'>;
  log: Logger;
  duration?: Histogram<'result'>;
  /** How often the serving certificate's expiry is checked. */
  renewCheckMs?: number;
}

export interface RunningWebhook {
  stop(): Promise<void>;
  caBundle: string | undefined;
}

/** Native sidecars are on by default from Kubernetes 1.29. */
export function supportsNativeSidecars(major: string, minor: string): boolean {
  const [maj, min] = [Number.parseInt(major, 10), Number.parseInt(minor, 10)];
  return maj > 1 || (maj === 1 && min >= 29);
}

const TENANT_CACHE_MS = 10_000;

/** Namespace → tenant, read from the API and kept briefly: admission must stay fast. */
function namespaceTenants(core: CoreV1Api): (namespace: string) => Promise<string> {
  const cache = new Map<string, { tenant: string; at: number }>();
  return async (namespace) => {
    const hit = cache.get(namespace);
    if (hit && Date.now() - hit.at < TENANT_CACHE_MS) return hit.tenant;
    const ns = await core.readNamespace({ name: namespace });
    const label = ns.metadata?.labels?.[TENANT_LABEL];
    const tenant = label !== undefined && label !== '' ? label : namespace;
    cache.set(namespace, { tenant, at: Date.now() });
    return tenant;
  };
}

async function certManagerTls(certDir: string): Promise<Pem> {
  const [cert, key] = await Promise.all([readFile(join(certDir, 'tls.crt'), 'utf8'), readFile(join(certDir, 'tls.key'), 'utf8')]);
  return { cert, key };
}

export async function startWebhook(options: WebhookOptions): Promise<RunningWebhook> {
  const core = options.kubeConfig.makeApiClient(CoreV1Api);
  const objects = KubernetesObjectApi.makeApiClient(options.kubeConfig);
  const version = await options.kubeConfig.makeApiClient(VersionApi).getCode();
  const nativeSidecars = supportsNativeSidecars(version.major, version.minor);
  const identity = { dnsNames: options.dnsNames, ips: options.ips };
  const excluded = [...SYSTEM_NAMESPACES, options.namespace];

  const loadTls = async (): Promise<{ tls: Pem; caBundle: string | undefined }> => {
    if (options.certManager) return { tls: await certManagerTls(options.certManager.certDir), caBundle: undefined };
    const certs = await ensureServingCerts(core, options.namespace, options.secretName, identity);
    return { tls: certs.serving, caBundle: certs.ca.cert };
  };
  let { tls, caBundle } = await loadTls();
  const tenantOf = namespaceTenants(core);
  // Sidecars verify bundles with the keys the operator publishes in its own namespace.
  const injection: InjectionConfig = { trustNamespace: options.namespace, ...options.injection, nativeSidecars };
  const server: WebhookServer = await startWebhookServer({
    tenantOf,
    host: options.host,
    port: options.port,
    tls,
    injection,
    excludedNamespaces: excluded,
    log: options.log,
    ...(options.duration ? { duration: options.duration } : {}),
  });

  const applyConfigurations = async (): Promise<void> => {
    const injector = injectorConfiguration({
      clientConfig: options.clientConfig,
      excludedNamespaces: excluded,
      ...(caBundle ? { caBundle } : {}),
      ...(options.certManager ? { certManagerCertificate: options.certManager.certificate } : {}),
    });
    // The policies hold pods to what this configuration injects: written with it, every time.
    for (const object of [injector, ...requireInjectionPolicy(excluded, injection), ...guardUnchangedPolicy(excluded)]) {
      await objects.patch(object, undefined, undefined, FIELD_MANAGER, true, PatchStrategy.ServerSideApply);
    }
  };
  await applyConfigurations();
  options.log.info({ address: `${options.host}:${options.port}`, nativeSidecars, certManager: Boolean(options.certManager) }, 'webhook serving');

  // Renewal: cert-manager renews its own Secret (re-read the files); otherwise renew ours when close to expiry.
  const timer = setInterval(() => {
    const renew = async (): Promise<void> => {
      if (!options.certManager && !needsRenewal(tls.cert, new Date())) return;
      ({ tls, caBundle } = await loadTls());
      server.updateTls(tls);
      await applyConfigurations();
    };
    renew().catch((error: unknown) => { options.log.warn({ error: String(error) }, 'webhook certificate renewal failed; retrying'); });
  }, options.renewCheckMs ?? 3_600_000);
  timer.unref();

  return {
    caBundle,
    stop: async () => {
      clearInterval(timer);
      await server.close();
    },
  };
}
