// `portcullis operator`: flags, wiring and graceful shutdown.

import { hostname } from 'node:os';
import { parseArgs } from 'node:util';
import { CoreV1Api } from '@kubernetes/client-node';
import type { KubeConfig } from '@kubernetes/client-node';
import { PooledKubeConfig } from './kubeconfig.ts';
import { pino } from 'pino';
import { compileTenant } from '../compiler/compile.ts';
import { parseDuration } from '../compiler/durations.ts';
import { DEFAULT_LEASE_TIMINGS } from './leader.ts';
import { createOperatorMetrics } from './metrics.ts';
import { Operator } from './operator.ts';
import { startOpsServer } from './server.ts';
import { rotateKeyring } from './signing-keys.ts';
import { startTokenService } from '../identity/index.ts';

export const OPERATOR_USAGE = `Usage: portcullis operator [flags]

Reconciles AgentIdentity, ToolPolicy and EgressRule resources into signed
per-tenant bundles (ConfigMap portcullis-bundle) and writes their status.

Flags:
  --kubeconfig PATH          kubeconfig to use (default: in-cluster, else $KUBECONFIG / ~/.kube/config)
  --namespace NS             the operator's namespace: Lease and signing-key Secret (default: $POD_NAMESPACE or portcullis-system)
  --identity ID              this replica's leader-election identity (default: $POD_NAME or the host name)
  --ops-address HOST:PORT    /healthz, /readyz and /metrics (default 0.0.0.0:8080)
  --token-address HOST:PORT  agent token service: POST /v1/token, /.well-known/jwks.json (default 0.0.0.0:8443;
                             served by every replica; plain HTTP until it shares the webhook's TLS certificates)
  --lease-duration D         leader Lease duration (default 15s)
  --renew-deadline D         how long the leader tries to renew before stepping down (default 10s)
  --retry-period D           how often candidates try to take or renew the Lease (default 2s)
  --resync D                 reconcile every tenant this often even without changes (default 10m)
  --workers N                tenants reconciled at once (default 4)
  --signing-key-secret NAME  Secret holding the bundle signing keys (default portcullis-signing-keys)
  --rotate-signing-key       add a new active signing key to the Secret, print its id, and exit
  --log-level LEVEL          trace, debug, info, warn or error (default info)
`;

export class UsageError extends Error {
  override readonly name = 'UsageError';
}

function durationFlag(value: string | undefined, flag: string, fallbackMs: number): number {
  if (value === undefined) return fallbackMs;
  const ms = parseDuration(value);
  if (ms === undefined || ms <= 0) throw new UsageError(`--${flag}: ${JSON.stringify(value)} is not a positive duration such as 15s or 2m`);
  return ms;
}

function address(value: string, flag = 'ops-address'): { host: string; port: number } {
  const match = /^(.*):(\d{1,5})$/.exec(value);
  const port = Number(match?.[2]);
  if (!match || port > 65535) throw new UsageError(`--${flag}: ${JSON.stringify(value)} is not HOST:PORT`);
  return { host: match[1] === '' ? '0.0.0.0' : (match[1] ?? '0.0.0.0'), port };
}

function kubeConfigFrom(path: string | undefined): KubeConfig {
  const kc = new PooledKubeConfig();
  if (path !== undefined) kc.loadFromFile(path);
  else kc.loadFromDefault();
  if (!kc.getCurrentCluster()) throw new UsageError('no Kubernetes cluster configured: pass --kubeconfig, set KUBECONFIG, or run in a cluster');
  return kc;
}

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
      'lease-duration': { type: 'string' },
      'renew-deadline': { type: 'string' },
      'retry-period': { type: 'string' },
      resync: { type: 'string' },
      workers: { type: 'string' },
      'signing-key-secret': { type: 'string' },
      'rotate-signing-key': { type: 'boolean' },
      'log-level': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    process.stdout.write(OPERATOR_USAGE);
    return 0;
  }
  const levels = ['trace', 'debug', 'info', 'warn', 'error'];
  const level = values['log-level'] ?? 'info';
  if (!levels.includes(level)) throw new UsageError(`--log-level: ${JSON.stringify(level)} is not one of ${levels.join(', ')}`);
  const kubeConfig = kubeConfigFrom(values.kubeconfig);
  const namespace = values.namespace ?? process.env.POD_NAMESPACE ?? 'portcullis-system';
  const signingKeySecret = values['signing-key-secret'] ?? 'portcullis-signing-keys';
  if (values['rotate-signing-key']) {
    const keyId = await rotateKeyring(kubeConfig.makeApiClient(CoreV1Api), namespace, signingKeySecret);
    process.stdout.write(`${keyId}\n`);
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
  const ops = address(values['ops-address'] ?? '0.0.0.0:8080');
  const tokenAddress = address(values['token-address'] ?? '0.0.0.0:8443', 'token-address');
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
  const tokens = await startTokenService({ kubeConfig, namespace, ...tokenAddress, log: log.child({ component: 'token-service' }) });
  log.info({ identity, namespace, ops: `${ops.host}:${ops.port}`, tokens: tokens.url }, 'operator started');

  await new Promise<void>((resolve) => {
    const shutdown = (signal: string): void => {
      log.info({ signal }, 'shutting down; releasing the leader Lease');
      resolve();
    };
    process.once('SIGTERM', () => { shutdown('SIGTERM'); });
    process.once('SIGINT', () => { shutdown('SIGINT'); });
  });
  await tokens.stop();
  await operator.stop();
  server.close();
  log.flush();
  return 0;
}
