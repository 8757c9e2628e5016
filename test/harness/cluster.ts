// Helpers for tests that talk to the shared control plane.

import { spawn } from 'node:child_process';
import { appendFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { KubeConfig } from '@kubernetes/client-node';
import { PooledKubeConfig } from '../../src/operator/kubeconfig.ts';
import type { ControlPlaneInfo } from './control-plane.ts';

export function kubeConfigOf(plane: Pick<ControlPlaneInfo, 'kubeconfig'>): KubeConfig {
  const kc = new PooledKubeConfig();
  kc.loadFromFile(plane.kubeconfig);
  return kc;
}

/** A client configuration that authenticates with a bearer token (a ServiceAccount's). */
export function kubeConfigWithToken(plane: Pick<ControlPlaneInfo, 'server' | 'caCert'>, token: string): KubeConfig {
  const kc = new PooledKubeConfig();
  kc.loadFromOptions({
    clusters: [{ name: 'local', server: plane.server, caData: Buffer.from(plane.caCert).toString('base64'), skipTLSVerify: false }],
    users: [{ name: 'token', token }],
    contexts: [{ name: 'local', cluster: 'local', user: 'token' }],
    currentContext: 'local',
  });
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

/**
 * Starts a process the control plane's reaper also watches: it is recorded in
 * the run's pid file, so it dies with the run even if the run is killed.
 */
export async function spawnTracked(plane: Pick<ControlPlaneInfo, 'runDir'>, command: string, args: string[], env: NodeJS.ProcessEnv = {}): Promise<TrackedProcess> {
  const child = spawn(command, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  if (child.pid === undefined) throw new Error(`could not start ${command}`);
  await appendFile(join(plane.runDir, 'pids'), `${child.pid}\n`);
  let output = '';
  child.stdout.on('data', (d: Buffer) => { output += d.toString(); });
  child.stderr.on('data', (d: Buffer) => { output += d.toString(); });
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => { resolve(code); }));
  return {
    pid: child.pid,
    output: () => output,
    exited,
    kill: async (signal: NodeJS.Signals) => {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      await exited;
    },
  };
}

export interface TrackedProcess {
  pid: number;
  output: () => string;
  exited: Promise<number | null>;
  kill: (signal: NodeJS.Signals) => Promise<void>;
}
