// Attacks from the pod network, against the real `portcullis sidecar` spawned with the listeners
// the webhook injects (the addresses of the injected container, on free ports) and the real token
// service: another pod asking the sidecar for decisions as its agent (spending its limits), the
// probes and Prometheus on the pod's address, and a man in the middle between the sidecar and the
// token service, and plain HTTP to the token service.
import { execFile } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { X509Certificate } from 'node:crypto';
import { request as plainRequest } from 'node:http';
import type { Server } from 'node:https';
import { createServer } from 'node:https';
import { connect } from 'node:net';
import type { AddressInfo } from 'node:net';
import { networkInterfaces } from 'node:os';
import { connect as tlsConnect } from 'node:tls';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { V1Container } from '@kubernetes/client-node';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { stringify } from 'yaml';
import type { RunningTokenService } from '../../src/identity/index.ts';
import { startTokenService, TokenServiceClient, tokenServiceEndpoint } from '../../src/identity/index.ts';
import type { Operator } from '../../src/operator/operator.ts';
import { tokenEndpoint } from '../../src/operator/main.ts';
import { createCertificateAuthority } from '../../src/webhook/certs.ts';
import { AUTHZ_CONTAINER, inject as injectPod, TOKEN_SERVICE_CA_ENV } from '../../src/webhook/inject.ts';
import type { TrackedProcess } from '../harness/cluster.ts';
import { eventually, kubeConfigOf, spawnTracked } from '../harness/cluster.ts';
import { ensureNamespace, freePort, kubectl, REPO_ROOT } from '../harness/control-plane.ts';
import { agentKubeconfigFile, startScopedOperator } from '../harness/local-parts.ts';

const execFileAsync = promisify(execFile);
const plane = inject('controlPlane');
const OPERATOR_NS = 'apn-system';
const NS = 'apn-finance';
const AGENT = 'finance-agent';
const POD = 'finance-agent-0';
const portcullis = join(REPO_ROOT, 'bin', 'portcullis.js');
const serviceAccountTokenFile = join(plane.runDir, 'apn-finance-agent.token');

/** This machine's address on its network, standing for the pod's address (which the kubelet and other pods reach). */
const podAddress = Object.values(networkInterfaces()).flat().find((a) => a?.family === 'IPv4' && !a.internal)?.address;

let operator: Operator;
let tokens: RunningTokenService;
let sidecar: TrackedProcess;
let kubeconfig = '';
let injected: V1Container;
const ports = { http: 0, grpc: 0, status: 0 };

const call = { tool: 'stripe-payments', action: 'create_payment', params: { amount: 4200, currency: 'USD', account: '1234567890' } };

/** A ServiceAccount token of the agent bound to its pod, audience portcullis, as the pod's projected token. */
async function podToken(): Promise<string> {
  return (await kubectl(plane, ['create', 'token', AGENT, '-n', NS, '--audience', 'portcullis', '--duration', '1h', '--bound-object-kind', 'Pod', '--bound-object-name', POD])).stdout.trim();
}

/** POST /v1/authorize at an address; the answer's status and decision, or the connection's error code. */
async function authorizeAt(host: string, port: number): Promise<{ status: number; decision?: string } | { refused: string }> {
  try {
    const res = await fetch(`http://${host}:${String(port)}/v1/authorize`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(call) });
    const text = await res.text();
    return { status: res.status, ...(res.status === 200 ? { decision: (JSON.parse(text) as { decision: string }).decision } : {}) };
  } catch (error) {
    return { refused: ((error as { cause?: { code?: string } }).cause?.code) ?? String(error) };
  }
}

/** Whether a TCP connection to the address is accepted. */
function tcpAccepts(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host, port });
    socket.once('connect', () => { socket.destroy(); resolve(true); });
    socket.once('error', () => { resolve(false); });
  });
}

/**
 * The injected container's arguments as this test runs them: the same listen hosts on free ports,
 * the local token service and ServiceAccount token; the CA comes from the injected environment.
 */
