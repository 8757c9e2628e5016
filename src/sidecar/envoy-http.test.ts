import type { IncomingHttpHeaders, OutgoingHttpHeaders, Server } from 'node:http';
import { request as httpRequest } from 'node:http';
import type { AddressInfo } from 'node:net';
import { connect } from 'node:net';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import type { AuthorizationDecision } from '../compiler/index.ts';
import { normalizeInput } from '../compiler/index.ts';
import type { DecisionRecord } from './authorizer.ts';
import { Authorizer } from './authorizer.ts';
import type { LoadedPolicy } from './bundle-verdict.ts';
import type { EnvoyHttpServerOptions } from './envoy-http.ts';
import { createEnvoyHttpServer } from './envoy-http.ts';
import { createSidecarMetrics } from './metrics.ts';
import { toolTable } from './tools.ts';

const TOOLS = toolTable([
  { name: 'stripe-payments', http: { host: 'payments.tools.svc', port: 8080, actions: [{ name: 'create_payment', method: 'POST', path: '/v1/payments' }] } },
  { name: 'ehr', mcp: { host: 'ehr-mcp.tools.svc', path: '/mcp' } },
]);

/** Allows create_payment up to 5000 and the MCP tool read_record, needs approval above 5000, allows egress to api.openai.com, denies the rest. */
const policy: LoadedPolicy = {
  revision: '1-aaaaaaaaaaaaaaaa',
  tenant: 'finance',
  authorize: (input): AuthorizationDecision => {
    const call = normalizeInput(input, () => new Date());
    const base = { enforced: true, revision: '1-aaaaaaaaaaaaaaaa', reasons: [] };
    const amount = call.params.amount;
    if (call.action === 'create_payment' && typeof amount === 'number') {
      return amount <= 5000 ? { ...base, decision: 'allow', policy: 'payments', rule: 'small-payments' } : { ...base, decision: 'approval_needed', policy: 'payments', rule: 'over-limit', approval: 'k'.repeat(64) };
    }
    if (call.action === 'read_record' || call.egress?.host === 'api.openai.com') return { ...base, decision: 'allow', policy: 'p', rule: 'r' };
    return { ...base, decision: 'deny', policy: null, rule: 'portcullis:default-deny', reasons: ['no rule covers the call'] };
  },
  obligations: () => ({ calls: [], rate: [], spend: [] }),
  standing: () => undefined,
};

let server: Server | undefined;
let records: DecisionRecord[] = [];

async function serve(overrides: Partial<EnvoyHttpServerOptions> = {}): Promise<number> {
  records = [];
  const authorizer = new Authorizer({
    identity: { namespace: 'finance', agent: 'finance-agent' }, tenant: 'finance', policy: () => policy, metrics: createSidecarMetrics(), observers: [(r) => records.push(r)],
  });
  server = createEnvoyHttpServer({ authorizer, tools: () => TOOLS, log: pino({ level: 'silent' }), ...overrides });
  const listening = server;
  await new Promise<void>((resolve) => listening.listen(0, '127.0.0.1', resolve));
  return (listening.address() as AddressInfo).port;
}

afterEach(async () => {
  const closing = server;
  server = undefined;
  if (closing !== undefined) {
    closing.closeAllConnections();
    await new Promise((resolve) => closing.close(resolve));
  }
});

interface Reply { status: number; headers: IncomingHttpHeaders; body: string }

/**
 * A check as Envoy's HTTP ext_authz client sends it: the request's method and
 * path, its Host, the allowed headers, and the buffered body with
 * x-envoy-auth-partial-body. Header values given as lists are sent repeated.
 */
function envoySends(port: number, request: { method: string; path: string; host: string; headers?: OutgoingHttpHeaders; body?: string }): Promise<Reply> {
  const body = request.body ?? '';
  const headers: OutgoingHttpHeaders = { host: request.host, 'content-length': Buffer.byteLength(body), ...(body === '' ? {} : { 'x-envoy-auth-partial-body': 'false' }), ...request.headers };
  return new Promise((resolve, reject) => {
    const outgoing = httpRequest({ host: '127.0.0.1', port, method: request.method, path: request.path, headers }, (response) => {
      const chunks: Buffer[] = [];
      response.on('data', (chunk: Buffer) => chunks.push(chunk));
      response.on('end', () => { resolve({ status: response.statusCode ?? 0, headers: response.headers, body: Buffer.concat(chunks).toString('utf8') }); });
    });
    outgoing.on('error', reject);
    outgoing.end(body);
  });
}

