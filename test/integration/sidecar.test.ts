// The sidecar against the real API server: the in-process operator writes a
// tenant's bundle, a spawned `portcullis sidecar` loads it (tool declarations
// included), and Envoy's own ext_authz types (the Go client), Envoy's HTTP
// mode and /v1/authorize get the same answers. A real MCP client and server
// (@modelcontextprotocol/sdk) talk through a proxy that asks the sidecar first.
import { CoreV1Api } from '@kubernetes/client-node';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { Server as McpServer } from '@modelcontextprotocol/sdk/server/index.js';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import { CallToolRequestSchema, ListToolsRequestSchema } from '@modelcontextprotocol/sdk/types.js';
import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import type { IncomingHttpHeaders, IncomingMessage, OutgoingHttpHeaders, Server } from 'node:http';
import { createServer, request as httpRequest } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { stringify } from 'yaml';
import type { Operator } from '../../src/operator/operator.ts';
import type { TrackedProcess } from '../harness/cluster.ts';
import { eventually, kubeConfigOf, spawnTracked } from '../harness/cluster.ts';
import { freePort, kubectl, REPO_ROOT } from '../harness/control-plane.ts';
import { agentKubeconfigFile, startScopedOperator } from '../harness/local-parts.ts';

const execFileAsync = promisify(execFile);
const plane = inject('controlPlane');
const core = kubeConfigOf(plane).makeApiClient(CoreV1Api);
const OPERATOR_NS = 'sidecar-system';
const NS = 'sidecar-finance';
const TENANT = 'sidecar-finance';
const AGENT = 'finance-agent';

let operator: Operator;
let sidecar: TrackedProcess;
let httpBase: string;
let grpcAddress: string;
let envoyHttpPort: number;

const apply = async (docs: unknown[]): Promise<void> => {
  await kubectl(plane, ['apply', '--validate=strict', '-f', '-'], { input: docs.map((d) => stringify(d)).join('---\n') });
};

const MCP_HOST = 'ehr-mcp.tools.svc';
const TOOLS = [
  { name: 'stripe-payments', http: { host: 'payments.tools.svc', port: 8080, actions: [{ name: 'create_payment', method: 'POST', path: '/v1/payments' }] } },
  { name: 'ehr', mcp: { host: MCP_HOST, path: '/mcp' } },
];

/** The payments policy of DESIGN.md; `smallMax` is the bound of small-payments. */
function paymentsPolicy(smallMax: number): unknown {
  return {
    apiVersion: 'portcullis.dev/v1alpha1',
    kind: 'ToolPolicy',
    metadata: { name: 'payments', namespace: NS },
    spec: {
      subjects: { agents: [AGENT], roles: ['payments'] },
      mode: 'enforce',
      tools: TOOLS,
      rules: [
        {
          name: 'small-payments', tool: 'stripe-payments', actions: ['create_payment'], decision: 'allow',
          when: [{ param: 'amount', max: smallMax }, { param: 'currency', oneOf: ['USD', 'EUR'] }, { param: 'account', regex: '^[0-9]{10,12}$' }],
        },
        {
          name: 'over-limit', tool: 'stripe-payments', actions: ['create_payment'], decision: 'approval_needed',
          when: [{ param: 'amount', gt: 5000 }], approval: { approvers: ['group:finance-leads'], ttl: '15m' },
        },
        { name: 'no-coerced-payments', tool: 'stripe-payments', decision: 'deny', when: [{ delegatedBy: ['planner-agent'] }] },
        // The MCP handshake and listing, named mcp:METHOD; tools/call names the MCP tool.
        { name: 'ehr-protocol', tool: 'ehr', actions: ['mcp:initialize', 'mcp:notifications/initialized', 'mcp:tools/list', 'mcp:stream', 'mcp:end-session'], decision: 'allow' },
        { name: 'ehr-read', tool: 'ehr', actions: ['read_record'], decision: 'allow', when: [{ param: 'patient', regex: '^p-[0-9]+$' }] },
      ],
    },
  };
}

interface Answer { decision: string; enforced: boolean; policy: string | null; rule: string; revision: string; reasons: string[]; decisionId: string; approval?: string }

