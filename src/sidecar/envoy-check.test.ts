import { describe, expect, it } from 'vitest';
import type { SidecarDecision } from './authorizer.ts';
import type { CheckRequest, HttpAttributes } from './envoy-check.ts';
import { APPROVAL_STATUS, callOfCheck, checkResponseOf } from './envoy-check.ts';
import { parseToolTable } from './tools.ts';

const TOOLS = parseToolTable(`
- name: stripe-payments
  http:
    host: payments.tools.svc
    port: 8080
    actions:
      - { name: create_payment, method: POST, path: /v1/payments }
      - { name: get_payment, method: GET, path: /v1/payments/* }
- name: wiki
  http: { host: wiki.tools.svc }
`);

const PAYMENT = '{"amount": 4200, "currency": "USD", "account": "1234567890"}';

/** An HTTP request as Envoy's ext_authz filter describes it; modifiers change what a test is about. */
function check(...modifiers: ((http: HttpAttributes) => void)[]): CheckRequest {
  const http: HttpAttributes = {
    method: 'POST',
    host: 'payments.tools.svc:8080',
    path: '/v1/payments',
    scheme: 'http',
    headers: { ':method': 'POST', ':path': '/v1/payments', ':authority': 'payments.tools.svc:8080', 'content-type': 'application/json' },
    body: PAYMENT,
  };
  for (const modify of modifiers) modify(http);
  return { attributes: { request: { http } } };
}

const packedAsBytes = (http: HttpAttributes): void => {
  http.raw_body = new TextEncoder().encode(http.body ?? '');
  delete http.body;
};
const withBody = (body: string) => (http: HttpAttributes): void => { http.body = body; };
const withHeader = (name: string, value: string) => (http: HttpAttributes): void => { http.headers = { ...http.headers, [name]: value }; };
const to = (method: string, host: string, path: string) => (http: HttpAttributes): void => {
  Object.assign(http, { method, host, path });
};

describe('callOfCheck', () => {
  it.each([
    ['a JSON body as a string', check(), { tool: 'stripe-payments', action: 'create_payment', params: { amount: 4200, currency: 'USD', account: '1234567890' } }],
    ['a JSON body packed as bytes', check(packedAsBytes), { tool: 'stripe-payments', action: 'create_payment', params: { amount: 4200, currency: 'USD', account: '1234567890' } }],
    ['query parameters next to the body', check(to('POST', 'payments.tools.svc:8080', '/v1/payments?idempotency=k1')), { tool: 'stripe-payments', action: 'create_payment', params: { idempotency: 'k1', amount: 4200, currency: 'USD', account: '1234567890' } }],
    ['a path under a /* action', check(to('GET', 'payments.tools.svc:8080', '/v1/payments/p_1?expand=true'), withBody('')), { tool: 'stripe-payments', action: 'get_payment', params: { expand: 'true' } }],
    ['a tool that declares no actions, on any port', check(to('GET', 'WIKI.tools.svc:9000', '/pages/home'), withBody('')), { tool: 'wiki', params: {} }],
    ['an undeclared host, as an egress check on port 80', check(to('GET', 'api.example.com', '/'), withBody('')), { egress: { host: 'api.example.com', port: 80 } }],
    ['a CONNECT tunnel, as an egress check', check(to('CONNECT', 'api.openai.com:443', '')), { egress: { host: 'api.openai.com', port: 443 } }],
  ])('reads %s', (_name, request, call) => {
    expect(callOfCheck(request, TOOLS)).toEqual({ kind: 'call', call });
  });

  it.each([
    ['a duplicate key in the body', check(withBody('{"amount": 1, "amount": 90000}')), /duplicate key "amount"/],
    ['a body cut short', check(withBody('{"amount": 42')), /does not parse strictly/],
    ['a body Envoy marked as partial', check(withHeader('x-envoy-auth-partial-body', 'true')), /truncated/],
    ['a body shorter than its content-length', check(withHeader('content-length', '999')), /not the 999 its content-length says/],
    ['a body over the inspection limit', check(withBody(`{"pad": "${'x'.repeat(70_000)}"}`)), /over the inspection limit/],
    ['a body of a content type that cannot be inspected', check(withHeader('content-type', 'application/x-www-form-urlencoded'), withBody('amount=1')), /cannot be inspected/],
    ['a JSON body that is not an object', check(withBody('[1]')), /not an object/],
    ['a parameter in both query and body', check(to('POST', 'payments.tools.svc:8080', '/v1/payments?amount=1')), /both the query and the body/],
    ['a repeated query parameter', check(to('GET', 'payments.tools.svc:8080', '/v1/payments/p?a=1&a=2'), withBody('')), /repeated/],
    ['a path with an encoded slash', check(to('POST', 'payments.tools.svc:8080', '/v1%2Fpayments')), /normal form/],
    ['a path with a dot segment', check(to('GET', 'payments.tools.svc:8080', '/v1/payments/../admin'), withBody('')), /normal form/],
    ['a method and path the tool does not declare', check(to('DELETE', 'payments.tools.svc:8080', '/v1/payments')), /declares no action for DELETE/],
    ['a host that is not a host name', check(to('GET', 'evil.com@payments.tools.svc', '/'), withBody('')), /not a host name/],
  ])('refuses %s', (_name, request, reason) => {
    const result = callOfCheck(request, TOOLS);
    expect(result.kind).toBe('refuse');
    expect(result.kind === 'refuse' && result.reason).toMatch(reason);
  });

  it('refuses a CheckRequest without an HTTP request', () => {
    expect(callOfCheck({ attributes: {} }, TOOLS)).toEqual({ kind: 'refuse', reason: 'the CheckRequest carries no HTTP request' });
  });
});

