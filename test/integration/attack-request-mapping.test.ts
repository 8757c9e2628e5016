// Attacks on how a request on the wire becomes a call, and on where the
// agent's token goes, against a spawned `portcullis sidecar` that loads the
// bundle the in-process operator writes on the real API server and holds the
// agent's own token from the token service. Each attack is
// sent as Envoy sends it: over gRPC with the client built from go-control-plane
// (hack/tools/extauthz-client), and over Envoy's HTTP mode. Each was let
// through before the request target had one strict normal form.
import { execFile } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import type { IncomingHttpHeaders, OutgoingHttpHeaders } from 'node:http';
import { request as httpRequest } from 'node:http';
import { connect } from 'node:net';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { stringify } from 'yaml';
import { INJECTED_ANNOTATION } from '../../src/api/index.ts';
import type { RunningTokenService } from '../../src/identity/index.ts';
import { startTokenService } from '../../src/identity/index.ts';
import type { Operator } from '../../src/operator/operator.ts';
import { ephemeralServingTls } from '../../src/webhook/serving-certs.ts';
import type { TrackedProcess } from '../harness/cluster.ts';
import { eventually, kubeConfigOf, spawnTracked } from '../harness/cluster.ts';
import { ensureNamespace, freePort, kubectl, REPO_ROOT } from '../harness/control-plane.ts';
import { agentKubeconfigFile, startScopedOperator } from '../harness/local-parts.ts';

const execFileAsync = promisify(execFile);
const plane = inject('controlPlane');
const OPERATOR_NS = 'attack-map-system';
const NS = 'attack-map';
const AGENT = 'finance-agent';
const TOKEN_HEADER = 'x-portcullis-agent-token';
const UNINSPECTABLE = 'portcullis:uninspectable-request';

let operator: Operator;
let tokens: RunningTokenService;
let sidecar: TrackedProcess;
let httpBase = '';
let grpcAddress = '';
let envoyHttpPort = 0;

const TOOLS = [
  { name: 'files', http: { host: 'files.tools.svc', port: 8080, actions: [{ name: 'read', method: 'GET', path: '/files/*' }, { name: 'remove', method: 'DELETE', path: '/files/*' }, { name: 'admin', method: 'GET', path: '/admin/*' }] } },
  { name: 'ehr', mcp: { host: 'ehr-mcp.tools.svc', path: '/mcp' } },
  { name: 'payments', http: { host: 'payments.tools.svc', port: 8080, actions: [{ name: 'create_payment', method: 'POST', path: '/v1/payments' }] } },
  { name: 'search', http: { host: 'search.tools.svc', port: 8080, actions: [{ name: 'query', method: 'GET', path: '/search' }] } },
];

const MANIFESTS = [
  { apiVersion: 'v1', kind: 'Namespace', metadata: { name: NS } },
  { apiVersion: 'v1', kind: 'ServiceAccount', metadata: { name: AGENT, namespace: NS } },
  // The agent's pod as injection leaves it (no scheduler runs: it stays Pending); the token service takes tokens bound to it.
  {
    apiVersion: 'v1', kind: 'Pod', metadata: { name: `${AGENT}-0`, namespace: NS, annotations: { [INJECTED_ANNOTATION]: '{}' } },
    spec: { serviceAccountName: AGENT, automountServiceAccountToken: false, containers: [{ name: 'agent', image: 'example.com/agent:1' }] },
  },
  { apiVersion: 'portcullis.dev/v1alpha1', kind: 'AgentIdentity', metadata: { name: AGENT, namespace: NS }, spec: { serviceAccountName: AGENT, owner: { name: 'Dana Ruiz', email: 'dana@example.com' } } },
  {
    apiVersion: 'portcullis.dev/v1alpha1', kind: 'ToolPolicy', metadata: { name: 'tools', namespace: NS },
    spec: {
      subjects: { agents: [AGENT] },
      tools: TOOLS,
      rules: [
        { name: 'files-read', tool: 'files', actions: ['read'], decision: 'allow' },
        { name: 'ehr-read', tool: 'ehr', actions: ['read_record'], decision: 'allow' },
        { name: 'small-payments', tool: 'payments', actions: ['create_payment'], decision: 'allow', when: [{ param: 'amount', max: 5000 }] },
        { name: 'search', tool: 'search', actions: ['query'], decision: 'allow' },
        { name: 'no-secret-search', tool: 'search', actions: ['query'], decision: 'deny', when: [{ param: 'name', equals: 'secret' }] },
      ],
    },
  },
  {
    apiVersion: 'portcullis.dev/v1alpha1', kind: 'EgressRule', metadata: { name: 'egress', namespace: NS },
    spec: { subjects: { agents: [AGENT] }, allow: [{ host: '*.tools.svc' }, { host: '*.slack.com' }, { host: 'api.openai.com', ports: [443] }] },
  },
];

