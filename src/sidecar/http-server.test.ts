import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import type { AuthorizationDecision } from '../compiler/index.ts';
import { normalizeInput } from '../compiler/index.ts';
import { Authorizer } from './authorizer.ts';
import type { LoadedPolicy } from './bundle-verdict.ts';
import type { HttpServerOptions } from './http-server.ts';
import { createHttpServer, createStatusServer } from './http-server.ts';
import { createSidecarMetrics } from './metrics.ts';
import { toolTable } from './tools.ts';

/** A policy that checks the call's shape as the real one does and allows it. */
const allowAll: LoadedPolicy = {
  revision: '1-aaaaaaaaaaaaaaaa',
  tenant: 'finance',
  authorize: (input): AuthorizationDecision => {
    normalizeInput(input, () => new Date());
    return { decision: 'allow', enforced: true, policy: 'p', rule: 'r', revision: '1-aaaaaaaaaaaaaaaa', reasons: [] };
  },
  obligations: () => ({ calls: [], rate: [], spend: [] }), standing: () => undefined,
};

let server: Server | undefined;

let seen: unknown[] = [];

async function serve(policy: LoadedPolicy | undefined, maxBodyBytes?: number, verify?: HttpServerOptions['verify'], tools?: HttpServerOptions['tools']): Promise<string> {
  const metrics = createSidecarMetrics();
  const authorizer = new Authorizer({ identity: { namespace: 'finance', agent: 'finance-agent' }, tenant: 'finance', policy: () => policy, metrics, observers: [(r) => { seen.push(r.context); }] });
  server = createHttpServer({ authorizer, registry: metrics.registry, ...(maxBodyBytes === undefined ? {} : { maxBodyBytes }), ...(verify === undefined ? {} : { verify }), ...(tools === undefined ? {} : { tools }) });
  const listening = server;
  await new Promise<void>((resolve) => listening.listen(0, '127.0.0.1', resolve));
  return `http://127.0.0.1:${(listening.address() as AddressInfo).port}`;
}

afterEach(async () => {
  const closing = server;
  server = undefined;
  if (closing !== undefined) await new Promise((resolve) => closing.close(resolve));
});

const post = (base: string, body: string, contentType = 'application/json'): Promise<Response> =>
  fetch(`${base}/v1/authorize`, { method: 'POST', headers: { 'content-type': contentType }, body });

