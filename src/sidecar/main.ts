// `portcullis sidecar`: flags, wiring and graceful shutdown.
import { readFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import type { Logger } from 'pino';
import { pino } from 'pino';
import type { ChainSigner } from '../audit/index.ts';
import { AuditKeyError, AuditLog, DEFAULT_CHECKPOINT_INTERVAL_MS, DEFAULT_CHECKPOINT_RECORDS, loadSigner } from '../audit/index.ts';
import { durationFlag, listenAddress, logLevel } from '../cli/flags.ts';
import { UsageError } from '../cli/io.ts';
import type { CounterStoreConfig } from './counters/index.ts';
import { counterStoreConfig, redisLoginOf } from './counters/index.ts';
import type { ApiConnection } from './kube-config.ts';
import { KubeConfigError, loadApiConnection, localFiles } from './kube-config.ts';
import type { TokenServiceConfigProblem, TokenServiceEndpoint } from '../identity/token-service-client.ts';
import { TokenServiceConfigError, tokenServiceEndpoint } from '../identity/token-service-client.ts';
import type { SidecarOptions, SidecarTokenOptions } from './sidecar.ts';
import { Sidecar } from './sidecar.ts';
import type { Telemetry } from './telemetry.ts';

export const SIDECAR_USAGE = `Usage: portcullis sidecar [flags]

Decides every tool call of one agent: loads the tenant's signed bundle from
the ConfigMap portcullis-bundle of its namespace, verified against the keys in
the ConfigMap portcullis-trust of the operator's namespace (--trust-namespace),
which the tenant cannot write. A bad bundle is refused and the last good one
kept; a loaded bundle whose key the trust drops is unloaded. It
answers Envoy ext_authz v3 over gRPC (and, with --envoy-http-address, in
Envoy's HTTP mode) and POST /v1/authorize over HTTP. The bundle's tool
declarations map proxied requests to tool and action.

The agent is the one named here, never the caller's word; time and counters
are the sidecar's own. With --token-service the sidecar holds the agent's
token (sent upstream in x-portcullis-agent-token with calls decided as a
declared tool's, never on egress or CONNECT) and
verifies a token forwarded in that header: its delegation chain becomes the
call's delegation; without it, delegation is never set. A user token forwarded
in x-portcullis-user-token is verified against the agent's
AgentIdentity spec.userTokens and becomes the call's user (removed before the
request goes upstream); one that does not verify denies the call. Without a
user token the call has no user. A read-only action the bundle declares
failOpen goes through unchecked when the counters or the evaluation fail;
every other call fails closed, all of them while no bundle is loaded.

Flags:
  --agent NAME             the agent this sidecar answers for (default: $PORTCULLIS_AGENT)
  --namespace NS           the agent's namespace (default: $POD_NAMESPACE)
  --tenant NAME            the tenant whose bundle to accept (default: $PORTCULLIS_TENANT, else the namespace)
  --trust-namespace NS     the operator's namespace, whose ConfigMap portcullis-trust holds the bundle keys
                           (default: $PORTCULLIS_TRUST_NAMESPACE, else portcullis-system)
  --http-address HOST:PORT /v1/authorize, /healthz, /readyz, /metrics (default 127.0.0.1:8181); whoever
                           reaches it decides as this agent and spends its limits: keep it on loopback
  --status-address HOST:PORT
                           GET or HEAD of /healthz, /readyz and /metrics only, for the kubelet's probes and
                           Prometheus on the pod's address (default: off)
  --grpc-address HOST:PORT Envoy ext_authz v3 and ext_proc v3 gRPC (default 127.0.0.1:9191)
  --sanitize-with-ext-proc Envoy runs ext_proc after ext_authz: let sanitize decisions through ext_authz
                           for ext_proc to rewrite the body (otherwise they are denied)
  --envoy-http-address HOST:PORT
                           Envoy ext_authz HTTP mode (http_service), on its own listener (default: off)
  --counters memory|redis  where rate limits, budgets and call windows are counted: memory (one replica)
                           or redis (shared by all replicas of the agent) (default: $PORTCULLIS_COUNTERS,
                           else redis when a Redis URL is given, else memory)
  --redis-url URL          redis://host:port[/db] or rediss://, with no credentials (default: $PORTCULLIS_REDIS_URL)
  --redis-password-file FILE
                           the password of the agent's own Redis ACL user, portcullis/TENANT/NAMESPACE/AGENT
                           (default: $PORTCULLIS_REDIS_PASSWORD_FILE; without it: Redis' default user)
  --token-service URL      the operator's token service, https (default: $PORTCULLIS_TOKEN_SERVICE; off when unset)
  --token-service-ca FILE  the PEM CA (or CAs) of the token service's certificate, the only ones trusted for it
                           (default: the PEM in $PORTCULLIS_TOKEN_SERVICE_CA, which injection sets)
  --allow-http-token-service
                           development only: accept an http:// token service, to which the pod's
                           ServiceAccount token is then sent in clear
  --token-issuer ISS       the issuer agent tokens must name (default: the token service URL)
  --service-account-token PATH
                           the pod's projected ServiceAccount token, audience portcullis
                           (default /var/run/secrets/portcullis.dev/token)
  --shutdown-delay DURATION
                           on SIGTERM, keep deciding (not ready) this long while Envoy drains (default 5s)
  --audit-file PATH        also append the audit entries to this file, fsynced at every checkpoint
                           (default: standard output only)
  --audit-key FILE         the Ed25519 key audit checkpoints are signed with (PKCS #8 PEM or JWK;
                           portcullis audit keygen); without it an ephemeral key, with a warning
  --audit-checkpoint-records N
                           sign the audit chain after N entries (default 1000)
  --audit-checkpoint-interval DURATION
                           ...or when entries have waited this long (default 10s)
  --kubeconfig PATH        kubeconfig to use (default: in-cluster, else $KUBECONFIG / ~/.kube/config)
  --log-level LEVEL        trace, debug, info, warn or error (default info)

Every decision is an audit entry on standard output (docs/audit.md). With
OTEL_EXPORTER_OTLP_ENDPOINT (or OTEL_TRACES_EXPORTER=otlp) set, every decision
is also an OpenTelemetry span, configured by the standard OTEL_* variables.
`;

interface TokenFlags {
  service: string | undefined;
  issuer: string | undefined;
  serviceAccountToken: string | undefined;
  /** The CA's PEM, read from --token-service-ca or taken from $PORTCULLIS_TOKEN_SERVICE_CA. */
  ca: string | undefined;
  /** --token-service-ca, when given. */
  caFile: string | undefined;
  allowPlainHttp: boolean;
}

/** Which flag to change, by what is wrong with the token service's settings. */
const TOKEN_SERVICE_HINTS: Record<TokenServiceConfigProblem, string> = {
  url_invalid: '',
  plain_http: ' (--allow-http-token-service)',
  ca_missing: ' (--token-service-ca or $PORTCULLIS_TOKEN_SERVICE_CA)',
  ca_invalid: ' (--token-service-ca or $PORTCULLIS_TOKEN_SERVICE_CA)',
};

function tokenOptions(flags: TokenFlags): SidecarTokenOptions | undefined {
  const { service, issuer } = flags;
  if (service === undefined || service === '') {
    if (issuer !== undefined) throw new UsageError('--token-issuer needs --token-service');
    if (flags.caFile !== undefined) throw new UsageError('--token-service-ca needs --token-service');
    if (flags.allowPlainHttp) throw new UsageError('--allow-http-token-service needs --token-service');
    return undefined;
  }
  let endpoint: TokenServiceEndpoint;
  try {
    endpoint = tokenServiceEndpoint(service, { ...(flags.ca === undefined ? {} : { ca: flags.ca }), allowPlainHttp: flags.allowPlainHttp });
  } catch (error) {
    if (!(error instanceof TokenServiceConfigError)) throw error;
    throw new UsageError(`--token-service: ${error.message}${TOKEN_SERVICE_HINTS[error.problem]}`);
  }
  return {
    endpoint,
    ...(issuer === undefined ? {} : { issuer }),
    serviceAccountTokenPath: flags.serviceAccountToken ?? '/var/run/secrets/portcullis.dev/token',
  };
}

/** The token service's settings from the flags and the environment. */
async function tokensFrom(values: Partial<Record<'token-service' | 'token-issuer' | 'service-account-token' | 'token-service-ca', string>> & { 'allow-http-token-service'?: boolean }): Promise<SidecarTokenOptions | undefined> {
  return tokenOptions({
    service: values['token-service'] ?? process.env.PORTCULLIS_TOKEN_SERVICE,
    issuer: values['token-issuer'],
    serviceAccountToken: values['service-account-token'],
    ca: await tokenServiceCa(values['token-service-ca'], process.env.PORTCULLIS_TOKEN_SERVICE_CA),
    caFile: values['token-service-ca'],
    allowPlainHttp: values['allow-http-token-service'] === true,
  });
}

type Listeners = Pick<SidecarOptions, 'http' | 'grpc' | 'envoyHttp' | 'status'>;

/** Where the sidecar listens: decisions on loopback unless told otherwise; Envoy's HTTP mode and the status listener only when asked for. */
function listenersFrom(values: Partial<Record<'http-address' | 'grpc-address' | 'envoy-http-address' | 'status-address', string>>): Listeners {
  const optional = (flag: 'envoy-http-address' | 'status-address'): { host: string; port: number } | undefined => {
    const value = values[flag];
    return value === undefined ? undefined : listenAddress(value, flag);
  };
  const envoyHttp = optional('envoy-http-address');
  const status = optional('status-address');
  return {
    http: listenAddress(values['http-address'] ?? '127.0.0.1:8181', 'http-address'),
    grpc: listenAddress(values['grpc-address'] ?? '127.0.0.1:9191', 'grpc-address'),
    ...(envoyHttp === undefined ? {} : { envoyHttp }),
    ...(status === undefined ? {} : { status }),
  };
}

/** The token service's CA: the file named by the flag, else the PEM in the environment. */
async function tokenServiceCa(file: string | undefined, env: string | undefined): Promise<string | undefined> {
  if (file === undefined) return env === undefined || env === '' ? undefined : env;
  try {
    return await readFile(file, 'utf8');
  } catch (error) {
    throw new UsageError(`--token-service-ca: ${file} cannot be read (${(error as NodeJS.ErrnoException).code ?? String(error)})`);
  }
}

function positiveInteger(value: string | undefined, flag: string, fallback: number): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!Number.isSafeInteger(n) || n < 1) throw new UsageError(`--${flag}: ${JSON.stringify(value)} is not a whole number >= 1`);
  return n;
}

