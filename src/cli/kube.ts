// The cluster the cluster commands (status, why, suspend, resume) talk to,
// chosen as kubectl chooses it: --kubeconfig, else $KUBECONFIG (its files
// merged), else ~/.kube/config; --context, else the kubeconfig's current
// context; -n, else the context's namespace, else default. kubectl hands a
// plugin only the flags the user typed after its name, so these are read here.
import { KubeConfig } from '@kubernetes/client-node';
import type { Cluster, Context, User } from '@kubernetes/client-node';
import { existsSync } from 'node:fs';
import { homedir } from 'node:os';
import { delimiter, join } from 'node:path';
import type { CliIo } from './io.ts';
import { UsageError } from './io.ts';

/** Where the operator runs and keeps the trust, unless --operator-namespace says otherwise. */
export const DEFAULT_OPERATOR_NAMESPACE = 'portcullis-system';

/** The connection flags every cluster command takes, for parseArgs. */
export const CONNECTION_OPTIONS = {
  kubeconfig: { type: 'string' },
  context: { type: 'string' },
  namespace: { type: 'string', short: 'n' },
} as const;

export const CONNECTION_FLAGS = `  --kubeconfig FILE        the kubeconfig to use (default: $KUBECONFIG, else ~/.kube/config)
  --context NAME           the kubeconfig context to use (default: its current context)
  -n, --namespace NS       the namespace (default: the context's namespace, else default)`;

const SERVICE_ACCOUNT_TOKEN = '/var/run/secrets/kubernetes.io/serviceaccount/token';

/**
 * The files of $KUBECONFIG merged as kubectl merges them: a missing file is
 * skipped, the first file to name a cluster, user, context or the current
 * context wins. (The client's own merge refuses a name two files share.)
 */
function loadMerged(kubeConfig: KubeConfig, files: readonly string[]): void {
  const present = files.filter((file) => existsSync(file));
  if (present.length === 0) throw new ClusterError(`no kubeconfig: none of the files of KUBECONFIG exists (${files.join(delimiter)})`);
  const clusters = new Map<string, Cluster>();
  const users = new Map<string, User>();
  const contexts = new Map<string, Context>();
  let currentContext = '';
  for (const file of present) {
    const one = new KubeConfig();
    loadFile(one, file);
    for (const cluster of one.getClusters()) if (!clusters.has(cluster.name)) clusters.set(cluster.name, cluster);
    for (const user of one.getUsers()) if (!users.has(user.name)) users.set(user.name, user);
    for (const context of one.getContexts()) if (!contexts.has(context.name)) contexts.set(context.name, context);
    if (currentContext === '') currentContext = one.getCurrentContext();
  }
  kubeConfig.loadFromOptions({ clusters: [...clusters.values()], users: [...users.values()], contexts: [...contexts.values()], currentContext });
}

export interface ConnectionFlags {
  kubeconfig?: string | undefined;
  context?: string | undefined;
  namespace?: string | undefined;
}

export interface Connection {
  kubeConfig: KubeConfig;
  /** The context in use, named in messages. */
  context: string;
  /** -n, else the context's namespace, else default. */
  namespace: string;
  /** Whether the namespace was named with -n rather than taken from the context. */
  namespaceGiven: boolean;
}

/** A kubeconfig file, loaded; one that is not a kubeconfig is a ClusterError naming it (a file that cannot be read stays a file error). */
function loadFile(kubeConfig: KubeConfig, file: string): void {
  try {
    kubeConfig.loadFromFile(file);
  } catch (error) {
    if (typeof (error as NodeJS.ErrnoException | null)?.syscall === 'string') throw error;
    throw new ClusterError(`${file} is not a kubeconfig: ${error instanceof Error ? error.message.split('\n')[0] ?? '' : String(error)}`);
  }
}

