// The sidecar assembled: the bundle watch, the decision core, and its
// listeners (HTTP for /v1/authorize and operations, gRPC for Envoy ext_authz
// and ext_proc, and optionally HTTP for Envoy ext_authz's HTTP mode).
import type { Server as GrpcServer } from '@grpc/grpc-js';
import type { KubeConfig } from '@kubernetes/client-node';
import type { Server as HttpServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Logger } from 'pino';
import type { AgentIdentity } from './authorizer.ts';
import { Authorizer } from './authorizer.ts';
import { BundleSource } from './bundle-source.ts';
import type { CounterStoreConfig, CountingStore } from './counters/index.ts';
import { createCounterStore } from './counters/index.ts';
import { createEnvoyHttpServer } from './envoy-http.ts';
import { addExternalProcessor } from './ext-proc.ts';
import { createGrpcServer, listenGrpc } from './grpc-server.ts';
import { createHttpServer } from './http-server.ts';
import type { SidecarMetrics } from './metrics.ts';
import { createSidecarMetrics } from './metrics.ts';
import { toolTableOf } from './tools.ts';

export interface SidecarOptions {
  kubeConfig: KubeConfig;
  identity: AgentIdentity;
  tenant: string;
  http: { host: string; port: number };
  grpc: { host: string; port: number };
  /** Envoy ext_authz HTTP mode: off unless given. */
  envoyHttp?: { host: string; port: number };
  log: Logger;
  metrics?: SidecarMetrics;
  /** Where rateLimits, budgets and callsOver are counted: in memory unless given. */
  counters?: CounterStoreConfig;
}

export class Sidecar {
  readonly metrics: SidecarMetrics;
  readonly authorizer: Authorizer;
  readonly counters: CountingStore;
  private readonly bundles: BundleSource;
  private readonly httpServer: HttpServer;
  private readonly grpcServer: GrpcServer;
  private readonly envoyHttpServer: HttpServer | undefined;
  private readonly options: SidecarOptions;
  private ports: { http: number; grpc: number; envoyHttp?: number } | undefined;

  constructor(options: SidecarOptions) {
    this.options = options;
    this.metrics = options.metrics ?? createSidecarMetrics();
    this.bundles = new BundleSource({ kubeConfig: options.kubeConfig, namespace: options.identity.namespace, tenant: options.tenant, log: options.log, metrics: this.metrics });
    this.counters = createCounterStore(options.counters ?? { kind: 'memory' }, { metrics: this.metrics, log: options.log });
    this.authorizer = new Authorizer({ identity: options.identity, tenant: options.tenant, policy: () => this.bundles.policy, metrics: this.metrics, counters: this.counters });
    this.httpServer = createHttpServer({ authorizer: this.authorizer, registry: this.metrics.registry });
    // The tool table of the loaded bundle, so tool declarations change with it.
    const tools = (): ReturnType<typeof toolTableOf> => toolTableOf(this.bundles.policy);
    this.grpcServer = createGrpcServer({ authorizer: this.authorizer, tools, log: options.log });
    addExternalProcessor(this.grpcServer, { authorizer: this.authorizer, tools, log: options.log });
    this.envoyHttpServer = options.envoyHttp === undefined ? undefined : createEnvoyHttpServer({ authorizer: this.authorizer, tools, log: options.log });
  }

  /** The bound ports (useful with port 0). */
  get boundPorts(): { http: number; grpc: number; envoyHttp?: number } {
    if (this.ports === undefined) throw new Error('the sidecar has not started');
    return this.ports;
  }

  /**
   * Listens first, so /healthz answers and calls are denied (no bundle) while the
   * first bundle loads; then starts the watch, which loads it when it exists.
   */
  async start(): Promise<void> {
    const { http, grpc, envoyHttp } = this.options;
    const listen = (server: HttpServer, address: { host: string; port: number }): Promise<number> =>
      new Promise((resolve, reject) => {
        server.once('error', reject);
        server.listen(address.port, address.host, () => { resolve((server.address() as AddressInfo).port); });
      });
    const httpPort = await listen(this.httpServer, http);
    const grpcPort = await listenGrpc(this.grpcServer, `${grpc.host}:${grpc.port}`);
    const envoyHttpPort = this.envoyHttpServer === undefined || envoyHttp === undefined ? undefined : await listen(this.envoyHttpServer, envoyHttp);
    this.ports = { http: httpPort, grpc: grpcPort, ...(envoyHttpPort === undefined ? {} : { envoyHttp: envoyHttpPort }) };
    await this.bundles.start();
  }

  async stop(): Promise<void> {
    await this.bundles.stop();
    await this.counters.close();
    await new Promise<void>((resolve) => {
      this.grpcServer.tryShutdown(() => { resolve(); });
    });
    for (const server of [this.httpServer, this.envoyHttpServer]) {
      if (server === undefined) continue;
      await new Promise<void>((resolve) => {
        server.close(() => { resolve(); });
        server.closeAllConnections();
      });
    }
  }
}
