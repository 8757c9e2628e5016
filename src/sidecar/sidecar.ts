// The sidecar assembled: the bundle watch, the decision core, and its
// listeners (HTTP for /v1/authorize and operations, gRPC for Envoy ext_authz
// and ext_proc, optionally HTTP for Envoy ext_authz's HTTP mode, and
// optionally a read-only status listener for probes and Prometheus).
import type { Server as GrpcServer } from '@grpc/grpc-js';
import type { Server as HttpServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Logger } from 'pino';
import { readFile } from 'node:fs/promises';
import type { BundleJwks } from '../bundle/index.ts';
// The modules themselves, not identity/index.ts: that also holds the token service, whose Kubernetes client the sidecar does not load.
import { JwksSource } from '../identity/jwks-source.ts';
import { AgentTokenSource, tokenServiceFetcher } from '../identity/token-source.ts';
import type { TokenServiceEndpoint } from '../identity/token-service-client.ts';
import { TokenServiceClient } from '../identity/token-service-client.ts';
import { AgentTokens } from './agent-tokens.ts';
import type { AgentIdentity, VerifiedFacts } from './authorizer.ts';
import { Authorizer } from './authorizer.ts';
import { BundleEventRecorder, eventCreator } from './bundle-events.ts';
import { BundleSource } from './bundle-source.ts';
import { configMapApi } from './configmap-watch.ts';
import type { LoadedPolicy } from './bundle-verdict.ts';
import type { CounterStoreConfig, CountingStore } from './counters/index.ts';
import { createCounterStore } from './counters/index.ts';
import { createEnvoyHttpServer } from './envoy-http.ts';
import { addExternalProcessor } from './ext-proc.ts';
import { createGrpcServer, listenGrpc } from './grpc-server.ts';
import { createHttpServer, createStatusServer } from './http-server.ts';
import { KubeClient } from './kube-client.ts';
import type { ApiConnection } from './kube-config.ts';
import type { SidecarMetrics } from './metrics.ts';
import { createSidecarMetrics } from './metrics.ts';
import { toolTableOf } from './tools.ts';
import type { TokenCheck } from './user-tokens.ts';
import { UserTokens, verifyForwardedTokens } from './user-tokens.ts';

export interface SidecarOptions {
  /** The API server, where the bundle is watched and refusals are recorded as events (kube-config.ts). */
  kubernetes: ApiConnection;
  /** The operator's namespace, whose ConfigMap portcullis-trust holds the keys bundles are verified with. */
  trustNamespace: string;
  identity: AgentIdentity;
  tenant: string;
  http: { host: string; port: number };
  grpc: { host: string; port: number };
  /** Envoy ext_authz HTTP mode: off unless given. */
  envoyHttp?: { host: string; port: number };
  /** GET /healthz, /readyz and /metrics only, for probes and Prometheus on the pod's address: off unless given. */
  status?: { host: string; port: number };
  log: Logger;
  metrics?: SidecarMetrics;
  /** Where rateLimits, budgets and callsOver are counted: in memory unless given. */
  counters?: CounterStoreConfig;
  /** Envoy runs ext_proc after ext_authz (as injected pods do): ext_authz lets sanitize through for ext_proc to rewrite. */
  sanitizeWithExtProc?: boolean;
  /** The pod the sidecar runs in, named in the events it records. */
  podName?: string;
  /** That pod's uid: agent tokens must name it too. */
  podUid?: string;
  /** The token service: the sidecar holds an agent token and verifies forwarded ones. Off unless given. */
  tokens?: SidecarTokenOptions;
}

export interface SidecarTokenOptions {
  /** The token service (POST /v1/token, /.well-known/jwks.json): its base URL and the CA it is verified with. */
  endpoint: TokenServiceEndpoint;
  /** The issuer agent tokens must name (default: the service URL). */
  issuer?: string;
  /** The pod's projected ServiceAccount token (audience portcullis), read afresh at every exchange. */
  serviceAccountTokenPath: string;
}