async function sidecarArgs(container: V1Container, tokenService: string, listen: typeof ports): Promise<string[]> {
  const args: string[] = [];
  for (const arg of container.args ?? []) {
    const address = /^--(http|grpc|status)-address=(.+):\d+$/.exec(arg);
    if (address !== null) {
      const kind = address[1] as keyof typeof ports;
      listen[kind] = await freePort();
      args.push(`--${kind}-address=${address[2] ?? ''}:${String(listen[kind])}`);
    } else if (arg.startsWith('--token-service=')) args.push(`--token-service=${tokenService}`);
    else if (arg.startsWith('--service-account-token=')) args.push(`--service-account-token=${serviceAccountTokenFile}`);
    else if (arg !== 'sidecar') args.push(arg);
  }
  return [portcullis, 'sidecar', ...args, '--agent', AGENT, '--namespace', NS, '--trust-namespace', OPERATOR_NS, '--kubeconfig', kubeconfig, '--shutdown-delay', '10ms', '--log-level', 'warn'];
}

const injectedEnv = (container: V1Container): Record<string, string> =>
  Object.fromEntries((container.env ?? []).flatMap((e) => (e.name === TOKEN_SERVICE_CA_ENV && e.value !== undefined ? [[e.name, e.value]] : [])));

beforeAll(async () => {
  if (podAddress === undefined) throw new Error('these attacks need a non-loopback IPv4 address on this machine, to stand for the pod\'s address');
  await ensureNamespace(plane, OPERATOR_NS);
  await kubectl(plane, ['apply', '-f', '-'], {
    input: [
      { apiVersion: 'v1', kind: 'Namespace', metadata: { name: NS } },
      { apiVersion: 'v1', kind: 'ServiceAccount', metadata: { name: AGENT, namespace: NS } },
      { apiVersion: 'portcullis.dev/v1alpha1', kind: 'AgentIdentity', metadata: { name: AGENT, namespace: NS }, spec: { serviceAccountName: AGENT, owner: { name: 'Dana Ruiz', email: 'dana@example.com' } } },
      {
        apiVersion: 'portcullis.dev/v1alpha1', kind: 'ToolPolicy', metadata: { name: 'payments', namespace: NS },
        spec: {
          subjects: { agents: [AGENT] },
          rules: [{ name: 'small-payments', tool: 'stripe-payments', actions: ['create_payment'], decision: 'allow', when: [{ param: 'amount', max: 5000 }] }],
          rateLimits: [{ tool: 'stripe-payments', rps: 100, burst: 100, onExceed: 'deny' }],
        },
      },
    ].map((d) => stringify(d)).join('---\n'),
  });
  operator = await startScopedOperator(plane, 'apn', OPERATOR_NS);
  // The token service with the operator-managed certificate (its own CA, Secret portcullis-tokens-tls), naming the loopback address it is reached at here.
  const admin = kubeConfigOf(plane);
  tokens = await startTokenService({
    kubeConfig: admin, namespace: OPERATOR_NS, host: '127.0.0.1', port: 0, log: pino({ level: 'silent' }), rateLimit: { perSecond: 100, burst: 100 }, statusIntervalMs: 0,
    tls: tokenEndpoint({ 'token-url': 'https://127.0.0.1' }, OPERATOR_NS, admin).tls,
  });
  kubeconfig = await agentKubeconfigFile(plane, NS, AGENT);

  // The authz container exactly as the webhook injects it into an agent pod.
  const pod = injectPod(
    { apiVersion: 'v1', kind: 'Pod', metadata: { name: POD, namespace: NS }, spec: { serviceAccountName: AGENT, automountServiceAccountToken: false, containers: [{ name: 'agent', image: 'example.com/agent:1' }] } },
    { sidecarImage: 'example.com/portcullis:1', envoyImage: 'example.com/envoy:1', version: '0', nativeSidecars: true, tokenService: 'https://portcullis-tokens.apn-system.svc:8443', tokenServiceCa: tokens.ca() },
    { tenant: NS },
  );
  const container = pod.spec?.initContainers?.find((c) => c.name === AUTHZ_CONTAINER);
  if (container === undefined) throw new Error('no authz container was injected');
  injected = container;
  // The injected pod itself (no scheduler runs here, so it stays Pending), and its projected token, as the kubelet writes it: bound to the pod.
  await kubectl(plane, ['create', '-f', '-'], { input: stringify(pod) });
  await writeFile(serviceAccountTokenFile, await podToken());
  sidecar = await spawnTracked(plane, process.execPath, await sidecarArgs(injected, tokens.url, ports), injectedEnv(injected));
  await eventually('the sidecar to be ready (bundle loaded, agent token held)', async () => {
    const ready = await fetch(`http://127.0.0.1:${String(ports.http)}/readyz`).catch(() => undefined);
    // Thrown, so a timeout names why it is not ready and the sidecar's own account.
    if (ready?.status !== 200) throw new Error(`${(await ready?.text())?.trim() ?? 'no answer'}; sidecar: ${sidecar.output().split('\n').filter((l) => l.includes('"level":40') || l.includes('"level":50')).slice(-3).join(' | ')}`);
    return true;
  }, 60_000);
}, 120_000);