async function authorize(call: unknown): Promise<{ status: number; body: Answer; header: string | null }> {
  const response = await fetch(`${httpBase}/v1/authorize`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(call) });
  return { status: response.status, body: (await response.json()) as Answer, header: response.headers.get('x-portcullis-decision-id') };
}

interface HeaderOption { header: { key: string; value: string } }
interface CheckResponse {
  status?: { code?: number; message?: string };
  ok_response?: { headers?: HeaderOption[] };
  denied_response?: { status: { code: string }; headers?: HeaderOption[]; body?: string };
}

let requests = 0;
/** Sends a Check through the Go client built from go-control-plane, as Envoy would. */
async function check(request: { method: string; host: string; path: string; headers?: Record<string, string>; body?: string; pack_as_bytes?: boolean }): Promise<CheckResponse> {
  const file = join(plane.runDir, `sidecar-check-${++requests}.json`);
  await writeFile(file, JSON.stringify(request));
  const { stdout } = await execFileAsync(plane.tools.extauthzClient, ['-addr', grpcAddress, '-request', file]);
  return JSON.parse(stdout) as CheckResponse;
}

const headerOf = (headers: HeaderOption[] | undefined, key: string): string | undefined => headers?.find((h) => h.header.key === key)?.header.value;
const paymentRequest = (body: string, packAsBytes = false): Parameters<typeof check>[0] => ({
  method: 'POST', host: 'payments.tools.svc:8080', path: '/v1/payments', headers: { 'content-type': 'application/json' }, body, pack_as_bytes: packAsBytes,
});
const payment = (amount: number, currency = 'USD'): Record<string, unknown> => ({ amount, currency, account: '1234567890' });
const paymentCall = (amount: number, currency = 'USD'): Record<string, unknown> => ({ tool: 'stripe-payments', action: 'create_payment', params: payment(amount, currency) });

async function metric(name: string): Promise<string[]> {
  const text = await (await fetch(`${httpBase}/metrics`)).text();
  return text.split('\n').filter((line) => line.startsWith(name));
}

interface JsonRpcError { jsonrpc: string; id?: number | string; error: { code: number; message: string; data: Answer } }

const jsonRpc = (id: number | string | null, method: string, params?: Record<string, unknown>): string =>
  JSON.stringify({ jsonrpc: '2.0', id, method, ...(params === undefined ? {} : { params }) });
/** A POST to the declared MCP endpoint, as Envoy would describe it to ext_authz. */
const mcpRequest = (body: string, headers: Record<string, string> = {}): Parameters<typeof check>[0] => ({
  method: 'POST', host: MCP_HOST, path: '/mcp', headers: { 'content-type': 'application/json', ...headers }, body,
});

async function readAll(stream: IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

async function listen(server: Server): Promise<number> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return (server.address() as AddressInfo).port;
}

async function closeServer(server: Server): Promise<void> {
  server.closeAllConnections();
  await new Promise((resolve) => server.close(resolve));
}

/** Headers that are the connection's own, not the message's: a proxy does not pass them on. */
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'transfer-encoding', 'host', 'content-length']);
const endToEnd = (headers: IncomingHttpHeaders): OutgoingHttpHeaders => Object.fromEntries(Object.entries(headers).filter(([name]) => !HOP_BY_HOP.has(name)));

/** The MCP server the agent calls: the SDK's server over streamable HTTP with sessions, two tools, and a record of the calls it ran. */
async function startMcpServer(): Promise<{ server: Server; port: number; ran: string[] }> {
  const ran: string[] = [];
  // The low-level Server takes tools declared in plain JSON Schema; McpServer's registerTool takes only zod schemas.
  // eslint-disable-next-line @typescript-eslint/no-deprecated
  const mcp = new McpServer({ name: 'ehr', version: '1.0.0' }, { capabilities: { tools: {} } });
  mcp.setRequestHandler(ListToolsRequestSchema, () => ({
    tools: [
      { name: 'read_record', inputSchema: { type: 'object' as const, properties: { patient: { type: 'string' } } } },
      { name: 'export_records', inputSchema: { type: 'object' as const } },
    ],
  }));
  mcp.setRequestHandler(CallToolRequestSchema, (request) => {
    ran.push(request.params.name);
    return { content: [{ type: 'text' as const, text: `${request.params.name} ${JSON.stringify(request.params.arguments ?? {})}` }] };
  });
  const transport = new StreamableHTTPServerTransport({ sessionIdGenerator: () => randomUUID() });
  await mcp.connect(transport);
  const server = createServer((req, res) => { void transport.handleRequest(req, res); });
  return { server, port: await listen(server), ran };
}