interface HeaderOption { header: { key: string; value: string } }
interface CheckResponse {
  status?: { code?: number };
  ok_response?: { headers?: HeaderOption[]; headers_to_remove?: string[] };
  denied_response?: { body?: string };
}
interface Answer { decision: string; rule: string; reasons: string[]; error?: { data: Answer } }

let requests = 0;
/** One Check, as Envoy's ext_authz filter sends it, through the Go client built from go-control-plane. */
async function check(request: { method: string; host: string; path: string; headers?: Record<string, string>; body?: string }): Promise<CheckResponse> {
  const file = join(plane.runDir, `attack-map-check-${String(++requests)}.json`);
  await writeFile(file, JSON.stringify(request));
  const { stdout } = await execFileAsync(plane.tools.extauthzClient, ['-addr', grpcAddress, '-request', file]);
  return JSON.parse(stdout) as CheckResponse;
}

/** The decision a Check answer carries: the ok header, or the denial's body (for MCP, its JSON-RPC error data). */
function decisionOf(response: CheckResponse): Answer {
  if (response.ok_response !== undefined) {
    return { decision: response.ok_response.headers?.find((h) => h.header.key === 'x-portcullis-decision')?.header.value ?? '', rule: '', reasons: [] };
  }
  const body = JSON.parse(response.denied_response?.body ?? '{}') as Answer;
  return body.error?.data ?? body;
}

const get = (host: string, path: string, headers: Record<string, string> = {}): Promise<CheckResponse> => check({ method: 'GET', host, path, headers });
const jsonPost = (host: string, path: string, body: string, headers: Record<string, string> = {}): Promise<CheckResponse> =>
  check({ method: 'POST', host, path, headers: { 'content-type': 'application/json', ...headers }, body });
const toolsCall = (id: number, name: string): string => JSON.stringify({ jsonrpc: '2.0', id, method: 'tools/call', params: { name, arguments: { patient: 'p-1' } } });

/** One request to the sidecar's Envoy HTTP mode listener, as Envoy's http_service sends it. */
function envoyHttp(options: { method: string; path: string; headers: OutgoingHttpHeaders; body?: string }): Promise<{ status: number; headers: IncomingHttpHeaders; body: string }> {
  return new Promise((resolve, reject) => {
    const outgoing = httpRequest({ host: '127.0.0.1', port: envoyHttpPort, method: options.method, path: options.path, headers: options.headers }, (response) => {
      const chunks: Buffer[] = [];
      response.on('data', (chunk: Buffer) => chunks.push(chunk));
      response.on('end', () => { resolve({ status: response.statusCode ?? 0, headers: response.headers, body: Buffer.concat(chunks).toString('utf8') }); });
      response.on('error', reject);
    });
    outgoing.on('error', reject);
    outgoing.end(options.body);
  });
}

/** A request written byte for byte to the HTTP mode listener (CONNECT, or a target Node's client would not send), and its answer. */
function rawEnvoyHttp(head: string): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const socket = connect(envoyHttpPort, '127.0.0.1', () => { socket.write(`${head}\r\n\r\n`); });
    const chunks: Buffer[] = [];
    socket.on('data', (chunk: Buffer) => chunks.push(chunk));
    socket.on('end', () => {
      const text = Buffer.concat(chunks).toString('utf8');
      resolve({ status: Number(/^HTTP\/1\.1 (\d{3})/.exec(text)?.[1] ?? 0), text });
    });
    socket.on('error', reject);
  });
}