const decided = (overrides: Partial<SidecarDecision>): SidecarDecision => ({
  decision: 'allow', enforced: true, policy: 'payments', rule: 'small-payments', revision: '3-aaaaaaaaaaaaaaaa', reasons: [], decisionId: 'd-1', ...overrides,
});

describe('checkResponseOf', () => {
  it('lets an allowed call through with the decision id header', () => {
    const response = checkResponseOf(decided({}));
    expect(response.status.code).toBe(0);
    expect(response.ok_response?.headers.map((h) => [h.header.key, h.header.value])).toEqual([['x-portcullis-decision-id', 'd-1'], ['x-portcullis-decision', 'allow']]);
    expect(response.denied_response).toBeUndefined();
  });

  it('lets a shadow-mode deny through and records the would-be decision in a header', () => {
    const response = checkResponseOf(decided({ decision: 'deny', enforced: false }));
    expect(response.status.code).toBe(0);
    expect(response.ok_response?.headers[1]?.header).toEqual({ key: 'x-portcullis-decision', value: 'shadow:deny' });
  });

  it('denies with 403 and a JSON body naming decision, reasons, policy, rule and decision id', () => {
    const response = checkResponseOf(decided({ decision: 'deny', rule: 'no-coerced-payments', reasons: ['delegated by planner-agent'] }));
    expect(response.status.code).toBe(7);
    expect(response.denied_response?.status.code).toBe(403);
    expect(JSON.parse(response.denied_response?.body ?? '')).toEqual({
      decision: 'deny', policy: 'payments', rule: 'no-coerced-payments', revision: '3-aaaaaaaaaaaaaaaa', reasons: ['delegated by planner-agent'], decisionId: 'd-1',
    });
  });

  it('answers approval_needed with 409 and the approval key in a header and the body', () => {
    const response = checkResponseOf(decided({ decision: 'approval_needed', rule: 'over-limit', approval: 'k'.repeat(64) }));
    expect(response.denied_response?.status.code).toBe(APPROVAL_STATUS);
    expect(response.denied_response?.headers.find((h) => h.header.key === 'x-portcullis-approval')?.header.value).toBe('k'.repeat(64));
    expect(JSON.parse(response.denied_response?.body ?? '{}')).toMatchObject({ approval: 'k'.repeat(64) });
  });

  it('denies an enforced sanitize, which ext_authz cannot apply, and says why', () => {
    const response = checkResponseOf(decided({ decision: 'sanitize', rule: 'ehr-read' }));
    expect(response.denied_response?.status.code).toBe(403);
    expect((JSON.parse(response.denied_response?.body ?? '{}') as { reasons: string[] }).reasons).toEqual(['sanitize cannot be applied to a proxied request: ext_authz cannot rewrite its body']);
  });
});
