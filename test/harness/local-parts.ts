// The operator and the webhook as the tests, benchmarks and the demo run them
// in-process against the local control plane.

import type { KubeConfig } from '@kubernetes/client-node';
import { mkdir, writeFile } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { pino } from 'pino';
import { stringify } from 'yaml';
import { compileTenant } from '../../src/compiler/index.ts';
import type { OperatorMetrics } from '../../src/operator/metrics.ts';
import { createOperatorMetrics } from '../../src/operator/metrics.ts';
import { Operator } from '../../src/operator/operator.ts';
import type { WebhookOptions } from '../../src/webhook/index.ts';
import { eventually, kubeConfigWithToken } from './cluster.ts';
import type { ControlPlaneInfo } from './control-plane.ts';
import { ensureNamespace, kubectl, REPO_ROOT } from './control-plane.ts';

/** A client acting as a ServiceAccount, with a token from the TokenRequest API. */
export async function serviceAccountKubeConfig(plane: Pick<ControlPlaneInfo, 'kubeconfig' | 'tools' | 'server' | 'caCert'>, namespace: string, name: string): Promise<KubeConfig> {
  const token = (await kubectl(plane, ['create', 'token', name, '-n', namespace, '--duration=24h'])).stdout.trim();
  return kubeConfigWithToken(plane, token);
}

export interface LocalOperatorOptions {
  kubeConfig: KubeConfig;
  namespace: string;
  identity: string;
  metrics?: OperatorMetrics;
  keyringRefreshMs?: number;
  /** pino level; PORTCULLIS_TEST_LOG, else silent. */
  logLevel?: string;
}

/** An operator with short lease timings, started and holding its Lease. */
export async function startLocalOperator(plane: Pick<ControlPlaneInfo, 'tools'>, options: LocalOperatorOptions): Promise<Operator> {
  const operator = new Operator({
    kubeConfig: options.kubeConfig,
    namespace: options.namespace,
    identity: options.identity,
    signingKeySecret: 'portcullis-signing-keys',
    leaseName: 'portcullis-operator',
    leaseTimings: { leaseDurationMs: 4_000, renewDeadlineMs: 3_000, retryPeriodMs: 500 },
    resyncMs: 600_000,
    compile: (resources) => compileTenant(resources, plane.tools.opa),
    log: pino({ level: options.logLevel ?? process.env.PORTCULLIS_TEST_LOG ?? 'silent' }),
    metrics: options.metrics ?? createOperatorMetrics(),
    ...(options.keyringRefreshMs === undefined ? {} : { keyringRefreshMs: options.keyringRefreshMs }),
  });
  await operator.start();
  await eventually(`operator ${options.identity} to lead`, () => (operator.isLeader ? true : undefined));
  return operator;
}

/** The webhook on loopback, called by URL, its certificate naming localhost and 127.0.0.1. */
export function localWebhookOptions(kubeConfig: KubeConfig, namespace: string, port: number): WebhookOptions {
  return {
    kubeConfig,
    namespace,
    host: '127.0.0.1',
    port,
    clientConfig: { url: `https://127.0.0.1:${port}/inject` },
    dnsNames: ['localhost'],
    ips: ['127.0.0.1'],
    secretName: 'portcullis-webhook-tls',
    injection: { sidecarImage: 'ghcr.io/portcullis-dev/portcullis:0.1.0', envoyImage: 'envoyproxy/envoy:v1.36.0', version: '0.1.0' },
    log: pino({ level: process.env.PORTCULLIS_TEST_LOG ?? 'silent' }),
  };
}

/**
 * The operator in-process with exactly config/rbac's permissions, renamed with `prefix` into its
 * own namespace, so it leaves the operators of other test files alone.
 */
export async function startScopedOperator(plane: Pick<ControlPlaneInfo, 'kubeconfig' | 'tools' | 'server' | 'caCert' | 'runDir'>, prefix: string, namespace: string, metrics?: OperatorMetrics): Promise<Operator> {
  await ensureNamespace(plane, namespace);
  const overlay = join(plane.runDir, `${prefix}-rbac`);
  await mkdir(overlay, { recursive: true });
  await writeFile(join(overlay, 'kustomization.yaml'), stringify({
    apiVersion: 'kustomize.config.k8s.io/v1beta1', kind: 'Kustomization', namespace, namePrefix: `${prefix}-`,
    resources: [relative(overlay, join(REPO_ROOT, 'config', 'rbac'))],
  }));
  await kubectl(plane, ['apply', '-k', overlay]);
  return startLocalOperator(plane, {
    kubeConfig: await serviceAccountKubeConfig(plane, namespace, `${prefix}-portcullis-operator`),
    namespace,
    identity: `${prefix}-test-operator`,
    ...(metrics === undefined ? {} : { metrics }),
  });
}

/**
 * A kubeconfig file for an agent's ServiceAccount, as its sidecar runs: the ServiceAccount is
 * created here, and its access is only what the operator grants the agents of the namespace (the
 * Role portcullis-sidecar), waited for.
 */
export async function agentKubeconfigFile(plane: Pick<ControlPlaneInfo, 'kubeconfig' | 'tools' | 'server' | 'caCert' | 'runDir'>, namespace: string, serviceAccount: string): Promise<string> {
  await kubectl(plane, ['apply', '-f', '-'], { input: stringify({ apiVersion: 'v1', kind: 'ServiceAccount', metadata: { name: serviceAccount, namespace } }) });
  await eventually(`the operator to let ${namespace}/${serviceAccount} read its bundle`, async () => {
    const canI = await kubectl(plane, ['auth', 'can-i', 'watch', 'configmaps/portcullis-bundle', '-n', namespace, `--as=system:serviceaccount:${namespace}:${serviceAccount}`], { allowFailure: true });
    return canI.stdout.trim() === 'yes' ? true : undefined;
  }, 60_000);
  const token = (await kubectl(plane, ['create', 'token', serviceAccount, '-n', namespace, '--duration=2h'])).stdout.trim();
  const path = join(plane.runDir, `${namespace}-${serviceAccount}.kubeconfig`);
  await writeFile(path, stringify({
    apiVersion: 'v1', kind: 'Config', 'current-context': 'agent',
    clusters: [{ name: 'local', cluster: { server: plane.server, 'certificate-authority-data': Buffer.from(plane.caCert).toString('base64') } }],
    users: [{ name: 'agent', user: { token } }],
    contexts: [{ name: 'agent', context: { cluster: 'local', user: 'agent' } }],
  }));
  return path;
}