beforeAll(async () => {
  await ensureNamespace(plane, OPERATOR_NS);
  await kubectl(plane, ['apply', '--validate=strict', '-f', '-'], { input: MANIFESTS.map((d) => stringify(d)).join('---\n') });
  operator = await startScopedOperator(plane, 'attack-map', OPERATOR_NS);
  // The token service, so the sidecar holds the agent's own token and has one to leak.
  const tls = await ephemeralServingTls({ dnsNames: ['localhost'], ips: ['127.0.0.1'] });
  tokens = await startTokenService({ kubeConfig: kubeConfigOf(plane), namespace: OPERATOR_NS, host: '127.0.0.1', port: 0, log: pino({ level: 'silent' }), statusIntervalMs: 0, tls: () => Promise.resolve(tls) });
  const caFile = join(plane.runDir, 'attack-map-token-service-ca.pem');
  const serviceAccountTokenFile = join(plane.runDir, 'attack-map-agent.token');
  await writeFile(caFile, tls.ca);
  const boundToken = await kubectl(plane, ['create', 'token', AGENT, '-n', NS, '--audience', 'portcullis', '--duration', '1h', '--bound-object-kind', 'Pod', '--bound-object-name', `${AGENT}-0`]);
  await writeFile(serviceAccountTokenFile, boundToken.stdout.trim());
  const kubeconfig = await agentKubeconfigFile(plane, NS, AGENT);
  const [httpPort, grpcPort] = [await freePort(), await freePort()];
  envoyHttpPort = await freePort();
  httpBase = `http://127.0.0.1:${String(httpPort)}`;
  grpcAddress = `127.0.0.1:${String(grpcPort)}`;
  sidecar = await spawnTracked(plane, process.execPath, [
    join(REPO_ROOT, 'bin', 'portcullis.js'), 'sidecar', '--kubeconfig', kubeconfig, '--agent', AGENT, '--namespace', NS, '--trust-namespace', OPERATOR_NS,
    '--http-address', `127.0.0.1:${String(httpPort)}`, '--grpc-address', grpcAddress, '--envoy-http-address', `127.0.0.1:${String(envoyHttpPort)}`,
    '--token-service', tokens.url, '--token-service-ca', caFile, '--token-issuer', tokens.service.issuer, '--service-account-token', serviceAccountTokenFile,
    '--log-level', 'warn',
  ], { POD_NAME: `${AGENT}-0` });
  await eventually('the sidecar to load the bundle', async () => ((await fetch(`${httpBase}/readyz`).catch(() => undefined))?.status === 200 ? true : undefined), 60_000)
    .catch((error: unknown) => { throw new Error(`${String(error)}\n${sidecar.output()}`); });
  // The bundle is in force once the plain calls below are judged by its rules.
  await eventually('the sidecar to answer from the bundle', async () => (decisionOf(await get('files.tools.svc:8080', '/files/a')).decision === 'allow' ? true : undefined), 30_000, 100);
});

afterAll(async () => {
  await (sidecar as TrackedProcess | undefined)?.kill('SIGTERM');
  await (tokens as RunningTokenService | undefined)?.stop();
  await (operator as Operator | undefined)?.stop();
});

