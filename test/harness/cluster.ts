// Helpers for tests that talk to the shared control plane.

import { KubeConfig } from '@kubernetes/client-node';
import type { ControlPlaneInfo } from './control-plane.ts';

export function kubeConfigOf(plane: Pick<ControlPlaneInfo, 'kubeconfig'>): KubeConfig {
  const kc = new KubeConfig();
  kc.loadFromFile(plane.kubeconfig);
  return kc;
}

/** Polls `check` until it returns a value other than undefined, or fails naming `what`. */
export async function eventually<T>(what: string, check: () => Promise<T | undefined> | T | undefined, timeoutMs = 20_000, intervalMs = 100): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  while (Date.now() < deadline) {
    try {
      const value = await check();
      if (value !== undefined) return value;
    } catch (error) {
      lastError = error;
    }
    await new Promise((r) => setTimeout(r, intervalMs));
  }
  const last = lastError instanceof Error ? `; last error: ${lastError.message}` : '';
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last}`);
}
