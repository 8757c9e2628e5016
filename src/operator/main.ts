// `portcullis operator`: flags, wiring and graceful shutdown.

import { hostname } from 'node:os';
import { parseArgs } from 'node:util';
import { CoreV1Api } from '@kubernetes/client-node';
import type { KubeConfig } from '@kubernetes/client-node';
import { pino } from 'pino';
import { durationFlag, listenAddress, logLevel } from '../cli/flags.ts';
import { UsageError } from '../cli/io.ts';
import { compileTenant } from '../compiler/compile.ts';
import { kubeConfigFrom } from './kubeconfig.ts';
import { DEFAULT_LEASE_TIMINGS } from './leader.ts';
import { createOperatorMetrics } from './metrics.ts';
import { Operator } from './operator.ts';
import { startOpsServer } from './server.ts';
import { rotateKeyring } from './signing-keys.ts';
import type { ServingTls } from '../identity/index.ts';
import { rotateTokenKeyring, startTokenService, TOKEN_KEYS_SECRET, tokenServiceDnsNames, tokenServiceUrl } from '../identity/index.ts';
import type { RunningWebhook, WebhookOptions } from '../webhook/index.ts';
import { startWebhook } from '../webhook/index.ts';
import { ensureServingCerts, mountedServingTls } from '../webhook/serving-certs.ts';
// The module itself, not counters/index.ts: the operator checks the URL and never loads the Redis client.
import { checkRedisUrl } from '../sidecar/counters/redis-url.ts';
import type { Logger } from 'pino';

export const VERSION = '0.1.0';

interface WebhookFlags {
  'webhook-address'?: string;
  'webhook-service'?: string;
  'webhook-url'?: string;
  'cert-manager'?: string;
  'cert-dir'?: string;
  'sidecar-image'?: string;
  'envoy-image'?: string;
  'counters-redis-url'?: string;
}

/** The Secret holding the token service's CA and serving certificate, when the operator manages them. */
export const TOKEN_TLS_SECRET = 'portcullis-tokens-tls';

interface TokenFlags {
  'token-url'?: string;
  'token-cert-dir'?: string;
}

export interface TokenEndpoint {
  /** Where sidecars reach the token service, which is also the `iss` of its tokens. */
  url: string;
  /** Reads (and, when the operator manages it, creates or renews) the serving certificate. */
  tls: () => Promise<ServingTls>;
}

/**
 * The token service's address and certificate from the flags: by default its Service's in-cluster
 * URL, with a certificate for the Service's names from the operator's own CA (Secret
 * portcullis-tokens-tls); with --token-url, that URL (out of cluster); with --token-cert-dir,
 * cert-manager's files. Throws UsageError naming a bad flag.
 */
export function tokenEndpoint(flags: TokenFlags, namespace: string, kubeConfig: KubeConfig): TokenEndpoint {
  const url = flags['token-url'] === undefined ? new URL(tokenServiceUrl(namespace)) : httpsUrl(flags['token-url'], 'token-url', 'sidecars send ServiceAccount tokens to the token service over TLS only');
  const host = url.hostname.replace(/^\[|\]$/g, '');
  const isIp = /^[0-9.:]+$/.test(host);
  const identity = flags['token-url'] === undefined
    ? { dnsNames: tokenServiceDnsNames(namespace), ips: [] }
    : { dnsNames: isIp ? [] : [host], ips: isIp ? [host] : [] };
  const certDir = flags['token-cert-dir'];
  const core = kubeConfig.makeApiClient(CoreV1Api);
  const tls = certDir !== undefined
    ? (): Promise<ServingTls> => mountedServingTls(certDir)
    : async (): Promise<ServingTls> => {
      const certs = await ensureServingCerts(core, namespace, TOKEN_TLS_SECRET, identity, new Date(), { caCommonName: 'portcullis-tokens-ca', component: 'tokens' });
      return { cert: certs.serving.cert, key: certs.serving.key, ca: certs.ca.cert };
    };
  return { url: url.toString().replace(/\/$/, ''), tls };
}