describe('attacks on request mapping, each refused by the real sidecar', () => {
  it('MCP endpoint variants: tools/call delete_record POSTed to /MCP, /mcp/ or /mcp;x is refused, not judged as egress under *.tools.svc', async () => {
    expect(decisionOf(await jsonPost('ehr-mcp.tools.svc', '/mcp', toolsCall(1, 'read_record'))).decision).toBe('allow');
    expect(decisionOf(await jsonPost('ehr-mcp.tools.svc', '/mcp', toolsCall(2, 'delete_record')))).toMatchObject({ decision: 'deny', rule: 'portcullis:default-deny' });
    // The egress rule still covers hosts of *.tools.svc that declare no tool.
    expect(decisionOf(await get('other.tools.svc', '/mcp'))).toMatchObject({ decision: 'allow' });
    for (const path of ['/MCP', '/mcp/', '/mcp;x', '/Mcp', '/%6Dcp/']) {
      const answer = decisionOf(await jsonPost('ehr-mcp.tools.svc', path, toolsCall(3, 'delete_record')));
      expect({ path, decision: answer.decision, rule: answer.rule }).toEqual({ path, decision: 'deny', rule: UNINSPECTABLE });
    }
    // Nor under another name of the same service, nor through a tunnel that would hide the call.
    expect(decisionOf(await jsonPost('ehr-mcp.tools.svc.cluster.local', '/mcp', toolsCall(4, 'delete_record')))).toMatchObject({ rule: UNINSPECTABLE, reasons: [expect.stringContaining('under another name')] });
    expect(decisionOf(await check({ method: 'CONNECT', host: 'ehr-mcp.tools.svc:443', path: '' }))).toMatchObject({ rule: UNINSPECTABLE, reasons: [expect.stringContaining('tunnel')] });
  });

  it('paths not in normal form: ..;, a backslash, %252e%252e%252f, %c0%ae and %u002e are refused, not mapped to files/read', async () => {
    expect(decisionOf(await get('files.tools.svc:8080', '/files/a')).decision).toBe('allow');
    const attacks: [string, RegExp][] = [
      ['/files/..;/admin/a', /";"/],
      ['/files/..\\admin/a', /backslash/],
      ['/files/%252e%252e%252fadmin/a', /encoded twice/],
      ['/files/%c0%ae%c0%ae/admin/a', /overlong/],
      ['/files/%u002e%u002e/admin/a', /%u escape/],
      ['/files/%2e%2e/admin/a', /dot segment/],
      ['/files/..%2fadmin/a', /encoded slash/],
      ['/files/%ef%bc%8e%ef%bc%8e/admin/a', /NFKC/],
    ];
    for (const [path, reason] of attacks) {
      const answer = decisionOf(await get('files.tools.svc:8080', path));
      expect({ path, decision: answer.decision, rule: answer.rule }).toEqual({ path, decision: 'deny', rule: UNINSPECTABLE });
      expect(answer.reasons[0]).toMatch(reason);
    }
    // The same in Envoy's HTTP mode, the target written byte for byte.
    const viaHttp = await rawEnvoyHttp('GET /files/..;/admin/a HTTP/1.1\r\nHost: files.tools.svc:8080\r\nConnection: close');
    expect(viaHttp.status).toBe(403);
    expect(viaHttp.text).toContain(UNINSPECTABLE);
  });

  it("token leak: an allowed egress call (plain HTTP to a.slack.com, CONNECT api.openai.com:443) carries no agent token to the third party", async () => {
    // A tool's call carries the agent's own token: the token is for the tools.
    const toolCall = await get('files.tools.svc:8080', '/files/a');
    expect(toolCall.ok_response?.headers?.find((h) => h.header.key === TOKEN_HEADER)?.header.value).toMatch(/^eyJ/);
    expect(toolCall.ok_response?.headers_to_remove ?? []).toEqual([]);
    for (const response of [await get('a.slack.com', '/api/chat.postMessage'), await check({ method: 'CONNECT', host: 'api.openai.com:443', path: '' })]) {
      expect(response.ok_response).toBeDefined();
      expect(response.ok_response?.headers?.map((h) => h.header.key)).not.toContain(TOKEN_HEADER);
      // Nor one the agent sent itself: Envoy is told to remove it.
      expect(response.ok_response?.headers_to_remove).toEqual([TOKEN_HEADER]);
    }
    const viaHttp = await envoyHttp({ method: 'GET', path: '/api/chat.postMessage', headers: { host: 'a.slack.com' } });
    expect(viaHttp.status).toBe(200);
    expect(viaHttp.headers[TOKEN_HEADER]).toBeUndefined();
    expect(viaHttp.headers['x-envoy-auth-headers-to-remove']).toBe(TOKEN_HEADER);
    const tunnel = await rawEnvoyHttp('CONNECT api.openai.com:443 HTTP/1.1\r\nHost: api.openai.com:443');
    expect(tunnel.status).toBe(200);
    expect(tunnel.text).not.toContain(TOKEN_HEADER + ':');
  });

  it('method override: GET /files/a with X-HTTP-Method-Override: DELETE, or ?_method=DELETE, is refused, not allowed as a read', async () => {
    const attacks = [
      await get('files.tools.svc:8080', '/files/a', { 'x-http-method-override': 'DELETE' }),
      await get('files.tools.svc:8080', '/files/a', { 'x-http-method': 'DELETE' }),
      await get('files.tools.svc:8080', '/files/a', { 'x-method-override': 'DELETE' }),
      await get('files.tools.svc:8080', '/files/a?_method=DELETE'),
    ];
    expect(attacks.map((a) => decisionOf(a)).map((a) => [a.decision, a.rule])).toEqual(attacks.map(() => ['deny', UNINSPECTABLE]));
  });

  it('ambiguous queries: ?name=secret;name=x, ?Name=secret and ?name[]=secret are refused, not slipped past the deny rule on name', async () => {
    expect(decisionOf(await get('search.tools.svc:8080', '/search?name=ok')).decision).toBe('allow');
    expect(decisionOf(await get('search.tools.svc:8080', '/search?name=secret'))).toMatchObject({ decision: 'deny', rule: 'no-secret-search' });
    for (const query of ['name=secret;name=x', 'Name=secret', 'NAME=secret', 'Name=secret&name=x', 'name[]=secret', 'name%5B%5D=secret', 'n%61me=secret&name=x', 'name=secret&name=x', 'name=se+cret']) {
      const answer = decisionOf(await get('search.tools.svc:8080', `/search?${query}`));
      expect({ query, decision: answer.decision, rule: answer.rule }).toEqual({ query, decision: 'deny', rule: UNINSPECTABLE });
    }
  });

  it("ambiguous targets: in Envoy's HTTP mode a CONNECT evil.com:443 whose Host says api.openai.com:443 is refused, not judged by the Host", async () => {
    const honest = await rawEnvoyHttp('CONNECT api.openai.com:443 HTTP/1.1\r\nHost: api.openai.com:443');
    expect(honest.status).toBe(200);
    const forged = await rawEnvoyHttp('CONNECT evil.com:443 HTTP/1.1\r\nHost: api.openai.com:443');
    expect(forged.status).toBe(403);
    expect(forged.text).toContain(UNINSPECTABLE);
    expect(forged.text).toContain('disagree');
    const absolute = await rawEnvoyHttp('GET http://evil.com/x HTTP/1.1\r\nHost: a.slack.com\r\nConnection: close');
    expect(absolute.status).toBe(403);
  });

  it('numbers that do not fit a double: amount 5000.0000000000000001 is refused, not passed under max 5000', async () => {
    expect(decisionOf(await jsonPost('payments.tools.svc:8080', '/v1/payments', '{"amount": 5000.0}')).decision).toBe('allow');
    const proxied = decisionOf(await jsonPost('payments.tools.svc:8080', '/v1/payments', '{"amount": 5000.0000000000000001}'));
    // Nor read under another letter case, as Go's encoding/json would take it.
    expect(decisionOf(await jsonPost('payments.tools.svc:8080', '/v1/payments', '{"Amount": 90000}'))).toMatchObject({ decision: 'deny', rule: UNINSPECTABLE });
    expect(proxied).toMatchObject({ decision: 'deny', rule: UNINSPECTABLE, reasons: [expect.stringContaining('not exactly the double')] });
    const mcp = decisionOf(await jsonPost('ehr-mcp.tools.svc', '/mcp', JSON.stringify({ jsonrpc: '2.0', id: 5, method: 'tools/call', params: { name: 'read_record', arguments: {} } }).replace('{}', '{"limit": 9007199254740993}')));
    expect(mcp).toMatchObject({ decision: 'deny', rule: UNINSPECTABLE });
    const direct = await fetch(`${httpBase}/v1/authorize`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"tool": "payments", "action": "create_payment", "params": {"amount": 5000.0000000000000001}}' });
    expect(direct.status).toBe(400);
    expect(await direct.text()).toContain('not exactly the double');
  });
});
