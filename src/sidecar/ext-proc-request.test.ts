import { describe, expect, it } from 'vitest';
import { redact } from '../compiler/redact.ts';
import { headerMapOf, proxiedRequestOf, sanitizedRequest } from './ext-proc-request.ts';

const raw = (key: string, value: string): { key: string; raw_value: Uint8Array } => ({ key, raw_value: Buffer.from(value) });
const request = (path: string, body = ''): ReturnType<typeof proxiedRequestOf> =>
  proxiedRequestOf(new Map([[':method', 'POST'], [':path', path], [':authority', 'ehr.tools.svc'], ['content-type', 'application/json']]), Buffer.from(body));

describe('headerMapOf', () => {
  it('reads raw values under lower-cased names and joins a repeated header with commas', () => {
    const map = headerMapOf([raw(':Path', '/x'), raw('Accept', 'a'), raw('accept', 'b'), { key: 'x-plain', value: 'v' }]);
    expect(map).toEqual(new Map([[':path', '/x'], ['accept', 'a,b'], ['x-plain', 'v']]));
  });

  it('refuses a repeated header the tool could read either value of', () => {
    expect(headerMapOf([raw('content-type', 'application/json'), raw('Content-Type', 'text/plain')])).toEqual({ refuse: 'the header content-type is repeated' });
  });
});

describe('proxiedRequestOf', () => {
  it('takes method, path, authority and scheme from the pseudo-headers and says the body is whole', () => {
    const proxied = proxiedRequestOf(new Map([[':method', 'GET'], [':path', '/a?b=1'], [':authority', 'h:8080'], ['x-envoy-auth-partial-body', 'true']]), new Uint8Array());
    expect(proxied).toMatchObject({ method: 'GET', path: '/a?b=1', authority: 'h:8080', scheme: 'http', clientContentLength: true });
    expect(proxied.headers.get('x-envoy-auth-partial-body')).toBe('false');
  });
});

describe('sanitizedRequest', () => {
  it('puts redacted body members back in the body, in their order, and leaves an unchanged query alone', () => {
    const params = { id: '7', note: 'mail dana@example.com', ssn: '123-45-6789', n: 1 };
    const { params: redacted } = redact(params, ['email', 'ssn']);
    const rewrite = sanitizedRequest(request('/v1/records?id=7', '{"note": "mail dana@example.com", "ssn": "123-45-6789", "n": 1}'), params, redacted, false);
    expect(rewrite).toEqual({ body: '{"note":"mail [REDACTED:email]","ssn":"[REDACTED:ssn]","n":1}' });
  });

  it('rewrites the query when a query parameter was redacted', () => {
    const params = { email: 'dana@example.com', page: '2' };
    const rewrite = sanitizedRequest(request('/v1/search?email=dana%40example.com&page=2'), params, redact(params, ['email']).params, false);
    expect(rewrite).toEqual({ path: '/v1/search?email=%5BREDACTED%3Aemail%5D&page=2' });
  });

  it("puts the redacted arguments of an MCP tools/call back in the message, keeping its id", () => {
    const body = '{"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "read_record", "arguments": {"ssn": "123-45-6789"}}}';
    const params = { ssn: '123-45-6789' };
    expect(sanitizedRequest(request('/mcp', body), params, redact(params, ['ssn']).params, true)).toEqual({
      body: '{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"read_record","arguments":{"ssn":"[REDACTED:ssn]"}}}',
    });
  });

  it('keeps a "__proto__" member a member', () => {
    const params = JSON.parse('{"__proto__": "dana@example.com"}') as Record<string, unknown>;
    const rewrite = sanitizedRequest(request('/v1/x', '{"__proto__": "dana@example.com"}'), params, redact(params, ['email']).params, false);
    expect(rewrite).toEqual({ body: '{"__proto__":"[REDACTED:email]"}' });
  });

  it.each([
    ['params that are not the body', '/v1/x', '{"a": 1}', { a: 2 }, false],
    ['params with a member the request does not have', '/v1/x', '{"a": 1}', { a: 1, b: 2 }, false],
    ['MCP params that are not the arguments', '/mcp', '{"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "t", "arguments": {"a": 1}}}', { a: 2 }, true],
    ['a body that does not parse', '/v1/x', '{"a": 1', { a: 1 }, false],
  ])('refuses %s', (_name, path, body, params, mcp) => {
    expect(sanitizedRequest(request(path, body), params, params, mcp)).toHaveProperty('refuse');
  });
});