/** The webhook's settings from the flags; throws UsageError naming a bad one. */
export function webhookOptions(flags: WebhookFlags, namespace: string, kubeConfig: KubeConfig, log: Logger, tokens?: { url: string; ca: string }): WebhookOptions {
  const listen = listenAddress(flags['webhook-address'] ?? '0.0.0.0:9443', 'webhook-address');
  const service = flags['webhook-service'] ?? 'portcullis-webhook';
  if (flags['cert-manager'] !== undefined && (!/^[a-z0-9-]+\/[a-z0-9-]+$/.test(flags['cert-manager']) || flags['cert-dir'] === undefined)) {
    throw new UsageError('--cert-manager takes NAMESPACE/CERTIFICATE and needs --cert-dir, where its Secret is mounted');
  }
  const url = flags['webhook-url'] === undefined ? undefined : httpsUrl(flags['webhook-url'], 'webhook-url', 'the API server calls webhooks over TLS only');
  const host = url?.hostname.replace(/^\[|\]$/g, '');
  const isIp = host !== undefined && /^[0-9.:]+$/.test(host);
  return {
    kubeConfig,
    namespace,
    host: listen.host,
    port: listen.port,
    clientConfig: url ? { url: url.toString() } : { service: { name: service, namespace, path: '/inject', port: 443 } },
    dnsNames: url ? (isIp ? ['localhost'] : [host ?? 'localhost']) : [`${service}.${namespace}.svc`, `${service}.${namespace}.svc.cluster.local`],
    ips: isIp && host ? [host] : [],
    ...(flags['cert-manager'] !== undefined && flags['cert-dir'] !== undefined ? { certManager: { certificate: flags['cert-manager'], certDir: flags['cert-dir'] } } : {}),
    secretName: 'portcullis-webhook-tls',
    injection: injectionSettings(flags, tokens ?? { url: tokenServiceUrl(namespace) }),
    log: log.child({ component: 'webhook' }),
  };
}

function httpsUrl(flag: string, name: string, why: string): URL {
  let url: URL;
  try {
    url = new URL(flag);
  } catch {
    throw new UsageError(`--${name}: ${JSON.stringify(flag)} is not a URL`);
  }
  if (url.protocol !== 'https:') throw new UsageError(`--${name} must be https: ${why}`);
  return url;
}

function injectionSettings(flags: WebhookFlags, tokens: { url: string; ca?: string }): WebhookOptions['injection'] {
  return {
    sidecarImage: flags['sidecar-image'] ?? `ghcr.io/portcullis-dev/portcullis:${VERSION}`,
    envoyImage: flags['envoy-image'] ?? 'envoyproxy/envoy:v1.36.0',
    version: VERSION,
    tokenService: tokens.url,
    ...(tokens.ca === undefined ? {} : { tokenServiceCa: tokens.ca }),
    ...(flags['counters-redis-url'] === undefined ? {} : { countersRedisUrl: countersRedisUrl(flags['counters-redis-url']) }),
  };
}

/** The Redis injected sidecars keep their counters in, checked as the sidecar would check it. */
function countersRedisUrl(url: string): string {
  try {
    return checkRedisUrl(url);
  } catch (error) {
    throw new UsageError(`--counters-redis-url: ${error instanceof Error ? error.message : String(error)}`);
  }
}

/** The webhook, when --webhook-address asks for it; it injects the token service's URL and CA. */
async function maybeStartWebhook(flags: WebhookFlags, namespace: string, kubeConfig: KubeConfig, log: Logger, tokens: { url: string; ca: string }): Promise<RunningWebhook | undefined> {
  if (flags['webhook-address'] === undefined) return undefined;
  return startWebhook(webhookOptions(flags, namespace, kubeConfig, log, tokens));
}

