// The sidecar assembled: the bundle watch, the decision core, and its two
// listeners (HTTP for /v1/authorize and operations, gRPC for Envoy ext_authz).
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
import { createGrpcServer, listenGrpc } from './grpc-server.ts';
import { createHttpServer } from './http-server.ts';
import type { SidecarMetrics } from './metrics.ts';
import { createSidecarMetrics } from './metrics.ts';
import type { ToolTable } from './tools.ts';

export interface SidecarOptions {
  kubeConfig: KubeConfig;
  identity: AgentIdentity;
  tenant: string;
  tools: ToolTable;
  http: { host: string; port: number };
  grpc: { host: string; port: number };
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
  private readonly options: SidecarOptions;
  private ports: { http: number; grpc: number } | undefined;

  constructor(options: SidecarOptions) {
    this.options = options;
    this.metrics = options.metrics ?? createSidecarMetrics();
    this.bundles = new BundleSource({ kubeConfig: options.kubeConfig, namespace: options.identity.namespace, tenant: options.tenant, log: options.log, metrics: this.metrics });
    this.counters = createCounterStore(options.counters ?? { kind: 'memory' }, { metrics: this.metrics, log: options.log });
    this.authorizer = new Authorizer({ identity: options.identity, tenant: options.tenant, policy: () => this.bundles.policy, metrics: this.metrics, counters: this.counters });
    this.httpServer = createHttpServer({ authorizer: this.authorizer, registry: this.metrics.registry });
    this.grpcServer = createGrpcServer({ authorizer: this.authorizer, tools: options.tools, log: options.log });
  }

  /** The bound ports (useful with port 0). */
  get boundPorts(): { http: number; grpc: number } {
    if (this.ports === undefined) throw new Error('the sidecar has not started');
    return this.ports;
  }

  /**
   * Listens first, so /healthz answers and calls are denied (no bundle) while the
   * first bundle loads; then starts the watch, which loads it when it exists.
   */
  async start(): Promise<void> {
    const { http, grpc } = this.options;
    await new Promise<void>((resolve, reject) => {
      this.httpServer.once('error', reject);
      this.httpServer.listen(http.port, http.host, () => { resolve(); });
    });
    const grpcPort = await listenGrpc(this.grpcServer, `${grpc.host}:${grpc.port}`);
    this.ports = { http: (this.httpServer.address() as AddressInfo).port, grpc: grpcPort };
    await this.bundles.start();
  }

  async stop(): Promise<void> {
    await this.bundles.stop();
    await this.counters.close();
    await new Promise<void>((resolve) => {
      this.grpcServer.tryShutdown(() => { resolve(); });
    });
    await new Promise<void>((resolve) => {
      this.httpServer.close(() => { resolve(); });
      this.httpServer.closeAllConnections();
    });
  }
}