describe('the sidecar HTTP listener', () => {
  it('denies a call whose params name, in another letter case, one the policies read, as the proxied path does', async () => {
    const base = await serve(allowAll, undefined, undefined, () => toolTable([], [['name']]));
    const denied = (await (await post(base, '{"tool": "files", "params": {"Name": "secret"}}')).json()) as { decision: string; reasons: string[] };
    expect(denied.decision).toBe('deny');
    expect(denied.reasons).toEqual(['the parameter Name differs only in letter case from name, which the policy reads']);
    const allowed = (await (await post(base, '{"tool": "files", "params": {"name": "secret"}}')).json()) as { decision: string };
    expect(allowed.decision).toBe('allow');
  });

  it('answers a call with the decision, its id in the body and a header', async () => {
    const base = await serve(allowAll);
    const response = await post(base, '{"tool": "stripe-payments", "params": {"amount": 1}}');
    const body = (await response.json()) as { decision: string; decisionId: string };
    expect(response.status).toBe(200);
    expect(body.decision).toBe('allow');
    expect(response.headers.get('x-portcullis-decision-id')).toBe(body.decisionId);
  });

  it.each([
    ['a duplicate key', '{"tool": "a", "tool": "b"}', 400, /duplicate key "tool"/],
    ['a body that is not JSON', '{"tool": ', 400, /not strict JSON/],
    ['a JSON array', '[]', 400, /must be a JSON object/],
    ['a field of the wrong shape, naming it', '{"tool": "t", "params": "amount=5"}', 400, /params/],
  ])('answers 400 with a clear message for %s', async (_name, body, status, message) => {
    const base = await serve(allowAll);
    const response = await post(base, body);
    expect(response.status).toBe(status);
    expect(((await response.json()) as { error: string }).error).toMatch(message);
  });

  it('refuses a body over the limit with 413 and another content type with 415', async () => {
    const base = await serve(allowAll, 64);
    expect((await post(base, JSON.stringify({ tool: 't', params: { pad: 'x'.repeat(100) } }))).status).toBe(413);
    expect((await post(base, '{}', 'text/plain')).status).toBe(415);
  });

  it('is live at once but ready only with a policy, and denies calls until then', async () => {
    const base = await serve(undefined);
    expect((await fetch(`${base}/healthz`)).status).toBe(200);
    expect((await fetch(`${base}/readyz`)).status).toBe(503);
    expect(await (await post(base, '{"tool": "t"}')).json()).toMatchObject({ decision: 'deny', rule: 'portcullis:no-bundle' });
  });

  it('puts the verified delegation and a well-formed traceparent into the call context', async () => {
    seen = [];
    const base = await serve(allowAll, undefined, (headers) => Promise.resolve(headers.get('x-portcullis-agent-token') === 'delegated' ? { delegation: ['planner-agent'] } : {}));
    const traceparent = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01';
    await fetch(`${base}/v1/authorize`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-portcullis-agent-token': 'delegated', traceparent }, body: '{"tool": "t"}' });
    await fetch(`${base}/v1/authorize`, { method: 'POST', headers: { 'content-type': 'application/json', traceparent: 'garbage' }, body: '{"tool": "t"}' });
    expect(seen).toEqual([{ transport: 'http', traceparent, verified: { delegation: ['planner-agent'] } }, { transport: 'http', verified: {} }]);
  });

  it('denies with portcullis:untrusted-token when the forwarded token is refused, or verifying it fails', async () => {
    for (const verify of [(): Promise<{ refuse: string }> => Promise.resolve({ refuse: 'token_expired: the token expired' }), (): Promise<never> => Promise.reject(new Error('jwks unreachable'))]) {
      const base = await serve(allowAll, undefined, verify);
      const body = (await (await post(base, '{"tool": "t"}')).json()) as { decision: string; rule: string; reasons: string[] };
      expect(body).toMatchObject({ decision: 'deny', rule: 'portcullis:untrusted-token' });
      expect(body.reasons[0]).toMatch(/token_expired|jwks unreachable/);
      const closing = server;
      if (closing !== undefined) await new Promise((resolve) => closing.close(resolve));
      server = undefined;
    }
  });

  it('serves the decision metrics and refuses unknown routes and methods', async () => {
    const base = await serve(allowAll);
    await post(base, '{"tool": "stripe-payments"}');
    expect(await (await fetch(`${base}/metrics`)).text()).toContain('portcullis_decisions_total{decision="allow",enforced="true",policy="p",rule="r",tool="stripe-payments"} 1');
    expect((await fetch(`${base}/nope`)).status).toBe(404);
    expect((await fetch(`${base}/v1/authorize`)).status).toBe(405);
  });
});

describe('the sidecar status listener', () => {
  async function serveStatus(policy: LoadedPolicy | undefined, notReady?: () => string | undefined): Promise<{ base: string; authorizer: Authorizer }> {
    const metrics = createSidecarMetrics();
    const authorizer = new Authorizer({ identity: { namespace: 'finance', agent: 'finance-agent' }, tenant: 'finance', policy: () => policy, metrics, observers: [(r) => { seen.push(r.context); }] });
    server = createStatusServer({ authorizer, registry: metrics.registry, ...(notReady === undefined ? {} : { notReady }) });
    const listening = server;
    await new Promise<void>((resolve) => listening.listen(0, '127.0.0.1', resolve));
    return { base: `http://127.0.0.1:${(listening.address() as AddressInfo).port}`, authorizer };
  }

  it.each([
    ['GET /healthz', 'GET', '/healthz', 200],
    ['HEAD /healthz', 'HEAD', '/healthz', 200],
    ['GET /readyz with a bundle', 'GET', '/readyz', 200],
    ['GET /metrics', 'GET', '/metrics', 200],
    ['HEAD /metrics', 'HEAD', '/metrics', 200],
    ['GET /readyz with a query', 'GET', '/readyz?verbose', 200],
    ['POST /v1/authorize', 'POST', '/v1/authorize', 404],
    ['GET /v1/authorize', 'GET', '/v1/authorize', 404],
    ['POST /readyz', 'POST', '/readyz', 405],
    ['PUT /healthz', 'PUT', '/healthz', 405],
    ['DELETE /metrics', 'DELETE', '/metrics', 405],
    ['OPTIONS /readyz', 'OPTIONS', '/readyz', 405],
    ['GET / (no route)', 'GET', '/', 404],
    ['GET /healthz/ (another path)', 'GET', '/healthz/', 404],
    ['GET /v1/authorize/ (another path)', 'GET', '/v1/authorize/', 404],
  ])('answers %s with %i', async (_name, method, path, status) => {
    const { base } = await serveStatus(allowAll);
    const response = await fetch(`${base}${path}`, { method, ...(method === 'POST' ? { headers: { 'content-type': 'application/json' }, body: '{"tool": "stripe-payments"}' } : {}) });
    expect(response.status).toBe(status);
    if (status === 405) expect(response.headers.get('allow')).toBe('GET, HEAD');
  });

  it('never decides: a call posted to it is 404 and reaches no decision', async () => {
    seen = [];
    const { base } = await serveStatus(allowAll);
    const response = await fetch(`${base}/v1/authorize`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"tool": "stripe-payments", "params": {"amount": 1}}' });
    expect(response.status).toBe(404);
    expect(((await response.json()) as { error: string }).error).toMatch(/serves only \/healthz, \/readyz, \/metrics/);
    expect(seen).toEqual([]);
  });

  it.each([
    ['no bundle is loaded', undefined, undefined, 'no valid policy bundle is loaded yet\n'],
    ['the sidecar is draining', allowAll, (): string => 'the sidecar is shutting down', 'the sidecar is shutting down\n'],
  ])('is not ready, as the decision listener, when %s', async (_name, policy, notReady, reason) => {
    const { base } = await serveStatus(policy, notReady);
    const response = await fetch(`${base}/readyz`);
    expect([response.status, await response.text()]).toEqual([503, reason]);
  });
});