afterAll(async () => {
  await (sidecar as TrackedProcess | undefined)?.kill('SIGTERM');
  await (tokens as RunningTokenService | undefined)?.stop();
  await (operator as Operator | undefined)?.stop();
});

describe('attacks from the pod network on an injected sidecar', () => {
  it('another pod asking for a decision as this agent finds the decision ports closed on the pod address', async () => {
    const address = podAddress ?? '';
    expect(await authorizeAt(address, ports.http)).toEqual({ refused: 'ECONNREFUSED' });
    expect(await tcpAccepts(address, ports.grpc)).toBe(false);
    // Envoy and the application, in the pod's network namespace, still get their decisions on loopback.
    expect(await authorizeAt('127.0.0.1', ports.http)).toEqual({ status: 200, decision: 'allow' });
    expect(await tcpAccepts('127.0.0.1', ports.grpc)).toBe(true);
  });

  it("the kubelet's probes get liveness and readiness from the status listener on the pod address, as the injected probes ask", async () => {
    const address = podAddress ?? '';
    const probe = injected.readinessProbe?.httpGet;
    expect(probe?.path).toBe('/readyz');
    for (const path of ['/healthz', '/readyz']) {
      for (const method of ['GET', 'HEAD']) expect((await fetch(`http://${address}:${String(ports.status)}${path}`, { method })).status).toBe(200);
    }
  });

  it('Prometheus scrapes the metrics on the status listener; they neither decide nor spend', async () => {
    const text = await (await fetch(`http://${podAddress ?? ''}:${String(ports.status)}/metrics`)).text();
    expect(text).toContain('portcullis_decisions_total');
  });

  it.each([
    ['POST /v1/authorize with a call', 404, 'POST', '/v1/authorize'],
    ['GET /v1/authorize', 404, 'GET', '/v1/authorize'],
    ['POST /readyz', 405, 'POST', '/readyz'],
    ['DELETE /metrics', 405, 'DELETE', '/metrics'],
    ['GET /debug', 404, 'GET', '/debug'],
  ])('the status listener answers %s with %s and decides nothing', async (_name, status, method, path) => {
    const decisions = (): Promise<string> => fetch(`http://127.0.0.1:${String(ports.http)}/metrics`).then((r) => r.text()).then((t) => t.split('\n').filter((l) => l.startsWith('portcullis_decisions_total')).join('\n'));
    const before = await decisions();
    const response = await fetch(`http://${podAddress ?? ''}:${String(ports.status)}${path}`, { method, ...(method === 'POST' ? { headers: { 'content-type': 'application/json' }, body: JSON.stringify(call) } : {}) });
    expect(response.status).toBe(status);
    expect(await decisions()).toBe(before);
  });
});

