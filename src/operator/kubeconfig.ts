// @kubernetes/client-node 2.0 builds a new undici Agent for every request, so
// every call opens a new TLS connection (about 10 ms on loopback instead of
// about 4 ms). This KubeConfig hands every request the same dispatcher, so
// connections are pooled and kept alive.

import { KubeConfig } from '@kubernetes/client-node';
import type { RequestContext } from '@kubernetes/client-node';
import { UsageError } from '../cli/io.ts';

type Dispatcher = ReturnType<RequestContext['getDispatcher']>;

export class PooledKubeConfig extends KubeConfig {
  private readonly dispatchers = new Map<string, Dispatcher>();

  override async applySecurityAuthentication(context: RequestContext): Promise<void> {
    await super.applySecurityAuthentication(context);
    // One pool per cluster and user: switching contexts must not reuse another identity's connections.
    const key = JSON.stringify([this.getCurrentCluster()?.name, this.getCurrentUser()?.name]);
    const cached = this.dispatchers.get(key);
    if (cached !== undefined) {
      context.setDispatcher(cached);
      return;
    }
    this.dispatchers.set(key, context.getDispatcher());
  }
}

/** The kubeconfig at `path`, else in-cluster or $KUBECONFIG / ~/.kube/config; with pooled connections. */
export function kubeConfigFrom(path: string | undefined): KubeConfig {
  const kc = new PooledKubeConfig();
  if (path !== undefined) kc.loadFromFile(path);
  else kc.loadFromDefault();
  if (!kc.getCurrentCluster()) throw new UsageError('no Kubernetes cluster configured: pass --kubeconfig, set KUBECONFIG, or run in a cluster');
  return kc;
}