/** Headers Envoy forwards to the HTTP mode: its allowed_headers as docs/sidecar.md lists them. */
const FORWARDED_TO_SIDECAR = ['content-type', 'mcp-method', 'mcp-name', 'mcp-protocol-version', 'mcp-session-id', 'traceparent', 'x-portcullis-agent-token'];

function exchange(port: number, options: { method: string; path: string; headers: OutgoingHttpHeaders; body: Buffer }): Promise<{ status: number; headers: IncomingHttpHeaders; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const outgoing = httpRequest({ host: '127.0.0.1', port, method: options.method, path: options.path, headers: options.headers }, (response) => {
      readAll(response).then((body) => { resolve({ status: response.statusCode ?? 0, headers: response.headers, body }); }, reject);
    });
    outgoing.on('error', reject);
    outgoing.end(options.body);
  });
}

/**
 * Envoy's part, played by a test proxy in front of the MCP server: it asks the
 * sidecar's HTTP ext_authz mode about every request, as Envoy's http_service
 * does (the request's method, path and body, Host the tool's host, the allowed
 * headers), forwards what is let through with the answer's headers, and sends
 * the client the sidecar's answer for the rest.
 */
async function startMcpProxy(upstreamPort: number): Promise<{ server: Server; port: number; denied: { request: string; status: number; answer: string }[] }> {
  const denied: { request: string; status: number; answer: string }[] = [];
  const server = createServer((req, res) => {
    void (async (): Promise<void> => {
      const body = await readAll(req);
      const headers: OutgoingHttpHeaders = { host: MCP_HOST, 'content-length': body.length, ...(body.length > 0 ? { 'x-envoy-auth-partial-body': 'false' } : {}) };
      for (const name of FORWARDED_TO_SIDECAR) {
        const value = req.headers[name];
        if (typeof value === 'string') headers[name] = value;
      }
      const verdict = await exchange(envoyHttpPort, { method: req.method ?? '', path: req.url ?? '', headers, body });
      if (verdict.status !== 200) {
        denied.push({ request: body.toString('utf8'), status: verdict.status, answer: verdict.body.toString('utf8') });
        res.writeHead(verdict.status, endToEnd(verdict.headers));
        res.end(verdict.body);
        return;
      }
      const upstream = httpRequest(
        { host: '127.0.0.1', port: upstreamPort, method: req.method, path: req.url, headers: { ...endToEnd(req.headers), ...endToEnd(verdict.headers) } },
        (response) => {
          res.writeHead(response.statusCode ?? 502, endToEnd(response.headers));
          response.pipe(res);
        },
      );
      upstream.on('error', () => res.destroy());
      res.on('close', () => upstream.destroy());
      upstream.end(body);
    })().catch(() => res.destroy());
  });
  return { server, port: await listen(server), denied };
}

beforeAll(async () => {
  operator = await startScopedOperator(plane, 'sidecar', OPERATOR_NS);
  await apply([
    { apiVersion: 'v1', kind: 'Namespace', metadata: { name: NS, labels: { 'portcullis.dev/tenant': TENANT } } },
    { apiVersion: 'portcullis.dev/v1alpha1', kind: 'AgentIdentity', metadata: { name: AGENT, namespace: NS }, spec: { serviceAccountName: AGENT, owner: { name: 'Dana Ruiz', email: 'dana@example.com' }, roles: ['payments'] } },
    paymentsPolicy(5000),
  ]);
  const kubeconfig = await agentKubeconfigFile(plane, NS, AGENT);
  const [httpPort, grpcPort] = [await freePort(), await freePort()];
  envoyHttpPort = await freePort();
  httpBase = `http://127.0.0.1:${httpPort}`;
  grpcAddress = `127.0.0.1:${grpcPort}`;
  sidecar = await spawnTracked(plane, process.execPath, [
    join(REPO_ROOT, 'bin', 'portcullis.js'), 'sidecar', '--kubeconfig', kubeconfig, '--agent', AGENT, '--namespace', NS, '--trust-namespace', OPERATOR_NS, '--tenant', TENANT,
    '--http-address', `127.0.0.1:${httpPort}`, '--grpc-address', grpcAddress, '--envoy-http-address', `127.0.0.1:${envoyHttpPort}`,
  ]);
  await eventually('the sidecar to be ready', async () => ((await fetch(`${httpBase}/readyz`).catch(() => undefined))?.status === 200 ? true : undefined), 60_000);
});

