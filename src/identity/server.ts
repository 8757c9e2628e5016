// Starts the token service as the operator runs it: on every replica (not only the leader), over
// TLS only: pods send their ServiceAccount tokens here across the pod network. The certificate
// comes from the operator (its own CA in a Secret, or cert-manager's files) and is read again
// while serving, so a renewed one is served to new connections.

import { createServer } from 'node:https';
import type { Server } from 'node:https';
import { X509Certificate } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import { CoreV1Api } from '@kubernetes/client-node';
import type { KubeConfig } from '@kubernetes/client-node';
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import { tokenServiceHandler } from './http.ts';
import type { TokenKeyring } from './keyring.ts';
import { ensureTokenKeyring, readTokenKeyring, TOKEN_KEYS_SECRET } from './keyring.ts';
import { InformerAgentDirectory, LastIssuedRecorder, podLookup, tokenReviewer } from './kubernetes.ts';
import { createTokenServiceMetrics } from './metrics.ts';
import { TokenService } from './token-service.ts';

/** The Service in front of every replica's token service, and its port (config/manager). */
export const TOKEN_SERVICE_NAME = 'portcullis-tokens';
export const TOKEN_SERVICE_PORT = 8443;

/** The token service's in-cluster base URL, which is also the issuer of its tokens. */
export function tokenServiceUrl(namespace: string, port = TOKEN_SERVICE_PORT): string {
  return `https://${TOKEN_SERVICE_NAME}.${namespace}.svc:${String(port)}`;
}

/** The names the token service's certificate carries: its Service's in-cluster DNS names. */
export function tokenServiceDnsNames(namespace: string): string[] {
  return [`${TOKEN_SERVICE_NAME}.${namespace}.svc`, `${TOKEN_SERVICE_NAME}.${namespace}.svc.cluster.local`];
}

/** The certificate the token service serves with, and the CA bundle its clients verify it with. */
export interface ServingTls {
  cert: string;
  key: string;
  /** PEM: the CA (or CAs) that sign `cert`, given to the sidecars at injection. */
  ca: string;
}

/** How often the certificate is read again (renewal happens well ahead: a third of its life). */
const TLS_RELOAD_MS = 3_600_000;

export interface TokenServiceServerOptions {
  kubeConfig: KubeConfig;
  /** The operator's namespace: the token keys Secret lives there. */
  namespace: string;
  host: string;
  port: number;
  log: Logger;
  /** The `iss` of agent tokens (default: the token Service's in-cluster address, TOKEN_SERVICE_NAME). */
  issuer?: string;
  keySecret?: string;
  /** How often the keys are read again from their Secret (default 15 s). */
  keyringRefreshMs?: number;
  rateLimit?: { perSecond: number; burst: number };
  /** The shortest time between two `lastTokenIssued` writes of one agent (default 30 s). */
  statusIntervalMs?: number;
  /** Where the exchange metrics are registered (the operator's registry). */
  registry?: Registry;
  /** The serving certificate: read at start and every `tlsReloadMs` (default an hour), renewing it when due. */
  tls: () => Promise<ServingTls>;
  tlsReloadMs?: number;
}

export interface RunningTokenService {
  service: TokenService;
  server: Server;
  /** The base URL it listens on. */
  url: string;
  /** The CA bundle (PEM) its certificate is verified with, as last read. */
  ca: () => string;
  stop: () => Promise<void>;
}

export async function startTokenService(options: TokenServiceServerOptions): Promise<RunningTokenService> {
  const { kubeConfig, namespace, log } = options;
  const core = kubeConfig.makeApiClient(CoreV1Api);
  const secret = options.keySecret ?? TOKEN_KEYS_SECRET;
  let keyring: TokenKeyring = await ensureTokenKeyring(core, namespace, secret);
  const refresh = setInterval(() => {
    readTokenKeyring(core, namespace, secret, keyring)
      .then((next) => {
        if (next !== keyring) log.info({ keys: next.stored.keys.map((k) => ({ kid: k.keyId, activatesAt: k.activatesAt })) }, 'token signing keys changed');
        keyring = next;
      })
      .catch((error: unknown) => {
        log.warn({ error: error instanceof Error ? error.message.split('\n')[0] : String(error) }, 'could not read the token signing keys; keeping the ones loaded');
      });
  }, options.keyringRefreshMs ?? 15_000);
  refresh.unref();

  const agents = new InformerAgentDirectory(kubeConfig, log);
  await agents.start();
  const recorder = new LastIssuedRecorder(kubeConfig, log, options.statusIntervalMs);
  const service = new TokenService({
    issuer: options.issuer ?? tokenServiceUrl(namespace),
    reviewToken: tokenReviewer(kubeConfig),
    lookupPod: podLookup(kubeConfig),
    agents,
    keyring: () => keyring,
    rateLimit: options.rateLimit ?? { perSecond: 5, burst: 20 },
    onIssued: (agent, at) => { recorder.record(agent, at); },
  });
  let tls: ServingTls;
  let server: Server;
  try {
    tls = await options.tls();
    server = createServer({ cert: tls.cert, key: tls.key, minVersion: 'TLSv1.2' }, tokenServiceHandler(service, log, options.registry === undefined ? undefined : createTokenServiceMetrics(options.registry)));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(options.port, options.host, () => { resolve(); });
    });
  } catch (error) {
    clearInterval(refresh);
    await agents.stop();
    throw error;
  }
  const reload = setInterval(() => {
    options.tls()
      .then((next) => {
        if (next.cert === tls.cert && next.key === tls.key) return;
        // Sidecars trust only the CA they were given at injection (docs/sidecar.md, Listeners).
        if (next.ca !== tls.ca) log.error('the token service CA changed: pods injected before trust only the old one until they are re-created, and the webhook injects the new one once the operator restarts');
        server.setSecureContext({ cert: next.cert, key: next.key, minVersion: 'TLSv1.2' });
        tls = next;
        log.info({ notAfter: new X509Certificate(next.cert).validTo }, 'token service certificate renewed');
      })
      .catch((error: unknown) => {
        log.warn({ error: error instanceof Error ? error.message.split('\n')[0] : String(error) }, 'could not read the token service certificate; serving the one loaded');
      });
  }, options.tlsReloadMs ?? TLS_RELOAD_MS);
  reload.unref();
  const { port } = server.address() as AddressInfo;
  const host = options.host === '0.0.0.0' || options.host === '' ? '127.0.0.1' : options.host;
  return {
    service,
    server,
    url: `https://${host.includes(':') ? `[${host}]` : host}:${String(port)}`,
    ca: () => tls.ca,
    stop: async () => {
      clearInterval(refresh);
      clearInterval(reload);
      await new Promise<void>((resolve) => { server.close(() => { resolve(); }); server.closeAllConnections(); });
      await agents.stop();
    },
  };
}