function agentTokensFor(options: SidecarOptions, tokens: SidecarTokenOptions, policy: () => LoadedPolicy | undefined): { source: AgentTokenSource; verifier: AgentTokens; client: TokenServiceClient } {
  // One client for both: the ServiceAccount token and the JWKS travel only over TLS verified against the token service's CA.
  const client = new TokenServiceClient(tokens.endpoint);
  const source = new AgentTokenSource({
    fetchToken: tokenServiceFetcher(client, () => readFile(tokens.serviceAccountTokenPath, 'utf8')),
    onError: (error, retryInMs) => { options.log.warn({ err: error, retryInMs }, 'could not get an agent token; retrying'); },
  });
  const jwks = new JwksSource({
    fetchJwks: async () => {
      const { status, body } = await client.request('GET', '/.well-known/jwks.json');
      if (status !== 200 || body === undefined) throw new Error(`the token service answered ${String(status)} for its JWKS`);
      return body as BundleJwks;
    },
  });
  const verifier = new AgentTokens({
    identity: options.identity, tenant: options.tenant, issuer: tokens.issuer ?? tokens.endpoint.url, jwks, policy, own: source,
    ...(options.podName === undefined ? {} : { pod: options.podName }),
    ...(options.podUid === undefined ? {} : { podUid: options.podUid }),
  });
  return { source, verifier, client };
}

export interface BoundPorts {
  http: number;
  grpc: number;
  envoyHttp?: number;
  status?: number;
}

export class Sidecar {
  readonly metrics: SidecarMetrics;
  readonly authorizer: Authorizer;
  readonly counters: CountingStore;
  private readonly bundles: BundleSource;
  private readonly kube: KubeClient;
  private readonly httpServer: HttpServer;
  private readonly grpcServer: GrpcServer;
  private readonly envoyHttpServer: HttpServer | undefined;
  private readonly statusServer: HttpServer | undefined;
  private readonly options: SidecarOptions;
  private ports: BoundPorts | undefined;
  private readonly tokenSource: AgentTokenSource | undefined;
  private readonly tokenClient: TokenServiceClient | undefined;
  private draining = false;

  constructor(options: SidecarOptions) {
    this.options = options;
    this.metrics = options.metrics ?? createSidecarMetrics();
    this.kube = new KubeClient(options.kubernetes);
    const events = new BundleEventRecorder({
      createEvent: eventCreator((path, body) => this.kube.create(path, body)),
      namespace: options.identity.namespace,
      instance: options.podName ?? options.identity.agent,
      log: options.log,
    });
    this.bundles = new BundleSource({
      api: configMapApi(this.kube),
      namespace: options.identity.namespace,
      trustNamespace: options.trustNamespace,
      tenant: options.tenant,
      log: options.log,
      metrics: this.metrics,
      onRefused: (refusal) => { void events.refused(refusal); },
    });
    this.counters = createCounterStore(options.counters ?? { kind: 'memory' }, { metrics: this.metrics, log: options.log });
    this.authorizer = new Authorizer({ identity: options.identity, tenant: options.tenant, policy: () => this.bundles.policy, metrics: this.metrics, counters: this.counters });
    const tokens = options.tokens === undefined ? undefined : agentTokensFor(options, options.tokens, () => this.bundles.policy);
    this.tokenSource = tokens?.source;
    this.tokenClient = tokens?.client;
    // Forwarded agent tokens are verified, and the agent's own token sent upstream, only with a token service.
    const agentTokenChecks: TokenCheck[] = tokens === undefined ? [] : [async (headers) => {
      const verdict = await tokens.verifier.verify(headers);
      return 'refuse' in verdict ? verdict : verdict.facts;
    }];
    // User tokens are verified with the agent's userTokens in the loaded bundle, token service or not.
    const { namespace, agent } = options.identity;
    const users = new UserTokens({ config: () => this.bundles.policy?.standing(namespace, agent)?.userTokens });
    const identityHooks = {
      verify: (headers: ReadonlyMap<string, string>): Promise<VerifiedFacts | { refuse: string }> => verifyForwardedTokens(headers, [...agentTokenChecks, (h) => users.verify(h)]),
      ...(tokens === undefined ? {} : { okHeaders: (headers: ReadonlyMap<string, string>): Record<string, string> => tokens.verifier.upstreamHeaders(headers) }),
    };
    const notReady = (): string | undefined => {
      if (this.draining) return 'the sidecar is shutting down';
      if (this.tokenSource !== undefined && this.tokenSource.current === undefined) return 'no agent token has been issued yet';
      return undefined;
    };
    // The tool table of the loaded bundle, so tool declarations change with it.
    const tools = (): ReturnType<typeof toolTableOf> => toolTableOf(this.bundles.policy);
    this.httpServer = createHttpServer({ authorizer: this.authorizer, registry: this.metrics.registry, notReady, verify: identityHooks.verify, tools });
    this.statusServer = options.status === undefined ? undefined : createStatusServer({ authorizer: this.authorizer, registry: this.metrics.registry, notReady });
    this.grpcServer = createGrpcServer({ authorizer: this.authorizer, tools, log: options.log, ...identityHooks, ...(options.sanitizeWithExtProc === true ? { sanitizeDownstream: true } : {}) });
    // ext_proc verifies forwarded tokens only for requests ext_authz did not decide (it reuses ext_authz's decision).
    addExternalProcessor(this.grpcServer, { authorizer: this.authorizer, tools, log: options.log, verify: identityHooks.verify });
    this.envoyHttpServer = options.envoyHttp === undefined ? undefined : createEnvoyHttpServer({ authorizer: this.authorizer, tools, log: options.log, ...identityHooks });
  }