const payment = (amount: number): { method: string; path: string; host: string; headers: OutgoingHttpHeaders; body: string } => ({
  method: 'POST', path: '/v1/payments', host: 'payments.tools.svc:8080', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ amount, currency: 'USD' }),
});
const mcpCall = (name: string, id: number | string = 1, headers: OutgoingHttpHeaders = {}): { method: string; path: string; host: string; headers: OutgoingHttpHeaders; body: string } => ({
  method: 'POST', path: '/mcp', host: 'ehr-mcp.tools.svc', headers: { 'content-type': 'application/json', ...headers },
  body: JSON.stringify({ jsonrpc: '2.0', id, method: 'tools/call', params: { name, arguments: { patient: 'p-1' } } }),
});

describe("the sidecar's Envoy ext_authz HTTP mode", () => {
  it('answers 200 with the decision headers (and the ok headers) for Envoy to add upstream', async () => {
    const port = await serve({ okHeaders: () => ({ 'x-portcullis-agent-token': 'own-token' }) });
    const reply = await envoySends(port, payment(4200));
    expect(reply.status).toBe(200);
    expect(reply.headers['x-portcullis-decision']).toBe('allow');
    expect(reply.headers['x-portcullis-decision-id']).toBe(records[0]?.decision.decisionId);
    expect(reply.headers['x-portcullis-agent-token']).toBe('own-token');
    expect(records[0]?.context.transport).toBe('envoy-http');
    expect(records[0]?.call).toMatchObject({ tool: 'stripe-payments', action: 'create_payment', params: { amount: 4200, currency: 'USD' } });
  });

  it('answers approval_needed with 409, the approval header and the JSON body, which Envoy sends the client', async () => {
    const port = await serve();
    const reply = await envoySends(port, payment(50_000));
    expect(reply.status).toBe(409);
    expect(reply.headers['x-portcullis-approval']).toBe('k'.repeat(64));
    expect(JSON.parse(reply.body)).toMatchObject({ decision: 'approval_needed', rule: 'over-limit', decisionId: reply.headers['x-portcullis-decision-id'] });
  });

  it('answers a denied MCP tools/call with 403 and a JSON-RPC error echoing its id', async () => {
    const port = await serve();
    expect((await envoySends(port, mcpCall('read_record'))).status).toBe(200);
    const reply = await envoySends(port, mcpCall('delete_record', 'req-9'));
    expect(reply.status).toBe(403);
    expect(JSON.parse(reply.body)).toMatchObject({ jsonrpc: '2.0', id: 'req-9', error: { code: -31403, data: { decision: 'deny', rule: 'portcullis:default-deny' } } });
  });

  it('denies an MCP request whose Mcp-Name disagrees with its body', async () => {
    const port = await serve();
    const reply = await envoySends(port, mcpCall('delete_record', 3, { 'mcp-protocol-version': '2026-07-28', 'mcp-method': 'tools/call', 'mcp-name': 'read_record' }));
    expect(reply.status).toBe(403);
    expect(JSON.parse(reply.body)).toMatchObject({ id: 3, error: { data: { rule: 'portcullis:uninspectable-request', reasons: [expect.stringMatching(/Mcp-Name header/) as unknown] } } });
  });

  it.each([
    ['a body Envoy cut at max_request_bytes', { ...payment(10), headers: { 'content-type': 'application/json', 'x-envoy-auth-partial-body': 'true' } }, /truncated/],
    ['a POST sent without its body (with_request_body off)', { ...payment(10), body: '', headers: { 'content-type': 'application/json' } }, /did not say the body is whole/],
    ['a body over the inspection limit', { ...payment(10), body: JSON.stringify({ amount: 10, pad: 'x'.repeat(70_000) }) }, /over the inspection limit/],
    ['a body of an unknown content type', { ...payment(10), headers: { 'content-type': 'text/csv' } }, /cannot be inspected/],
    ['a duplicate JSON key', { ...payment(10), body: '{"amount": 10, "amount": 90000}' }, /duplicate key "amount"/],
    ['a repeated Mcp-Method header', { ...mcpCall('read_record'), headers: { 'content-type': 'application/json', 'mcp-method': ['tools/call', 'tools/list'] } }, /mcp-method is repeated/],
  ])('denies %s, never judging a part of it', async (_name, request, reason) => {
    const port = await serve();
    const reply = await envoySends(port, request);
    expect(reply.status).toBe(403);
    const body = JSON.parse(reply.body) as { rule?: string; reasons?: string[]; error?: { data: { rule: string; reasons: string[] } } };
    const answer = body.error?.data ?? body;
    expect(answer.rule).toBe('portcullis:uninspectable-request');
    expect(answer.reasons?.[0]).toMatch(reason);
  });

  it('answers CONNECT as an egress check on host and port', async () => {
    const port = await serve();
    const ask = (authority: string): Promise<string> =>
      new Promise((resolve, reject) => {
        const socket = connect(port, '127.0.0.1', () => { socket.write(`CONNECT ${authority} HTTP/1.1\r\nhost: ${authority}\r\n\r\n`); });
        let text = '';
        socket.on('data', (chunk: Buffer) => { text += chunk.toString('utf8'); });
        socket.on('end', () => { resolve(text); });
        socket.on('error', reject);
      });
    expect(await ask('api.openai.com:443')).toMatch(/^HTTP\/1\.1 200 OK\r\n[\s\S]*x-portcullis-decision: allow/);
    expect(await ask('evil.example.com:443')).toMatch(/^HTTP\/1\.1 403 Forbidden\r\n/);
    expect(records.map((r) => r.call.egress)).toEqual([{ host: 'api.openai.com', port: 443 }, { host: 'evil.example.com', port: 443 }]);
  });

  /** A request written byte for byte, and the status line of the answer. */
  const raw = (port: number, head: string): Promise<string> =>
    new Promise((resolve, reject) => {
      const socket = connect(port, '127.0.0.1', () => { socket.write(`${head}\r\nconnection: close\r\n\r\n`); });
      let text = '';
      socket.on('data', (chunk: Buffer) => { text += chunk.toString('utf8'); });
      socket.on('end', () => { resolve(text); });
      socket.on('error', reject);
    });

  it.each([
    ['a CONNECT whose Host names another host', 'CONNECT evil.example.com:443 HTTP/1.1\r\nhost: api.openai.com:443', /CONNECT target .{0,2}evil\.example\.com:443.{0,2} and the Host header .{0,2}api\.openai\.com:443.{0,2} disagree/],
    ['an absolute-form target whose Host names another host', 'GET http://evil.example.com/x HTTP/1.1\r\nhost: api.openai.com', /names \\"evil\.example\.com\\" and the Host header/],
    ['an origin-form target without a Host', 'GET /x HTTP/1.0', /no Host header/],
  ])('refuses %s, judging neither', async (_name, head, reason) => {
    const port = await serve();
    const text = await raw(port, head);
    expect(text).toMatch(/^HTTP\/1\.[01] 403 Forbidden\r\n/);
    expect(text).toMatch(reason);
    expect(records.map((r) => r.decision.rule)).toEqual(['portcullis:uninspectable-request']);
  });

  it('judges an absolute-form target by the host it names, which Host agrees with', async () => {
    const port = await serve();
    const text = await raw(port, 'GET http://api.openai.com/v1/models HTTP/1.1\r\nhost: API.openai.com');
    expect(text).toMatch(/^HTTP\/1\.1 200 OK\r\n/);
    expect(records[0]?.call.egress).toEqual({ host: 'api.openai.com', port: 80 });
  });

  it('tells Envoy to remove an agent token from an egress call, and adds none', async () => {
    const port = await serve({ okHeaders: () => ({ 'x-portcullis-agent-token': 'own-token' }) });
    const text = await raw(port, 'CONNECT api.openai.com:443 HTTP/1.1\r\nhost: api.openai.com:443\r\nx-portcullis-agent-token: forwarded');
    expect(text).toMatch(/^HTTP\/1\.1 200 OK\r\n/);
    expect(text).toContain('x-envoy-auth-headers-to-remove: x-portcullis-agent-token');
    expect(text).not.toContain('own-token');
  });

  it('fails closed with 500, which Envoy denies, when the answer cannot be made', async () => {
    const port = await serve({ okHeaders: () => { throw new Error('no token yet'); } });
    const reply = await envoySends(port, payment(10));
    expect(reply.status).toBe(500);
    expect(reply.headers['x-portcullis-decision']).toBeUndefined();
  });
});