describe('attacks between the sidecar and the token service', () => {
  it('plain HTTP to the token service gets no answer: it speaks only TLS', async () => {
    const port = new URL(tokens.url).port;
    const token = await podToken();
    const answer = await new Promise<string>((resolve) => {
      const req = plainRequest({ host: '127.0.0.1', port, method: 'POST', path: '/v1/token', headers: { authorization: `Bearer ${token}` } }, (res) => { resolve(`answered ${String(res.statusCode)}`); res.resume(); });
      req.on('error', (error: NodeJS.ErrnoException) => { resolve(error.code ?? error.message); });
      req.end();
    });
    expect(answer).toMatch(/^(ECONNRESET|EPIPE)$/);
  });

  it('the sidecar refuses an http:// token service, naming the development flag', async () => {
    const { code, stderr } = await execFileAsync(process.execPath, [portcullis, 'sidecar', '--agent', AGENT, '--namespace', NS, '--trust-namespace', OPERATOR_NS, '--kubeconfig', kubeconfig, '--token-service', `http://127.0.0.1:${new URL(tokens.url).port}`], { env: { ...process.env, [TOKEN_SERVICE_CA_ENV]: tokens.ca() } }).then(
      () => ({ code: 0, stderr: '' }),
      (error: unknown) => ({ code: (error as { code?: number }).code, stderr: (error as { stderr?: string }).stderr ?? '' }),
    );
    expect(code).toBe(2);
    expect(stderr).toMatch(/--token-service: "http:\/\/127\.0\.0\.1:\d+" is plain HTTP: the pod's ServiceAccount token would cross the network in clear.*--allow-http-token-service/);
  });

  it('a man in the middle with a certificate of its own never receives the ServiceAccount token, and the sidecar stays unready', async () => {
    const impostorCa = await createCertificateAuthority('impostor');
    const impostorCert = await impostorCa.issue({ commonName: '127.0.0.1', ips: ['127.0.0.1'], dnsNames: ['localhost'], usage: 'server' });
    const received: string[] = [];
    const impostor: Server = createServer({ cert: impostorCert.cert, key: impostorCert.key }, (req, res) => {
      received.push(req.headers.authorization ?? '(none)');
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ access_token: 'forged', expires_in: 600 }));
    });
    await new Promise<void>((resolve) => impostor.listen(0, '127.0.0.1', resolve));
    const listen = { http: 0, grpc: 0, status: 0 };
    const fooled = await spawnTracked(plane, process.execPath, await sidecarArgs(injected, `https://127.0.0.1:${String((impostor.address() as AddressInfo).port)}`, listen), injectedEnv(injected));
    try {
      const failure = await eventually('the sidecar to refuse the impostor', () => fooled.output().split('\n').find((line) => line.includes('could not get an agent token')), 30_000);
      expect(failure).toMatch(/certificate/i);
      const ready = await fetch(`http://127.0.0.1:${String(listen.status)}/readyz`);
      expect([ready.status, await ready.text()]).toEqual([503, 'no agent token has been issued yet\n']);
      expect(received).toEqual([]);
    } finally {
      await fooled.kill('SIGTERM');
      await new Promise((resolve) => { impostor.close(resolve); impostor.closeAllConnections(); });
    }
  });

  it('with the real token service, verified against the injected CA, the sidecar holds its agent token and is ready', async () => {
    expect((await fetch(`http://${podAddress ?? ''}:${String(ports.status)}/readyz`)).status).toBe(200);
    expect(sidecar.output()).not.toContain('could not get an agent token');
  });
});

describe("the token service's certificate, renewed while it serves", () => {
  it('is served to new connections under the same CA, which the sidecar keeps trusting', async () => {
    const ca = await createCertificateAuthority('portcullis-tokens-ca');
    const issue = (): ReturnType<typeof ca.issue> => ca.issue({ commonName: '127.0.0.1', ips: ['127.0.0.1'], usage: 'server' });
    let current = await issue();
    const rotating = await startTokenService({
      kubeConfig: kubeConfigOf(plane), namespace: OPERATOR_NS, host: '127.0.0.1', port: 0, log: pino({ level: 'silent' }),
      tls: () => Promise.resolve({ ...current, ca: ca.cert }), tlsReloadMs: 100,
    });
    const client = new TokenServiceClient(tokenServiceEndpoint(rotating.url, { ca: ca.cert }));
    /** The serial number of the certificate a new connection is served, verified against the CA. */
    const served = (): Promise<string> => new Promise((resolve, reject) => {
      const socket = tlsConnect({ host: '127.0.0.1', port: Number(new URL(rotating.url).port), ca: ca.cert }, () => { resolve(socket.getPeerCertificate().serialNumber); socket.end(); });
      socket.on('error', reject);
    });
    try {
      expect(await served()).toBe(new X509Certificate(current.cert).serialNumber);
      expect((await client.request('GET', '/.well-known/jwks.json')).status).toBe(200);
      current = await issue();
      const renewed = new X509Certificate(current.cert).serialNumber;
      await eventually('the renewed certificate to be served', async () => ((await served()) === renewed ? true : undefined), 10_000);
      expect((await client.request('GET', '/.well-known/jwks.json')).status).toBe(200);
    } finally {
      client.close();
      await rotating.stop();
    }
  });
});