afterAll(async () => {
  await sidecar.kill('SIGTERM');
  await operator.stop();
});

describe('the sidecar', () => {
  it('answers Envoy Check requests with allow, approval_needed and deny as documented', async () => {
    const allowed = await check(paymentRequest(JSON.stringify(payment(4200))));
    expect(allowed.status?.code ?? 0).toBe(0);
    expect(headerOf(allowed.ok_response?.headers, 'x-portcullis-decision')).toBe('allow');
    expect(headerOf(allowed.ok_response?.headers, 'x-portcullis-decision-id')).toMatch(/^[0-9a-f-]{36}$/);

    const packed = await check(paymentRequest(JSON.stringify(payment(4200)), true));
    expect(headerOf(packed.ok_response?.headers, 'x-portcullis-decision')).toBe('allow');

    const approval = await check(paymentRequest(JSON.stringify(payment(50_000))));
    expect(approval.status?.code).toBe(7);
    expect(approval.denied_response?.status.code).toBe('Conflict');
    const approvalBody = JSON.parse(approval.denied_response?.body ?? '{}') as Answer;
    expect(approvalBody).toMatchObject({ decision: 'approval_needed', policy: 'payments', rule: 'over-limit' });
    expect(headerOf(approval.denied_response?.headers, 'x-portcullis-approval')).toBe(approvalBody.approval);

    const denied = await check(paymentRequest(JSON.stringify(payment(10, 'GBP'))));
    expect(denied.denied_response?.status.code).toBe('Forbidden');
    const deniedBody = JSON.parse(denied.denied_response?.body ?? '{}') as Answer;
    expect(deniedBody).toMatchObject({ decision: 'deny', policy: null, rule: 'portcullis:default-deny' });
    expect(deniedBody.decisionId).toBe(headerOf(denied.denied_response?.headers, 'x-portcullis-decision-id'));
  });

  it('denies a Check whose body repeats a key or was truncated, never judging a part of it', async () => {
    const duplicate = await check(paymentRequest('{"amount": 10, "currency": "USD", "account": "1234567890", "amount": 90000}'));
    expect(JSON.parse(duplicate.denied_response?.body ?? '{}')).toMatchObject({ decision: 'deny', rule: 'portcullis:uninspectable-request' });
    const truncated = await check({ ...paymentRequest('{"amount": 10, "currency": "USD", "acc'), pack_as_bytes: true });
    expect(JSON.parse(truncated.denied_response?.body ?? '{}')).toMatchObject({ decision: 'deny', rule: 'portcullis:uninspectable-request' });
  });

  it('gives the same answers on /v1/authorize, under its own agent whatever the caller says', async () => {
    const allowed = await authorize({ ...paymentCall(4200), agent: 'someone-else', delegation: ['planner-agent'] });
    expect(allowed.status).toBe(200);
    expect(allowed.body).toMatchObject({ decision: 'allow', enforced: true, policy: 'payments', rule: 'small-payments' });
    expect(allowed.header).toBe(allowed.body.decisionId);
    const approval = await authorize(paymentCall(50_000));
    expect(approval.body).toMatchObject({ decision: 'approval_needed', rule: 'over-limit' });
    const viaEnvoy = await check(paymentRequest(JSON.stringify(payment(50_000))));
    expect(approval.body.approval).toBe((JSON.parse(viaEnvoy.denied_response?.body ?? '{}') as Answer).approval);
    expect((await authorize(paymentCall(10, 'GBP'))).body).toMatchObject({ decision: 'deny', rule: 'portcullis:default-deny' });
    const malformed = await authorize({ tool: 'stripe-payments', params: 'amount=5' });
    expect(malformed.status).toBe(400);
  });

  it('reports the round-trip time of Check and /v1/authorize (figures, not a pass mark)', async () => {
    const file = join(plane.runDir, 'sidecar-check-timing.json');
    await writeFile(file, JSON.stringify(paymentRequest(JSON.stringify(payment(4200)))));
    const { stdout, stderr } = await execFileAsync(plane.tools.extauthzClient, ['-addr', grpcAddress, '-request', file, '-repeat', '2000']);
    expect(headerOf((JSON.parse(stdout) as CheckResponse).ok_response?.headers, 'x-portcullis-decision')).toBe('allow');
    const times: number[] = [];
    for (let i = 0; i < 1000; i++) {
      const started = performance.now();
      expect((await authorize(paymentCall(4200))).body.decision).toBe('allow');
      times.push(performance.now() - started);
    }
    times.sort((a, b) => a - b);
    const at = (q: number): string => (times[Math.floor(q * (times.length - 1))] ?? 0).toFixed(3);
    console.info(`sidecar: Check over gRPC, one connection: ${stderr.trim()}`);
    console.info(`sidecar: /v1/authorize over HTTP/1.1 keep-alive (fetch): checks=1000 p50=${at(0.5)}ms p99=${at(0.99)}ms`);
  });

  it('answers from a changed rule soon after the change is applied', async () => {
    const before = (await authorize(paymentCall(4200))).body;
    const applied = Date.now();
    await apply([paymentsPolicy(3000)]);
    const after = await eventually('the sidecar to answer from the new revision', async () => {
      const answer = (await authorize(paymentCall(4200))).body;
      return answer.revision !== before.revision ? answer : undefined;
    }, 30_000, 20);
    const delayMs = Date.now() - applied;
    console.info(`sidecar: a rule change reached the sidecar ${delayMs} ms after kubectl apply returned (revision ${before.revision} → ${after.revision})`);
    expect(after).toMatchObject({ decision: 'deny', rule: 'portcullis:default-deny' });
    expect((await metric('portcullis_bundle_revision_sequence'))[0]).toContain(`tenant="${TENANT}"`);
  });

  it('refuses a tampered bundle ConfigMap, counts it, and keeps answering from the last good revision', async () => {
    const good = (await authorize(paymentCall(2000))).body;
    expect(good.decision).toBe('allow');
    const configMap = await core.readNamespacedConfigMap({ name: 'portcullis-bundle', namespace: NS });
    const data = { ...configMap.data };
    // Raise the small-payments bound without re-signing: the digest no longer matches.
    data['data.json'] = (data['data.json'] ?? '').replace('"bound":3000', '"bound":3000000');
    expect(data['data.json']).toContain('"bound":3000000');
    configMap.data = data;
    await core.replaceNamespacedConfigMap({ name: 'portcullis-bundle', namespace: NS, body: configMap });
    const refused = await eventually('the sidecar to count the refusal', async () => {
      const lines = await metric('portcullis_bundle_rejections_total{code="bundle_digest_mismatch"}');
      return lines.length > 0 ? lines : undefined;
    });
    expect(refused[0]).toMatch(/ [1-9]\d*$/);
    const after = (await authorize(paymentCall(2000))).body;
    expect(after).toMatchObject({ decision: 'allow', revision: good.revision });
    expect((await authorize(paymentCall(4200))).body).toMatchObject({ decision: 'deny', revision: good.revision });
  });
});