  /** The bound ports (useful with port 0). */
  get boundPorts(): BoundPorts {
    if (this.ports === undefined) throw new Error('the sidecar has not started');
    return this.ports;
  }

  /**
   * Listens first, so /healthz answers and calls are denied (no bundle) while the
   * first bundle loads; then starts the watch, which loads it when it exists.
   */
  async start(): Promise<void> {
    const { http, grpc, envoyHttp, status } = this.options;
    const listen = (server: HttpServer, address: { host: string; port: number }): Promise<number> =>
      new Promise((resolve, reject) => {
        server.once('error', reject);
        server.listen(address.port, address.host, () => { resolve((server.address() as AddressInfo).port); });
      });
    const httpPort = await listen(this.httpServer, http);
    const grpcPort = await listenGrpc(this.grpcServer, `${grpc.host}:${grpc.port}`);
    const envoyHttpPort = this.envoyHttpServer === undefined || envoyHttp === undefined ? undefined : await listen(this.envoyHttpServer, envoyHttp);
    const statusPort = this.statusServer === undefined || status === undefined ? undefined : await listen(this.statusServer, status);
    this.ports = { http: httpPort, grpc: grpcPort, ...(envoyHttpPort === undefined ? {} : { envoyHttp: envoyHttpPort }), ...(statusPort === undefined ? {} : { status: statusPort }) };
    // Retries on its own until the token service answers; calls are refused until then.
    void this.tokenSource?.start();
    await this.bundles.start();
  }

  /**
   * Shuts down as a sidecar must: first reports not ready and keeps deciding for
   * `delayMs` (Envoy in the same pod drains its connections meanwhile and still
   * asks), then stops taking calls, lets those in flight finish (up to
   * `graceMs`), and stops.
   */
  async shutdown(delayMs: number, graceMs = 5_000): Promise<void> {
    this.draining = true;
    await new Promise((resolve) => setTimeout(resolve, delayMs));
    await this.stop(graceMs);
  }

  /** Stops taking calls, waits up to `graceMs` for those in flight, then closes everything. */
  async stop(graceMs = 0): Promise<void> {
    this.draining = true;
    this.tokenSource?.stop();
    const grpcDone = new Promise<void>((resolve) => {
      this.grpcServer.tryShutdown(() => { resolve(); });
    });
    const httpServers = [this.httpServer, this.envoyHttpServer, this.statusServer];
    const httpDone = httpServers.flatMap((server) => {
      if (server === undefined) return [];
      const closed = new Promise<void>((resolve) => { server.close(() => { resolve(); }); });
      server.closeIdleConnections();
      return [closed];
    });
    const graceOver = new Promise<'timeout'>((resolve) => { setTimeout(() => { resolve('timeout'); }, graceMs).unref(); });
    if ((await Promise.race([Promise.all([grpcDone, ...httpDone]), graceOver])) === 'timeout') {
      this.grpcServer.forceShutdown();
      for (const server of httpServers) server?.closeAllConnections();
      await Promise.all([grpcDone, ...httpDone]);
    }
    await this.bundles.stop();
    this.tokenClient?.close();
    this.kube.close();
    await this.counters.close();
  }

}