export const OPERATOR_USAGE = `Usage: portcullis operator [flags]

Reconciles AgentIdentity, ToolPolicy and EgressRule resources into signed
per-tenant bundles (ConfigMap portcullis-bundle) and writes their status.

Flags:
  --kubeconfig PATH          kubeconfig to use (default: in-cluster, else $KUBECONFIG / ~/.kube/config)
  --namespace NS             the operator's namespace: Lease and signing-key Secret (default: $POD_NAMESPACE or portcullis-system)
  --identity ID              this replica's leader-election identity (default: $POD_NAME or the host name)
  --ops-address HOST:PORT    /healthz, /readyz and /metrics (default 0.0.0.0:8080)
  --token-address HOST:PORT  agent token service: POST /v1/token, /.well-known/jwks.json, over TLS only
                             (default 0.0.0.0:8443; served by every replica)
  --token-url URL            reach the token service at this https URL instead of through its Service (out of
                             cluster): its certificate names this host, injected sidecars are pointed at it,
                             and it is the issuer of agent tokens
  --token-cert-dir DIR       take the token service's certificate from cert-manager: its Certificate's Secret
                             mounted at DIR (tls.crt, tls.key, ca.crt); default: the operator's own CA and
                             certificate in Secret portcullis-tokens-tls
  --webhook-address HOST:PORT  serve the pod injection webhook here (HTTPS, every replica); off when not given
  --webhook-service NAME     the Service in front of the webhook (default portcullis-webhook, port 443)
  --webhook-url URL          call the webhook at this URL instead of through the Service (out of cluster)
  --cert-manager NS/NAME     take the webhook's certificate from cert-manager: its Certificate, mounted at --cert-dir
  --cert-dir DIR             where cert-manager's Secret is mounted (tls.crt, tls.key)
  --sidecar-image IMAGE      the image injected as the authz sidecar (default ghcr.io/portcullis-dev/portcullis:VERSION)
  --envoy-image IMAGE        the Envoy image injected as the proxy (default envoyproxy/envoy:v1.36.0)
  --counters-redis-url URL   injected sidecars count in this Redis (redis://host:port[/db], no credentials), each
                             as its agent's own ACL user with the password of Secret portcullis-redis-SERVICEACCOUNT
                             (portcullis redis acl); default: each sidecar counts in memory
  --lease-duration D         leader Lease duration (default 15s)
  --renew-deadline D         how long the leader tries to renew before stepping down (default 10s)
  --retry-period D           how often candidates try to take or renew the Lease (default 2s)
  --resync D                 reconcile every tenant this often even without changes (default 10m)
  --workers N                tenants reconciled at once (default 4)
  --signing-key-secret NAME  Secret holding the bundle signing keys (default portcullis-signing-keys)
  --rotate-signing-key       add a new active signing key to the Secret, print its id, and exit
  --rotate-token-key         add a new agent token signing key (published now, signing in 2 minutes), print its id, and exit
  --log-level LEVEL          trace, debug, info, warn or error (default info)
`;