describe('MCP through Envoy ext_authz over gRPC', () => {
  it('judges tools/call by the MCP tool and its arguments, and denies with a JSON-RPC error echoing the id', async () => {
    const allowed = await check(mcpRequest(jsonRpc(1, 'tools/call', { name: 'read_record', arguments: { patient: 'p-1' } })));
    expect(headerOf(allowed.ok_response?.headers, 'x-portcullis-decision')).toBe('allow');
    expect(headerOf((await check(mcpRequest(jsonRpc(2, 'tools/list')))).ok_response?.headers, 'x-portcullis-decision')).toBe('allow');

    const denied = await check(mcpRequest(jsonRpc('req-3', 'tools/call', { name: 'read_record', arguments: { patient: '../all' } })));
    expect(denied.status?.code).toBe(7);
    expect(denied.denied_response?.status.code).toBe('Forbidden');
    const error = JSON.parse(denied.denied_response?.body ?? '{}') as JsonRpcError;
    expect(error).toMatchObject({ jsonrpc: '2.0', id: 'req-3', error: { code: -31403, data: { decision: 'deny', policy: null, rule: 'portcullis:default-deny' } } });
    expect(error.error.data.reasons.join(' ')).toContain('ehr-read');
    expect(error.error.data.decisionId).toBe(headerOf(denied.denied_response?.headers, 'x-portcullis-decision-id'));
  });

  it('denies 2026-07-28 headers that disagree with the body, a batch, and a null id, never judging a part', async () => {
    const modern = (name: string): Record<string, string> => ({ 'mcp-protocol-version': '2026-07-28', 'mcp-method': 'tools/call', 'mcp-name': name });
    const agreeing = await check(mcpRequest(jsonRpc(4, 'tools/call', { name: 'read_record', arguments: { patient: 'p-1' } }), modern('read_record')));
    expect(headerOf(agreeing.ok_response?.headers, 'x-portcullis-decision')).toBe('allow');

    const answers = await Promise.all([
      check(mcpRequest(jsonRpc(5, 'tools/call', { name: 'export_records', arguments: {} }), modern('read_record'))),
      check(mcpRequest(`[${jsonRpc(6, 'tools/list')}]`)),
      check(mcpRequest(jsonRpc(null, 'tools/list'))),
    ]);
    const errors = answers.map((a) => JSON.parse(a.denied_response?.body ?? '{}') as JsonRpcError);
    expect(errors.map((e) => [e.id, e.error.data.rule])).toEqual([[5, 'portcullis:uninspectable-request'], [undefined, 'portcullis:uninspectable-request'], [undefined, 'portcullis:uninspectable-request']]);
    expect(errors.map((e) => e.error.data.reasons[0])).toEqual([
      expect.stringContaining('the Mcp-Name header ("read_record") does not agree'),
      expect.stringContaining('batch'),
      expect.stringContaining('neither a string nor an integer'),
    ]);
  });
});