async function auditSigner(path: string | undefined): Promise<ChainSigner | undefined> {
  if (path === undefined) return undefined;
  try {
    return await loadSigner(path);
  } catch (error) {
    if (error instanceof AuditKeyError) throw new UsageError(`--audit-key ${error.message}`);
    throw error;
  }
}

/** The variables without which telemetry.ts's tracingConfig is off whatever the others say. */
const TRACING_VARIABLES = ['OTEL_TRACES_EXPORTER', 'OTEL_EXPORTER_OTLP_TRACES_ENDPOINT', 'OTEL_EXPORTER_OTLP_ENDPOINT'];

/** Whether the OTEL_* variables may turn tracing on (telemetry.ts then decides). */
export function tracingRequested(env: Readonly<Record<string, string | undefined>>): boolean {
  return TRACING_VARIABLES.some((name) => (env[name]?.trim() ?? '') !== '');
}

/**
 * Tracing as the OTEL_* variables configure it. The OpenTelemetry SDK (about
 * 3 MB of heap) is loaded only when they may ask for it.
 */
async function telemetryFrom(log: Logger): Promise<Telemetry> {
  if (!tracingRequested(process.env)) return { observers: [], shutdown: () => Promise.resolve() };
  const { startTelemetry, TelemetryConfigError } = await import('./telemetry.ts');
  try {
    return startTelemetry({ log });
  } catch (error) {
    if (error instanceof TelemetryConfigError) throw new UsageError(error.message);
    throw error;
  }
}