export async function operatorCommand(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    strict: true,
    options: {
      kubeconfig: { type: 'string' },
      namespace: { type: 'string' },
      identity: { type: 'string' },
      'ops-address': { type: 'string' },
      'token-address': { type: 'string' },
      'token-url': { type: 'string' },
      'token-cert-dir': { type: 'string' },
      'webhook-address': { type: 'string' },
      'webhook-service': { type: 'string' },
      'webhook-url': { type: 'string' },
      'cert-manager': { type: 'string' },
      'cert-dir': { type: 'string' },
      'sidecar-image': { type: 'string' },
      'envoy-image': { type: 'string' },
      'counters-redis-url': { type: 'string' },
      'lease-duration': { type: 'string' },
      'renew-deadline': { type: 'string' },
      'retry-period': { type: 'string' },
      resync: { type: 'string' },
      workers: { type: 'string' },
      'signing-key-secret': { type: 'string' },
      'rotate-signing-key': { type: 'boolean' },
      'rotate-token-key': { type: 'boolean' },
      'log-level': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    process.stdout.write(OPERATOR_USAGE);
    return 0;
  }
  const level = logLevel(values['log-level']);
  const kubeConfig = kubeConfigFrom(values.kubeconfig);
  const namespace = values.namespace ?? process.env.POD_NAMESPACE ?? 'portcullis-system';
  const signingKeySecret = values['signing-key-secret'] ?? 'portcullis-signing-keys';
  if (values['rotate-signing-key']) {
    const keyId = await rotateKeyring(kubeConfig.makeApiClient(CoreV1Api), namespace, signingKeySecret);
    process.stdout.write(`${keyId}\n`);
    return 0;
  }
  if (values['rotate-token-key']) {
    process.stdout.write(`${await rotateTokenKeyring(kubeConfig.makeApiClient(CoreV1Api), namespace, TOKEN_KEYS_SECRET)}\n`);
    return 0;
  }
  const leaseTimings = {
    leaseDurationMs: durationFlag(values['lease-duration'], 'lease-duration', DEFAULT_LEASE_TIMINGS.leaseDurationMs),
    renewDeadlineMs: durationFlag(values['renew-deadline'], 'renew-deadline', DEFAULT_LEASE_TIMINGS.renewDeadlineMs),
    retryPeriodMs: durationFlag(values['retry-period'], 'retry-period', DEFAULT_LEASE_TIMINGS.retryPeriodMs),
  };
  if (!(leaseTimings.leaseDurationMs > leaseTimings.renewDeadlineMs && leaseTimings.renewDeadlineMs > leaseTimings.retryPeriodMs)) {
    throw new UsageError('leader election needs --lease-duration > --renew-deadline > --retry-period');
  }
  const ops = listenAddress(values['ops-address'] ?? '0.0.0.0:8080', 'ops-address');
  const tokenAddress = listenAddress(values['token-address'] ?? '0.0.0.0:8443', 'token-address');
  const tokenSettings = tokenEndpoint(values, namespace, kubeConfig);
  const workers = Number(values.workers ?? '4');
  if (!Number.isInteger(workers) || workers < 1 || workers > 64) throw new UsageError(`--workers: ${JSON.stringify(values.workers)} is not a whole number from 1 to 64`);
  const log = pino({ level, base: { component: 'operator' } });
  const metrics = createOperatorMetrics();
  const identity = values.identity ?? process.env.POD_NAME ?? hostname();
  const operator = new Operator({
    kubeConfig,
    namespace,
    identity,
    signingKeySecret,
    leaseName: 'portcullis-operator',
    leaseTimings,
    resyncMs: durationFlag(values.resync, 'resync', 600_000),
    compile: (resources) => compileTenant(resources),
    workers,
    log,
    metrics,
  });
  const server = await startOpsServer({ ...ops, ready: () => operator.ready, registry: metrics.registry });
  await operator.start();
  const tokens = await startTokenService({ kubeConfig, namespace, ...tokenAddress, issuer: tokenSettings.url, tls: tokenSettings.tls, log: log.child({ component: 'token-service' }), registry: metrics.registry });
  const webhook = await maybeStartWebhook(values, namespace, kubeConfig, log, { url: tokenSettings.url, ca: tokens.ca() });
  log.info({ identity, namespace, ops: `${ops.host}:${ops.port}`, tokens: tokens.url, webhook: Boolean(webhook) }, 'operator started');

  await new Promise<void>((resolve) => {
    const shutdown = (signal: string): void => {
      log.info({ signal }, 'shutting down; releasing the leader Lease');
      resolve();
    };
    process.once('SIGTERM', () => { shutdown('SIGTERM'); });
    process.once('SIGINT', () => { shutdown('SIGINT'); });
  });
  await webhook?.stop();
  await tokens.stop();
  await operator.stop();
  server.close();
  log.flush();
  return 0;
}
