import { describe, expect, it } from 'vitest';
import type { AuthorizationDecision } from '../compiler/index.ts';
import { normalizeInput } from '../compiler/index.ts';
import type { DecisionRecord, SidecarDecision } from './authorizer.ts';
import { Authorizer } from './authorizer.ts';
import type { LoadedPolicy } from './bundle-verdict.ts';
import type { CheckRequest, HttpAttributes, ProxiedRequest, ProxyOptions } from './envoy-check.ts';
import { answerOf, APPROVAL_STATUS, checkResponseOf, decideProxied, mapRequest, proxiedRequestOfCheck } from './envoy-check.ts';
import { createSidecarMetrics } from './metrics.ts';
import { toolTable } from './tools.ts';

const TOOLS = toolTable([
  {
    name: 'stripe-payments',
    http: {
      host: 'payments.tools.svc',
      port: 8080,
      actions: [
        { name: 'create_payment', method: 'POST', path: '/v1/payments' },
        { name: 'get_payment', method: 'GET', path: '/v1/payments/*' },
      ],
    },
  },
  { name: 'wiki', http: { host: 'wiki.tools.svc' } },
  { name: 'ehr', mcp: { host: 'ehr-mcp.tools.svc', path: '/mcp' } },
]);

const PAYMENT = '{"amount": 4200, "currency": "USD", "account": "1234567890"}';
const TRACEPARENT = '00-0af7651916cd43dd8448eb211c80319c-00f067aa0ba902b7-01';

