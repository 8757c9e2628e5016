// `portcullis sidecar`: flags, wiring and graceful shutdown.
import { parseArgs } from 'node:util';
import { pino } from 'pino';
import { durationFlag, kubeConfigFrom, listenAddress, logLevel } from '../cli/flags.ts';
import { UsageError } from '../cli/io.ts';
import type { CounterStoreConfig } from './counters/index.ts';
import { counterStoreConfig } from './counters/index.ts';
import type { SidecarTokenOptions } from './sidecar.ts';
import { Sidecar } from './sidecar.ts';

export const SIDECAR_USAGE = `Usage: portcullis sidecar [flags]

Decides every tool call of one agent: loads the tenant's signed bundle from
the ConfigMap portcullis-bundle of its namespace (verified against
portcullis-trust; a bad bundle is refused and the last good one kept) and
answers Envoy ext_authz v3 over gRPC (and, with --envoy-http-address, in
Envoy's HTTP mode) and POST /v1/authorize over HTTP. The bundle's tool
declarations map proxied requests to tool and action.

The agent is the one named here, never the caller's word; time and counters
are the sidecar's own. With --token-service the sidecar holds the agent's
token (sent upstream on every allowed call in x-portcullis-agent-token) and
verifies a token forwarded in that header: its delegation chain becomes the
call's delegation. Without it, user and delegation are never set.

Flags:
  --agent NAME             the agent this sidecar answers for (default: $PORTCULLIS_AGENT)
  --namespace NS           the agent's namespace (default: $POD_NAMESPACE)
  --tenant NAME            the tenant whose bundle to accept (default: $PORTCULLIS_TENANT, else the namespace)
  --http-address HOST:PORT /v1/authorize, /healthz, /readyz, /metrics (default 127.0.0.1:8181)
  --grpc-address HOST:PORT Envoy ext_authz v3 gRPC (default 127.0.0.1:9191)
  --envoy-http-address HOST:PORT
                           Envoy ext_authz HTTP mode (http_service), on its own listener (default: off)
  --counters memory|redis  where rate limits, budgets and call windows are counted: memory (one replica)
                           or redis (shared by all replicas of the agent) (default: $PORTCULLIS_COUNTERS,
                           else redis when a Redis URL is given, else memory)
  --redis-url URL          redis://[user:password@]host:port[/db] or rediss:// (default: $PORTCULLIS_REDIS_URL)
  --token-service URL      the operator's token service (default: $PORTCULLIS_TOKEN_SERVICE; off when unset)
  --token-issuer ISS       the issuer agent tokens must name (default: the token service URL)
  --service-account-token PATH
                           the pod's projected ServiceAccount token, audience portcullis
                           (default /var/run/secrets/portcullis.dev/token)
  --shutdown-delay DURATION
                           on SIGTERM, keep deciding (not ready) this long while Envoy drains (default 5s)
  --kubeconfig PATH        kubeconfig to use (default: in-cluster, else $KUBECONFIG / ~/.kube/config)
  --log-level LEVEL        trace, debug, info, warn or error (default info)
`;

function tokenOptions(service: string | undefined, issuer: string | undefined, path: string | undefined): SidecarTokenOptions | undefined {
  if (service === undefined || service === '') {
    if (issuer !== undefined) throw new UsageError('--token-issuer needs --token-service');
    return undefined;
  }
  let url: URL;
  try {
    url = new URL(service);
  } catch {
    throw new UsageError(`--token-service: ${JSON.stringify(service)} is not a URL`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new UsageError(`--token-service: ${JSON.stringify(service)} is not an http or https URL`);
  return {
    service: url.toString().replace(/\/$/, ''),
    ...(issuer === undefined ? {} : { issuer }),
    serviceAccountTokenPath: path ?? '/var/run/secrets/portcullis.dev/token',
  };
}

function required(value: string | undefined, flag: string, env: string): string {
  if (value === undefined || value === '') throw new UsageError(`--${flag} (or $${env}) is required`);
  return value;
}

export async function sidecarCommand(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    strict: true,
    options: {
      agent: { type: 'string' },
      namespace: { type: 'string' },
      tenant: { type: 'string' },
      'http-address': { type: 'string' },
      'grpc-address': { type: 'string' },
      'envoy-http-address': { type: 'string' },
      counters: { type: 'string' },
      'redis-url': { type: 'string' },
      'token-service': { type: 'string' },
      'token-issuer': { type: 'string' },
      'service-account-token': { type: 'string' },
      'shutdown-delay': { type: 'string' },
      kubeconfig: { type: 'string' },
      'log-level': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    process.stdout.write(SIDECAR_USAGE);
    return 0;
  }
  const level = logLevel(values['log-level']);
  const agent = required(values.agent ?? process.env.PORTCULLIS_AGENT, 'agent', 'PORTCULLIS_AGENT');
  const namespace = required(values.namespace ?? process.env.POD_NAMESPACE, 'namespace', 'POD_NAMESPACE');
  const tenant = values.tenant ?? process.env.PORTCULLIS_TENANT ?? namespace;
  let counters: CounterStoreConfig;
  try {
    counters = counterStoreConfig(values.counters ?? process.env.PORTCULLIS_COUNTERS, values['redis-url'] ?? process.env.PORTCULLIS_REDIS_URL);
  } catch (error) {
    throw new UsageError(error instanceof Error ? error.message : String(error));
  }
  const tokens = tokenOptions(values['token-service'] ?? process.env.PORTCULLIS_TOKEN_SERVICE, values['token-issuer'], values['service-account-token']);
  const shutdownDelayMs = durationFlag(values['shutdown-delay'], 'shutdown-delay', 5_000);
  const log = pino({ level, base: { component: 'sidecar', tenant, namespace, agent } });
  const sidecar = new Sidecar({
    kubeConfig: kubeConfigFrom(values.kubeconfig),
    identity: { namespace, agent },
    tenant,
    http: listenAddress(values['http-address'] ?? '127.0.0.1:8181', 'http-address'),
    grpc: listenAddress(values['grpc-address'] ?? '127.0.0.1:9191', 'grpc-address'),
    ...(values['envoy-http-address'] === undefined ? {} : { envoyHttp: listenAddress(values['envoy-http-address'], 'envoy-http-address') }),
    counters,
    ...(tokens === undefined ? {} : { tokens }),
    ...(process.env.POD_NAME === undefined ? {} : { podName: process.env.POD_NAME }),
    log,
  });
  await sidecar.start();
  log.info({ ports: sidecar.boundPorts, counters: counters.kind, tokenService: tokens?.service ?? null }, 'sidecar started');
  await new Promise<void>((resolve) => {
    const shutdown = (signal: string): void => {
      log.info({ signal }, 'shutting down');
      resolve();
    };
    process.once('SIGTERM', () => { shutdown('SIGTERM'); });
    process.once('SIGINT', () => { shutdown('SIGINT'); });
  });
  await sidecar.shutdown(shutdownDelayMs);
  log.flush();
  return 0;
}