/** The kubeconfig, context and namespace the flags and environment select. */
export function connect(flags: ConnectionFlags, env: NodeJS.ProcessEnv = process.env): Connection {
  const kubeConfig = new KubeConfig();
  const home = env.HOME ?? homedir();
  if (flags.kubeconfig !== undefined) {
    loadFile(kubeConfig, flags.kubeconfig);
  } else if ((env.KUBECONFIG ?? '') !== '') {
    loadMerged(kubeConfig, (env.KUBECONFIG ?? '').split(delimiter).filter((file) => file !== ''));
  } else if (existsSync(join(home, '.kube', 'config'))) {
    loadFile(kubeConfig, join(home, '.kube', 'config'));
  } else if (existsSync(SERVICE_ACCOUNT_TOKEN)) {
    kubeConfig.loadFromCluster();
  } else {
    // Never the client's fallback, an unauthenticated http://localhost:8080.
    throw new ClusterError(`no kubeconfig: pass --kubeconfig FILE or set KUBECONFIG (${join(home, '.kube', 'config')} does not exist)`);
  }
  if (flags.context !== undefined) {
    if (kubeConfig.getContextObject(flags.context) === null) {
      const known = kubeConfig.getContexts().map((c) => c.name);
      throw new UsageError(`--context ${flags.context}: no such context in the kubeconfig (it has: ${known.length === 0 ? 'none' : known.join(', ')})`);
    }
    kubeConfig.setCurrentContext(flags.context);
  }
  // A kubeconfig without current-context leaves it undefined, whatever its type says.
  const context = (kubeConfig.getCurrentContext() as string | undefined) ?? '';
  if (kubeConfig.getCurrentCluster() === null) {
    throw new ClusterError(`no cluster configured${context === '' ? ' (the kubeconfig names no current context)' : ` for context ${context}`}: pass --kubeconfig FILE or --context NAME, or set KUBECONFIG`);
  }
  const fromContext = kubeConfig.getContextObject(context)?.namespace;
  const namespace = flags.namespace ?? (fromContext !== undefined && fromContext !== '' ? fromContext : 'default');
  return { kubeConfig, context, namespace, namespaceGiven: flags.namespace !== undefined };
}

/** A request the API server refused or that could not reach it: the message says what was asked and why. */
export class ClusterError extends Error {
  override readonly name = 'ClusterError';
}

/** The HTTP status of a failed client call, when the API server answered. */
export function statusOf(error: unknown): number | undefined {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === 'number' ? code : undefined;
}

/** The API server's own message of a failed call (its Status body), else the error's. */
function messageOf(error: unknown): string {
  const body = (error as { body?: unknown } | null)?.body;
  if (typeof body === 'string') {
    try {
      const status = JSON.parse(body) as { message?: unknown };
      if (typeof status.message === 'string') return status.message;
    } catch {
      // Not a Status: the body as it came.
      return body;
    }
  }
  if (body !== null && typeof body === 'object' && typeof (body as { message?: unknown }).message === 'string') return (body as { message: string }).message;
  return error instanceof Error ? error.message : String(error);
}

/** Runs one API call; a failure becomes a ClusterError that names `what` was asked of which context. */
export async function ask<T>(connection: Pick<Connection, 'context'>, what: string, call: () => Promise<T>): Promise<T> {
  try {
    return await call();
  } catch (error) {
    const status = statusOf(error);
    const why = status === undefined ? messageOf(error) : `${String(status)} ${messageOf(error)}`;
    throw new ClusterError(`cannot ${what} (context ${connection.context === '' ? '(none)' : connection.context}): ${why}`);
  }
}

/** Runs one API call; undefined when the object is not there (404). */
export async function askOptional<T>(connection: Pick<Connection, 'context'>, what: string, call: () => Promise<T>): Promise<T | undefined> {
  try {
    return await call();
  } catch (error) {
    if (statusOf(error) === 404) return undefined;
    return ask(connection, what, () => Promise.reject(error as Error));
  }
}

/** Runs a cluster command; a ClusterError is printed as what it is and exits 1. */
export async function withClusterErrors(io: Pick<CliIo, 'stderr'>, command: () => Promise<number>): Promise<number> {
  try {
    return await command();
  } catch (error) {
    if (!(error instanceof ClusterError)) throw error;
    io.stderr(`portcullis: ${error.message}\n`);
    return 1;
  }
}