/** An HTTP request as Envoy's ext_authz filter describes it (with_request_body on); modifiers change what a test is about. */
function check(...modifiers: ((http: HttpAttributes) => void)[]): CheckRequest {
  const http: HttpAttributes = {
    method: 'POST',
    host: 'payments.tools.svc:8080',
    path: '/v1/payments',
    scheme: 'http',
    headers: { ':method': 'POST', ':path': '/v1/payments', ':authority': 'payments.tools.svc:8080', 'content-type': 'application/json', 'x-envoy-auth-partial-body': 'false' },
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
const withoutHeader = (name: string) => (http: HttpAttributes): void => {
  const { [name]: _dropped, ...rest } = http.headers ?? {};
  http.headers = rest;
};
const to = (method: string, host: string, path: string) => (http: HttpAttributes): void => {
  Object.assign(http, { method, host, path });
  http.headers = { ...http.headers, ':method': method, ':path': path, ':authority': host };
};
const rawHeaders = (...pairs: [string, string][]) => (http: HttpAttributes): void => {
  http.header_map = { headers: pairs.map(([key, value]) => ({ key, raw_value: new TextEncoder().encode(value) })) };
};

function requestOf(checkRequest: CheckRequest): ProxiedRequest {
  const request = proxiedRequestOfCheck(checkRequest);
  if ('refuse' in request) throw new Error(request.refuse);
  return request;
}

const mapped = (checkRequest: CheckRequest): ReturnType<typeof mapRequest> => mapRequest(requestOf(checkRequest), TOOLS);

describe('mapRequest', () => {
  it.each([
    ['a JSON body as a string', check(), { tool: 'stripe-payments', action: 'create_payment', params: { amount: 4200, currency: 'USD', account: '1234567890' } }],
    ['a JSON body packed as bytes', check(packedAsBytes), { tool: 'stripe-payments', action: 'create_payment', params: { amount: 4200, currency: 'USD', account: '1234567890' } }],
    ['a body whose content-length matches, without the partial-body header', check(withoutHeader('x-envoy-auth-partial-body'), withHeader('content-length', String(PAYMENT.length))), { tool: 'stripe-payments', action: 'create_payment', params: { amount: 4200, currency: 'USD', account: '1234567890' } }],
    ['query parameters next to the body', check(to('POST', 'payments.tools.svc:8080', '/v1/payments?idempotency=k1')), { tool: 'stripe-payments', action: 'create_payment', params: { idempotency: 'k1', amount: 4200, currency: 'USD', account: '1234567890' } }],
    ['a path under a /* action', check(to('GET', 'payments.tools.svc:8080', '/v1/payments/p_1?expand=true'), withBody(''), withoutHeader('x-envoy-auth-partial-body')), { tool: 'stripe-payments', action: 'get_payment', params: { expand: 'true' } }],
    ['a tool that declares no actions, on any port', check(to('GET', 'WIKI.tools.svc:9000', '/pages/home'), withBody(''), withoutHeader('x-envoy-auth-partial-body')), { tool: 'wiki', params: {} }],
    ['a POST that says it has no body', check(to('POST', 'wiki.tools.svc', '/pages'), withBody(''), withoutHeader('x-envoy-auth-partial-body'), withHeader('content-length', '0')), { tool: 'wiki', params: {} }],
    ['an undeclared host, as an egress check on port 80', check(to('GET', 'api.example.com', '/'), withBody('')), { egress: { host: 'api.example.com', port: 80 } }],
    ['a CONNECT tunnel, as an egress check', check(to('CONNECT', 'api.openai.com:443', '')), { egress: { host: 'api.openai.com', port: 443 } }],
    ['an egress path in any form, as only the host and port are judged', check(to('GET', 'a.slack.com', '/x/..;/%c0%ae?a=1&a=2'), withBody('')), { egress: { host: 'a.slack.com', port: 80 } }],
    ['percent-encoded letters, compared decoded', check(to('GET', 'payments.tools.svc:8080', '/v1/p%61yments/p_1?%65xpand=tr%75e'), withBody('')), { tool: 'stripe-payments', action: 'get_payment', params: { expand: 'true' } }],
    ['a __proto__ query parameter, as a parameter', check(to('GET', 'payments.tools.svc:8080', '/v1/payments/p?__proto__=x'), withBody('')), { tool: 'stripe-payments', action: 'get_payment', params: JSON.parse('{"__proto__":"x"}') as unknown }],
    [
      'an MCP tools/call, as the declared tool with the MCP tool as action',
      check(to('POST', 'ehr-mcp.tools.svc', '/mcp'), withBody('{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"read_record","arguments":{"patient":"p-1"}}}')),
      { tool: 'ehr', action: 'read_record', params: { patient: 'p-1' } },
    ],
  ])('reads %s', (_name, request, call) => {
    expect(mapped(request).result).toEqual({ kind: 'call', call });
  });

  it.each([
    ['a duplicate key in the body', check(withBody('{"amount": 1, "amount": 90000}')), /duplicate key "amount"/],
    ['a body cut short', check(withBody('{"amount": 42')), /does not parse strictly/],
    ['a body Envoy marked as partial', check(withHeader('x-envoy-auth-partial-body', 'true')), /truncated/],
    ['a partial-body header that is neither true nor false', check(withHeader('x-envoy-auth-partial-body', 'maybe')), /neither true nor false/],
    ['a body shorter than its content-length', check(withHeader('content-length', '999')), /not the 999 its content-length says/],
    ['a POST whose body was not sent for inspection', check(withBody(''), withoutHeader('x-envoy-auth-partial-body')), /did not say the body is whole/],
    ['a body without the partial-body header or a content-length', check(withoutHeader('x-envoy-auth-partial-body')), /did not say the body is whole/],
    ['a body over the inspection limit', check(withBody(`{"pad": "${'x'.repeat(70_000)}"}`)), /over the inspection limit/],
    ['a body of a content type that cannot be inspected', check(withHeader('content-type', 'application/x-www-form-urlencoded'), withBody('amount=1')), /cannot be inspected/],
    ['a body without a content type', check(withoutHeader('content-type')), /content type "" cannot be inspected/],
    ['a JSON body that is not an object', check(withBody('[1]')), /not an object/],
    ['a body that is not UTF-8', check((http) => { http.raw_body = new Uint8Array([0x7b, 0xff, 0x7d]); delete http.body; }), /not UTF-8/],
    ['a parameter in both query and body', check(to('POST', 'payments.tools.svc:8080', '/v1/payments?amount=1')), /both the query and the body/],
    ['a repeated query parameter', check(to('GET', 'payments.tools.svc:8080', '/v1/payments/p?a=1&a=2'), withBody('')), /repeated/],
    ['a path with an encoded slash', check(to('POST', 'payments.tools.svc:8080', '/v1%2Fpayments')), /encoded slash/],
    ['a path with a dot segment', check(to('GET', 'payments.tools.svc:8080', '/v1/payments/../admin'), withBody('')), /dot segment/],
    ['a method and path the tool does not declare', check(to('DELETE', 'payments.tools.svc:8080', '/v1/payments')), /declares no action for DELETE/],
    ['a host that is not a host name', check(to('GET', 'evil.com@payments.tools.svc', '/'), withBody('')), /not a host name/],
    ['an MCP batch', check(to('POST', 'ehr-mcp.tools.svc', '/mcp'), withBody('[{"jsonrpc":"2.0","id":1,"method":"tools/list"}]')), /batch/],
    ['an MCP message cut short', check(to('POST', 'ehr-mcp.tools.svc', '/mcp'), withHeader('x-envoy-auth-partial-body', 'true')), /truncated/],
    ['an MCP endpoint path in upper case', check(to('POST', 'ehr-mcp.tools.svc', '/MCP')), /declares no action for POST \/MCP/],
    ['an MCP endpoint path with a trailing slash', check(to('POST', 'ehr-mcp.tools.svc', '/mcp/')), /declares no action for POST \/mcp\//],
    ['an MCP endpoint path with a ; parameter', check(to('POST', 'ehr-mcp.tools.svc', '/mcp;x')), /";"/],
    ['another path of a host that only has an MCP endpoint', check(to('POST', 'ehr-mcp.tools.svc', '/other')), /the tool ehr declares no action/],
    ['the declared host on another port', check(to('POST', 'payments.tools.svc:9090', '/v1/payments')), /declares tools on other ports than 9090/],
    ['a tool host under a longer name of the same service', check(to('POST', 'payments.tools.svc.cluster.local:8080', '/v1/payments')), /names the tool host payments\.tools\.svc under another name/],
    ['a tool host under a shorter name the resolver completes', check(to('POST', 'payments.tools:8080', '/v1/payments')), /under another name/],
    ['a CONNECT tunnel to a host that declares tools', check(to('CONNECT', 'payments.tools.svc:8080', '')), /tunnel to it would hide its calls/],
    ['a method in lower case', check(to('post', 'payments.tools.svc:8080', '/v1/payments')), /not an upper-case HTTP method/],
    ['a path with ..; (Tomcat and Spring read ..)', check(to('GET', 'payments.tools.svc:8080', '/v1/payments/..;/admin'), withBody('')), /";"/],
    ['a path with a backslash', check(to('GET', 'payments.tools.svc:8080', '/v1/payments/..\\admin'), withBody('')), /backslash/],
    ['a doubly encoded dot segment', check(to('GET', 'payments.tools.svc:8080', '/v1/payments/%252e%252e%252fadmin'), withBody('')), /encoded twice/],
    ['an overlong UTF-8 dot', check(to('GET', 'payments.tools.svc:8080', '/v1/payments/%c0%ae%c0%ae/admin'), withBody('')), /overlong/],
    ['a %u escape', check(to('GET', 'payments.tools.svc:8080', '/v1/payments/%u002e%u002e/admin'), withBody('')), /%u escape/],
    ['an X-HTTP-Method-Override header', check(to('GET', 'payments.tools.svc:8080', '/v1/payments/p'), withBody(''), withHeader('x-http-method-override', 'DELETE')), /x-http-method-override/],
    ['an X-Method-Override header', check(withHeader('x-method-override', 'PUT')), /x-method-override/],
    ['a _method query parameter', check(to('GET', 'payments.tools.svc:8080', '/v1/payments/p?_method=DELETE'), withBody('')), /_method/],
    ['a _method body member', check(withBody('{"amount": 1, "_METHOD": "DELETE"}')), /_method/],
    ['query parameters separated by ;', check(to('GET', 'payments.tools.svc:8080', '/v1/payments/p?name=secret;name=x'), withBody('')), /";"/],
    ['query parameters that differ only in case', check(to('GET', 'payments.tools.svc:8080', '/v1/payments/p?Name=secret&name=x'), withBody('')), /differ only in letter case/],
    ['a bracketed query parameter', check(to('GET', 'payments.tools.svc:8080', '/v1/payments/p?name[]=secret'), withBody('')), /bracket/],
    ['an encoded bracketed query parameter', check(to('GET', 'payments.tools.svc:8080', '/v1/payments/p?name%5B%5D=secret'), withBody('')), /bracketed/],
    ['a query parameter encoded into another one', check(to('GET', 'payments.tools.svc:8080', '/v1/payments/p?name=x&n%61me=secret'), withBody('')), /repeated/],
    ['a + in the query', check(to('GET', 'payments.tools.svc:8080', '/v1/payments/p?name=a+b'), withBody('')), /%20 or %2B/],
    ['a query parameter and a body member that differ only in case', check(to('POST', 'payments.tools.svc:8080', '/v1/payments?Amount=1')), /differ only in letter case/],
    ['body members that differ only in case', check(withBody('{"amount": 1, "AMOUNT": 90000}')), /differ only in letter case/],
    ['a number a double cannot hold as written', check(withBody('{"amount": 5000.0000000000000001}')), /not exactly the double/],
  ])('refuses %s', (_name, request, reason) => {
    const { result } = mapped(request);
    expect(result.kind).toBe('refuse');
    expect(result.kind === 'refuse' && result.reason).toMatch(reason);
  });

  describe('with the parameter paths the policies read', () => {
    const reading = toolTable([
      { name: 'search', http: { host: 'search.tools.svc', actions: [{ name: 'query', method: 'GET', path: '/search' }, { name: 'save', method: 'POST', path: '/search' }] } },
      { name: 'ehr', mcp: { host: 'ehr-mcp.tools.svc', path: '/mcp' } },
    ], [['name'], ['invoice', 'amount']]);
    const mapWith = (request: CheckRequest): ReturnType<typeof mapRequest> => mapRequest(requestOf(request), reading);
    const search = (query: string): CheckRequest => check(to('GET', 'search.tools.svc', `/search?${query}`), withBody(''));
    const save = (body: string): CheckRequest => check(to('POST', 'search.tools.svc', '/search'), withBody(body));

    it.each([
      ['a lone query name in another letter case', search('Name=secret'), /the parameter Name differs only in letter case from name, which the policy reads/],
      ['a body member in another letter case', save('{"NAME": "secret"}'), /NAME differs only in letter case from name/],
      ['a nested member in another letter case along a path read', save('{"invoice": {"Amount": 90000}}'), /invoice\.Amount differs only in letter case from invoice\.amount/],
      ['an outer member in another letter case', save('{"Invoice": {"amount": 90000}}'), /Invoice differs only in letter case from invoice/],
      ['an MCP argument in another letter case', check(to('POST', 'ehr-mcp.tools.svc', '/mcp'), withBody('{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"find","arguments":{"nAme":"secret"}}}')), /nAme differs only in letter case from name/],
    ])('refuses %s', (_name, request, reason) => {
      const { result } = mapWith(request);
      expect(result.kind === 'refuse' && result.reason).toMatch(reason);
    });

    it.each([
      ['names the policies read as written', search('name=x&pageSize=2'), { name: 'x', pageSize: '2' }],
      ['names in any letter case the policies do not read', save('{"Customer": {"Name": "x"}, "invoice": {"amount": 1, "Note": "y"}}'), { Customer: { Name: 'x' }, invoice: { amount: 1, Note: 'y' } }],
    ])('reads %s', (_name, request, params) => {
      expect(mapWith(request).result).toMatchObject({ kind: 'call', call: { params } });
    });
  });

  it('refuses a repeated content-type, MCP or pseudo-header in raw header_map', () => {
    for (const name of ['content-type', 'mcp-method', ':path']) {
      expect(proxiedRequestOfCheck(check(rawHeaders([name, 'a'], [name, 'b'])))).toEqual({ refuse: `the header ${name} is repeated` });
    }
  });

  it('refuses a CheckRequest without an HTTP request', () => {
    expect(proxiedRequestOfCheck({ attributes: {} })).toEqual({ refuse: 'the CheckRequest carries no HTTP request' });
  });

  it('marks MCP requests, with the id to echo once it was read and none before', () => {
    const mcp = (body: string): ReturnType<typeof mapRequest> => mapped(check(to('POST', 'ehr-mcp.tools.svc', '/mcp'), withBody(body)));
    expect(mcp('{"jsonrpc":"2.0","id":"r-1","method":"tools/list"}').mcp).toEqual({ id: 'r-1' });
    expect(mcp('{"jsonrpc":"2.0","id":"r-2","method":"tools/call","params":{}}')).toMatchObject({ result: { kind: 'refuse' }, mcp: { id: 'r-2' } });
    expect(mcp('{"jsonrpc":"2.0","id":"r-3"')).toMatchObject({ result: { kind: 'refuse' }, mcp: {} });
    expect(mapped(check()).mcp).toBeUndefined();
  });

  it("takes the trace context from MCP's params._meta, else from the traceparent header", () => {
    const other = '00-11111111111111111111111111111111-2222222222222222-01';
    const meta = `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","_meta":{"traceparent":"${TRACEPARENT}"}}}`;
    expect(mapped(check(to('POST', 'ehr-mcp.tools.svc', '/mcp'), withBody(meta), withHeader('traceparent', other))).traceparent).toBe(TRACEPARENT);
    expect(mapped(check(withHeader('traceparent', other))).traceparent).toBe(other);
    expect(mapped(check(withHeader('traceparent', 'not-a-trace'))).traceparent).toBeUndefined();
  });
});

const decided = (overrides: Partial<SidecarDecision>): SidecarDecision => ({
  decision: 'allow', enforced: true, policy: 'payments', rule: 'small-payments', revision: '3-aaaaaaaaaaaaaaaa', reasons: [], decisionId: 'd-1', ...overrides,
});
const headerOf = (answer: { headers: [string, string][] }, name: string): string | undefined => answer.headers.find(([key]) => key === name)?.[1];

describe('answerOf', () => {
  it('lets an allowed call through with the decision headers last, after the ok headers', () => {
    const answer = answerOf(decided({}), { okHeaders: { 'x-portcullis-agent-token': 't', 'x-portcullis-decision': 'forged' } });
    expect(answer).toMatchObject({ allowed: true, status: 200, body: '' });
    expect(answer.headers).toEqual([['x-portcullis-agent-token', 't'], ['x-portcullis-decision-id', 'd-1'], ['x-portcullis-decision', 'allow']]);
  });

  it('lets a shadow-mode deny through and records the would-be decision in a header', () => {
    const answer = answerOf(decided({ decision: 'deny', enforced: false }));
    expect(answer.allowed).toBe(true);
    expect(headerOf(answer, 'x-portcullis-decision')).toBe('shadow:deny');
  });

  it('denies with 403 and a JSON body naming decision, reasons, policy, rule and decision id', () => {
    const answer = answerOf(decided({ decision: 'deny', rule: 'no-coerced-payments', reasons: ['delegated by planner-agent'] }));
    expect(answer).toMatchObject({ allowed: false, status: 403 });
    expect(JSON.parse(answer.body)).toEqual({
      decision: 'deny', policy: 'payments', rule: 'no-coerced-payments', revision: '3-aaaaaaaaaaaaaaaa', reasons: ['delegated by planner-agent'], decisionId: 'd-1',
    });
    expect(headerOf(answer, 'x-portcullis-decision-id')).toBe('d-1');
  });

  it('answers approval_needed with 409 and the approval key in a header and the body', () => {
    const answer = answerOf(decided({ decision: 'approval_needed', rule: 'over-limit', approval: 'k'.repeat(64) }));
    expect(answer.status).toBe(APPROVAL_STATUS);
    expect(headerOf(answer, 'x-portcullis-approval')).toBe('k'.repeat(64));
    expect(JSON.parse(answer.body)).toMatchObject({ approval: 'k'.repeat(64) });
  });

  it('says when to retry a rate-limited call, in retry-after and the body', () => {
    const answer = answerOf(decided({ decision: 'deny', rule: 'rateLimits[0]', retryAfterSeconds: 2, resetsAt: '2026-11-24T00:00:00-05:00' }));
    expect(headerOf(answer, 'retry-after')).toBe('2');
    expect(JSON.parse(answer.body)).toMatchObject({ retryAfterSeconds: 2, resetsAt: '2026-11-24T00:00:00-05:00' });
    expect(headerOf(answerOf(decided({ decision: 'deny' })), 'retry-after')).toBeUndefined();
  });

  it('lets an enforced sanitize through, marked sanitize, when ext_proc follows to rewrite it', () => {
    const answer = answerOf(decided({ decision: 'sanitize', rule: 'ehr-read' }), { sanitizeDownstream: true });
    expect(answer.allowed).toBe(true);
    expect(answer.headers).toContainEqual(['x-portcullis-decision', 'sanitize']);
  });

  it('denies an enforced sanitize, which ext_authz cannot apply, and says why', () => {
    const answer = answerOf(decided({ decision: 'sanitize', rule: 'ehr-read' }));
    expect(answer.status).toBe(403);
    expect((JSON.parse(answer.body) as { reasons: string[] }).reasons).toEqual(['sanitize cannot be applied to a proxied request: ext_authz cannot rewrite its body']);
  });

  it('denies an MCP message with a JSON-RPC error echoing its id, the answer in error.data', () => {
    const answer = answerOf(decided({ decision: 'deny', policy: 'ehr', rule: 'no-export', reasons: ['params.rows 90000 > max 10000'] }), { mcp: { id: 'r-1' } });
    expect(answer.status).toBe(403);
    expect(headerOf(answer, 'content-type')).toBe('application/json');
    expect(JSON.parse(answer.body)).toEqual({
      jsonrpc: '2.0',
      id: 'r-1',
      error: {
        code: -31403,
        message: 'deny by ehr/no-export: params.rows 90000 > max 10000',
        data: { decision: 'deny', policy: 'ehr', rule: 'no-export', revision: '3-aaaaaaaaaaaaaaaa', reasons: ['params.rows 90000 > max 10000'], decisionId: 'd-1' },
      },
    });
    expect(JSON.parse(answerOf(decided({ decision: 'approval_needed', approval: 'k' }), { mcp: {} }).body)).toMatchObject({ error: { code: -31409, data: { approval: 'k' } } });
  });
});

describe('checkResponseOf', () => {
  it('is ok_response with every header set to overwrite for an allowed call', () => {
    const response = checkResponseOf(answerOf(decided({})));
    expect(response.status.code).toBe(0);
    expect(response.ok_response?.headers).toEqual([
      { header: { key: 'x-portcullis-decision-id', value: 'd-1' }, append_action: 2 },
      { header: { key: 'x-portcullis-decision', value: 'allow' }, append_action: 2 },
    ]);
    expect(response.denied_response).toBeUndefined();
  });

  it('is PERMISSION_DENIED with the denied status, headers and body', () => {
    const response = checkResponseOf(answerOf(decided({ decision: 'approval_needed', rule: 'over-limit', approval: 'k' })));
    expect(response.status).toEqual({ code: 7, message: 'approval_needed by over-limit' });
    expect(response.denied_response?.status.code).toBe(409);
    expect(JSON.parse(response.denied_response?.body ?? '{}')).toMatchObject({ decision: 'approval_needed', approval: 'k' });
  });
});

/** A policy that checks the call's shape as the real one does, allows create_payment up to 5000 and denies the rest. */
const paymentsPolicy: LoadedPolicy = {
  revision: '1-aaaaaaaaaaaaaaaa',
  tenant: 'finance',
  authorize: (input): AuthorizationDecision => {
    const call = normalizeInput(input, () => new Date());
    const allowed = call.action === 'create_payment' && typeof call.params.amount === 'number' && call.params.amount <= 5000;
    return { decision: allowed ? 'allow' : 'deny', enforced: true, policy: allowed ? 'payments' : null, rule: allowed ? 'small-payments' : 'portcullis:default-deny', revision: '1-aaaaaaaaaaaaaaaa', reasons: [] };
  },
  obligations: () => ({ calls: [], rate: [], spend: [] }),
  standing: () => undefined,
};

function proxy(overrides: Partial<ProxyOptions> = {}): { options: ProxyOptions; records: DecisionRecord[] } {
  const records: DecisionRecord[] = [];
  const authorizer = new Authorizer({
    identity: { namespace: 'finance', agent: 'finance-agent' }, tenant: 'finance', policy: () => paymentsPolicy, metrics: createSidecarMetrics(), observers: [(r) => records.push(r)],
  });
  return { options: { authorizer, tools: () => TOOLS, ...overrides }, records };
}

describe('decideProxied', () => {
  it('authorizes the mapped call under the sidecar identity, with the trace context', async () => {
    const { options, records } = proxy();
    const answer = await decideProxied(requestOf(check(withHeader('traceparent', TRACEPARENT))), 'grpc', options);
    expect(answer.allowed).toBe(true);
    expect(records[0]?.call).toMatchObject({ namespace: 'finance', agent: 'finance-agent', tool: 'stripe-payments', action: 'create_payment' });
    expect(records[0]?.context).toEqual({ transport: 'grpc', traceparent: TRACEPARENT });
  });

  it('denies a request it cannot read as a recorded decision with the uninspectable rule', async () => {
    const { options, records } = proxy();
    const answer = await decideProxied(requestOf(check(withBody('{"amount": 1, "amount": 9}'))), 'envoy-http', options);
    expect(JSON.parse(answer.body)).toMatchObject({ decision: 'deny', rule: 'portcullis:uninspectable-request' });
    expect(records).toHaveLength(1);
  });

  it('passes the lower-cased headers to verify and the verified facts into the context', async () => {
    let seen: ReadonlyMap<string, string> | undefined;
    const { options, records } = proxy({
      verify: (headers) => {
        seen = headers;
        return Promise.resolve({ delegation: ['planner-agent'] });
      },
    });
    await decideProxied(requestOf(check(withHeader('X-Portcullis-Agent-Token', 'tok'))), 'grpc', options);
    expect(seen?.get('x-portcullis-agent-token')).toBe('tok');
    expect(records[0]?.context.verified).toEqual({ delegation: ['planner-agent'] });
    expect(records[0]?.call).toMatchObject({ delegation: ['planner-agent'] });
  });

  it.each([
    ['refuses', (): Promise<{ refuse: string }> => Promise.resolve({ refuse: 'the forwarded token has expired' }), /the forwarded token has expired/],
    ['throws', (): Promise<never> => Promise.reject(new Error('jwks unreachable')), /could not be verified: jwks unreachable/],
  ])('denies with the untrusted-token rule when verify %s', async (_name, verify, reason) => {
    const { options } = proxy({ verify });
    const body = JSON.parse((await decideProxied(requestOf(check()), 'grpc', options)).body) as { rule: string; reasons: string[] };
    expect(body.rule).toBe('portcullis:untrusted-token');
    expect(body.reasons[0]).toMatch(reason);
  });

  it('adds the ok headers to a call it lets through, and only to such a call', async () => {
    let asked = 0;
    const { options } = proxy({ okHeaders: () => { asked++; return { 'x-portcullis-agent-token': 'own' }; } });
    const allowed = await decideProxied(requestOf(check()), 'grpc', options);
    expect(headerOf(allowed, 'x-portcullis-agent-token')).toBe('own');
    const denied = await decideProxied(requestOf(check(withBody('{"amount": 90000}'))), 'grpc', options);
    expect(headerOf(denied, 'x-portcullis-agent-token')).toBeUndefined();
    expect(asked).toBe(1);
  });

  it.each([
    ['plain HTTP egress', check(to('GET', 'a.slack.com', '/api/chat'), withBody(''), withHeader('x-portcullis-agent-token', 'forwarded'))],
    ['a CONNECT tunnel', check(to('CONNECT', 'api.openai.com:443', ''), withBody(''))],
  ])('never gives the agent token to %s, and has Envoy remove a forwarded one', async (_name, request) => {
    let asked = 0;
    const { options } = proxy({ okHeaders: () => { asked++; return { 'x-portcullis-agent-token': 'own' }; } });
    const egressPolicy: LoadedPolicy = { ...paymentsPolicy, authorize: (): AuthorizationDecision => ({ decision: 'allow', enforced: true, policy: 'egress', rule: 'llm-egress', revision: '1-aaaaaaaaaaaaaaaa', reasons: [] }) };
    const authorizer = new Authorizer({ identity: { namespace: 'finance', agent: 'finance-agent' }, tenant: 'finance', policy: () => egressPolicy, metrics: createSidecarMetrics() });
    const answer = await decideProxied(requestOf(request), 'grpc', { ...options, authorizer });
    expect(answer.allowed).toBe(true);
    expect(headerOf(answer, 'x-portcullis-agent-token')).toBeUndefined();
    expect(answer.headersToRemove).toEqual(['x-portcullis-agent-token']);
    expect(checkResponseOf(answer).ok_response?.headers_to_remove).toEqual(['x-portcullis-agent-token']);
    expect(asked).toBe(0);
  });

  it('keeps the agent token of a tool call, removing nothing', async () => {
    const { options } = proxy({ okHeaders: () => ({ 'x-portcullis-agent-token': 'own' }) });
    const answer = await decideProxied(requestOf(check()), 'grpc', options);
    expect(headerOf(answer, 'x-portcullis-agent-token')).toBe('own');
    expect(answer.headersToRemove).toEqual([]);
  });

  it('answers a denied MCP message with a JSON-RPC error echoing its id', async () => {
    const { options } = proxy();
    const body = '{"jsonrpc":"2.0","id":42,"method":"tools/call","params":{"name":"export_all"}}';
    const answer = await decideProxied(requestOf(check(to('POST', 'ehr-mcp.tools.svc', '/mcp'), withBody(body))), 'grpc', options);
    expect(JSON.parse(answer.body)).toMatchObject({ jsonrpc: '2.0', id: 42, error: { code: -31403, data: { decision: 'deny', rule: 'portcullis:default-deny' } } });
  });

  it('turns a call the contract refuses into a deny naming the field', async () => {
    const { options } = proxy();
    const body = '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"bad name"}}';
    const answer = await decideProxied(requestOf(check(to('POST', 'ehr-mcp.tools.svc', '/mcp'), withBody(body))), 'grpc', options);
    expect(JSON.parse(answer.body)).toMatchObject({ id: 1, error: { data: { rule: 'portcullis:uninspectable-request', reasons: [expect.stringMatching(/action/) as unknown] } } });
  });
});