interface CountersFlags {
  kind: string | undefined;
  redisUrl: string | undefined;
  redisPasswordFile: string | undefined;
}

/** The counter store; the Redis password is read from its file, so it never stands in the pod's spec. */
async function countersFrom(flags: CountersFlags, scope: { tenant: string; namespace: string; agent: string }): Promise<CounterStoreConfig> {
  const file = flags.redisPasswordFile === '' ? undefined : flags.redisPasswordFile;
  let content: string | undefined;
  if (file !== undefined) {
    try {
      content = await readFile(file, 'utf8');
    } catch (error) {
      throw new UsageError(`--redis-password-file: ${file} cannot be read (${(error as NodeJS.ErrnoException).code ?? String(error)})`);
    }
  }
  try {
    return counterStoreConfig(flags.kind, flags.redisUrl, file === undefined || content === undefined ? undefined : redisLoginOf(scope, content, file));
  } catch (error) {
    throw new UsageError(error instanceof Error ? error.message : String(error));
  }
}

async function apiConnectionFrom(kubeconfig: string | undefined): Promise<ApiConnection> {
  try {
    return await loadApiConnection(kubeconfig, process.env, localFiles);
  } catch (error) {
    if (error instanceof KubeConfigError) throw new UsageError(`--kubeconfig: ${error.message}`);
    throw error;
  }
}

/** Where config/ installs the operator. */
const DEFAULT_TRUST_NAMESPACE = 'portcullis-system';

function required(value: string | undefined, flag: string, env: string): string {
  if (value === undefined || value === '') throw new UsageError(`--${flag} (or $${env}) is required`);
  return value;
}