describe('a real MCP client and server through a proxy that asks the sidecar first (Envoy HTTP mode)', () => {
  it('runs an allowed tool, and answers a denied one with the JSON-RPC error, which never reaches the server', async () => {
    const ehr = await startMcpServer();
    const proxy = await startMcpProxy(ehr.port);
    const client = new Client({ name: 'finance-agent', version: '1.0.0' });
    try {
      await client.connect(new StreamableHTTPClientTransport(new URL(`http://127.0.0.1:${proxy.port}/mcp`)));
      expect((await client.listTools()).tools.map((t) => t.name)).toEqual(['read_record', 'export_records']);
      expect((await client.callTool({ name: 'read_record', arguments: { patient: 'p-7' } })).content).toEqual([{ type: 'text', text: 'read_record {"patient":"p-7"}' }]);

      const refused: unknown = await client.callTool({ name: 'export_records', arguments: { all: true } }).then(() => undefined, (error: unknown) => error);
      expect(refused).toBeInstanceOf(Error);
      const message = (refused as Error).message;
      const error = JSON.parse(message.slice(message.indexOf('{'))) as JsonRpcError;
      expect(error).toMatchObject({ jsonrpc: '2.0', error: { code: -31403, data: { decision: 'deny', rule: 'portcullis:default-deny' } } });
      const [denial] = proxy.denied;
      expect(denial?.status).toBe(403);
      expect(error.id).toBe((JSON.parse(denial?.request ?? '{}') as { id: number }).id);
      expect(ehr.ran).toEqual(['read_record']);
      expect((await metric('portcullis_decision_duration_seconds_count{transport="envoy-http"}'))[0]).toMatch(/ [1-9]\d*$/);
    } finally {
      await client.close();
      await closeServer(proxy.server);
      await closeServer(ehr.server);
    }
  });
});