/** The pod the sidecar runs in, as the downward API tells it (POD_NAME, POD_UID); nothing outside a pod. */
export function podFrom(env: Readonly<Record<string, string | undefined>>): { podName?: string; podUid?: string } {
  const { POD_NAME: podName, POD_UID: podUid } = env;
  return { ...(podName === undefined ? {} : { podName }), ...(podUid === undefined ? {} : { podUid }) };
}

export async function sidecarCommand(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    strict: true,
    options: {
      agent: { type: 'string' },
      namespace: { type: 'string' },
      tenant: { type: 'string' },
      'trust-namespace': { type: 'string' },
      'http-address': { type: 'string' },
      'grpc-address': { type: 'string' },
      'envoy-http-address': { type: 'string' },
      counters: { type: 'string' },
      'redis-url': { type: 'string' },
      'redis-password-file': { type: 'string' },
      'token-service': { type: 'string' },
      'token-issuer': { type: 'string' },
      'token-service-ca': { type: 'string' },
      'allow-http-token-service': { type: 'boolean' },
      'status-address': { type: 'string' },
      'service-account-token': { type: 'string' },
      'shutdown-delay': { type: 'string' },
      'sanitize-with-ext-proc': { type: 'boolean' },
      'audit-file': { type: 'string' },
      'audit-key': { type: 'string' },
      'audit-checkpoint-records': { type: 'string' },
      'audit-checkpoint-interval': { type: 'string' },
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
  const trustNamespace = values['trust-namespace'] ?? process.env.PORTCULLIS_TRUST_NAMESPACE ?? DEFAULT_TRUST_NAMESPACE;
  // The agent's tenant writes ConfigMaps there: keys read from it would let the tenant sign its own bundles.
  if (trustNamespace === namespace) throw new UsageError(`--trust-namespace ${trustNamespace} is the agent's own namespace: the trust must live where its tenant cannot write (the operator's namespace)`);
  const counters = await countersFrom({
    kind: values.counters ?? process.env.PORTCULLIS_COUNTERS,
    redisUrl: values['redis-url'] ?? process.env.PORTCULLIS_REDIS_URL,
    redisPasswordFile: values['redis-password-file'] ?? process.env.PORTCULLIS_REDIS_PASSWORD_FILE,
  }, { tenant, namespace, agent });
  const tokens = await tokensFrom(values);
  const shutdownDelayMs = durationFlag(values['shutdown-delay'], 'shutdown-delay', 5_000);
  const checkpointRecords = positiveInteger(values['audit-checkpoint-records'], 'audit-checkpoint-records', DEFAULT_CHECKPOINT_RECORDS);
  const checkpointIntervalMs = durationFlag(values['audit-checkpoint-interval'], 'audit-checkpoint-interval', DEFAULT_CHECKPOINT_INTERVAL_MS);
  const signer = await auditSigner(values['audit-key']);
  const kubernetes = await apiConnectionFrom(values.kubeconfig);
  // One writer on standard output for log and audit lines, so they never interleave.
  const stdout = pino.destination({ dest: 1, sync: false });
  const log = pino({ level, base: { component: 'sidecar', tenant, namespace, agent } }, stdout);
  const telemetry = await telemetryFrom(log);
  const audit = await AuditLog.open({
    tenant,
    namespace,
    agent,
    ...(signer === undefined ? {} : { signer }),
    stream: stdout,
    ...(values['audit-file'] === undefined ? {} : { file: values['audit-file'] }),
    checkpointRecords,
    checkpointIntervalMs,
    log,
  });
  const sidecar = new Sidecar({
    kubernetes,
    trustNamespace,
    identity: { namespace, agent },
    tenant,
    ...listenersFrom(values),
    counters,
    ...(tokens === undefined ? {} : { tokens }),
    ...(values['sanitize-with-ext-proc'] === true ? { sanitizeWithExtProc: true } : {}),
    ...podFrom(process.env),
    log,
  });
  for (const observer of [audit.observer, ...telemetry.observers]) sidecar.authorizer.observe(observer);
  await sidecar.start();
  log.info({ ports: sidecar.boundPorts, counters: counters.kind, tokenService: tokens?.endpoint.url ?? null }, 'sidecar started');
  await new Promise<void>((resolve) => {
    const shutdown = (signal: string): void => {
      log.info({ signal }, 'shutting down');
      resolve();
    };
    process.once('SIGTERM', () => { shutdown('SIGTERM'); });
    process.once('SIGINT', () => { shutdown('SIGINT'); });
  });
  await sidecar.shutdown(shutdownDelayMs);
  // After the listeners: every decision made is recorded, then the chain is closed and signed.
  await audit.close();
  await telemetry.shutdown();
  log.flush();
  return 0;
}
