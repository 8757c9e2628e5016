import { describe, expect, it } from 'vitest';
import type { McpHttpRequest } from './mcp.ts';
import { jsonRpcError, MCP_ERROR_CODES, mcpCallOf, McpRefusal } from './mcp.ts';

const TRACEPARENT = '00-0af7651916cd43dd8448eb211c80319c-00f067aa0ba902b7-01';

/** A POST to an MCP endpoint carrying this JSON-RPC message; modifiers change what a test is about. */
function post(message: unknown, ...modifiers: ((request: { method: string; headers: Map<string, string>; body: string }) => void)[]): McpHttpRequest {
  const request = { method: 'POST', headers: new Map([['content-type', 'application/json']]), body: typeof message === 'string' ? message : JSON.stringify(message) };
  for (const modify of modifiers) modify(request);
  return request;
}

const header = (name: string, value: string) => (request: { headers: Map<string, string> }): void => {
  request.headers.set(name, value);
};
/** The 2026-07-28 headers a conforming client sends with a message. */
const modern = (method: string, name?: string) => (request: { headers: Map<string, string> }): void => {
  request.headers.set('mcp-protocol-version', '2026-07-28');
  request.headers.set('mcp-method', method);
  if (name !== undefined) request.headers.set('mcp-name', name);
};

const call = (name: string, args?: unknown, id: unknown = 1): Record<string, unknown> => ({
  jsonrpc: '2.0', id, method: 'tools/call', params: { name, ...(args === undefined ? {} : { arguments: args }) },
});

function refusal(request: McpHttpRequest): McpRefusal {
  try {
    mcpCallOf(request);
  } catch (error) {
    if (error instanceof McpRefusal) return error;
    throw error;
  }
  throw new Error('the request was not refused');
}

describe('mcpCallOf', () => {
  it.each([
    ['tools/call as the MCP tool name with its arguments as params', post(call('read_record', { patient: 'p-1', fields: ['name'] })), { action: 'read_record', params: { patient: 'p-1', fields: ['name'] }, id: 1 }],
    ['tools/call without arguments, as empty params', post(call('list_patients', undefined, 'req-7')), { action: 'list_patients', params: {}, id: 'req-7' }],
    ['tools/list as mcp:tools/list', post({ jsonrpc: '2.0', id: 2, method: 'tools/list', params: { cursor: 'c1' } }), { action: 'mcp:tools/list', params: { cursor: 'c1' }, id: 2 }],
    [
      'initialize as mcp:initialize with its params, _meta left out',
      post({ jsonrpc: '2.0', id: 0, method: 'initialize', params: { protocolVersion: '2025-11-25', capabilities: {}, clientInfo: { name: 'c', version: '1' }, _meta: { k: 'v' } } }),
      { action: 'mcp:initialize', params: { protocolVersion: '2025-11-25', capabilities: {}, clientInfo: { name: 'c', version: '1' } }, id: 0 },
    ],
    ['a notification, without an id', post({ jsonrpc: '2.0', method: 'notifications/initialized' }), { action: 'mcp:notifications/initialized', params: {} }],
    ["a client's response to a server request", post({ jsonrpc: '2.0', id: 'srv-1', result: { action: 'accept' } }), { action: 'mcp:response', params: { result: { action: 'accept' } }, id: 'srv-1' }],
    ['a GET, which opens the server stream', { method: 'GET', headers: new Map<string, string>(), body: '' }, { action: 'mcp:stream', params: {} }],
    ['a DELETE, which ends a session', { method: 'DELETE', headers: new Map([['mcp-session-id', 's-1']]), body: '' }, { action: 'mcp:end-session', params: {} }],
    ['a 2025-11-25 request with its session id', post(call('read_record', {}), header('mcp-session-id', '1868a90c-aa'), header('mcp-protocol-version', '2025-11-25')), { action: 'read_record', params: {}, id: 1 }],
    ['a 2026-07-28 request whose headers agree with the body', post(call('read_record', {}), modern('tools/call', 'read_record')), { action: 'read_record', params: {}, id: 1 }],
    ['an Mcp-Name in the Base64 sentinel form', post(call('données', {}), modern('tools/call', `=?base64?${Buffer.from('données').toString('base64')}?=`)), { action: 'données', params: {}, id: 1 }],
    [
      'resources/read, whose Mcp-Name mirrors params.uri',
      post({ jsonrpc: '2.0', id: 3, method: 'resources/read', params: { uri: 'file:///a.txt' } }, modern('resources/read', 'file:///a.txt')),
      { action: 'mcp:resources/read', params: { uri: 'file:///a.txt' }, id: 3 },
    ],
    ['a 2026-07-28 notification, for which no header is required', post({ jsonrpc: '2.0', method: 'notifications/progress' }, header('mcp-protocol-version', '2026-07-28')), { action: 'mcp:notifications/progress', params: {} }],
    [
      'the traceparent of params._meta',
      post({ jsonrpc: '2.0', id: 4, method: 'tools/call', params: { name: 't', arguments: {}, _meta: { traceparent: TRACEPARENT } } }),
      { action: 't', params: {}, id: 4, traceparent: TRACEPARENT },
    ],
  ])('reads %s', (_name, request, expected) => {
    expect(mcpCallOf(request)).toEqual(expected);
  });

  it.each([
    ['a batch', post([call('a'), call('b', undefined, 2)]), /batch/, undefined],
    ['a body that is not JSON', post('{"jsonrpc": "2.0", "id": 1, "meth'), /does not parse strictly/, undefined],
    ['a duplicate key, naming it', post('{"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "a", "name": "b"}}'), /duplicate key "name"/, undefined],
    ['an empty body', post(''), /no body/, undefined],
    ['a body of another content type', post(call('a'), header('content-type', 'text/plain')), /must be application\/json/, undefined],
    ['a null id', post(call('a', {}, null)), /neither a string nor an integer/, undefined],
    ['a fractional id', post(call('a', {}, 1.5)), /neither a string nor an integer/, undefined],
    ['a message that is not JSON-RPC 2.0', post({ jsonrpc: '1.0', id: 1, method: 'tools/list' }), /JSON-RPC 2\.0/, 1],
    ['a member JSON-RPC does not define', post({ jsonrpc: '2.0', id: 1, method: 'tools/list', extra: true }), /members JSON-RPC does not define: extra/, 1],
    ['positional params', post({ jsonrpc: '2.0', id: 1, method: 'tools/list', params: [1] }), /must be an object/, 1],
    ['tools/call without a tool name', post({ jsonrpc: '2.0', id: 1, method: 'tools/call', params: {} }), /needs params\.name/, 1],
    ['tools/call with arguments that are not an object', post(call('a', [1, 2])), /arguments must be an object/, 1],
    ['tools/call as a notification', post({ jsonrpc: '2.0', method: 'tools/call', params: { name: 'a' } }), /must be a request with an id/, undefined],
    ['a tool name in the mcp: namespace', post(call('mcp:initialize', {})), /names protocol messages/, 1],
    ['a message with both a method and a result', post({ jsonrpc: '2.0', id: 1, method: 'tools/list', result: {} }), /not both/, 1],
    ['a response with neither result nor error', post({ jsonrpc: '2.0', id: 1 }), /exactly one of result or error/, 1],
    ['an Mcp-Method header that disagrees with the body', post(call('a', {}), modern('tools/list')), /Mcp-Method header \(tools\/list\) does not agree/, 1],
    ['an Mcp-Name header that disagrees with the body', post(call('delete_record', {}), modern('tools/call', 'read_record')), /Mcp-Name header \("read_record"\) does not agree/, 1],
    ['an Mcp-Name header on a method with nothing to mirror', post({ jsonrpc: '2.0', id: 1, method: 'tools/list' }, header('mcp-name', 'x')), /does not agree/, 1],
    ['an Mcp-Name that is not Base64 inside the sentinel', post(call('a', {}), modern('tools/call', '=?base64?***?=')), /not valid Base64/, 1],
    ['a 2026-07-28 request without Mcp-Method', post(call('a', {}), header('mcp-protocol-version', '2026-07-28')), /requires the Mcp-Method header/, 1],
    ['a 2026-07-28 tools/call without Mcp-Name', post(call('a', {}), header('mcp-protocol-version', '2026-07-28'), header('mcp-method', 'tools/call')), /requires the Mcp-Name header/, 1],
    [
      'a protocol version header that disagrees with the body',
      post({ jsonrpc: '2.0', id: 1, method: 'tools/list', params: { _meta: { 'io.modelcontextprotocol/protocolVersion': '2026-07-28' } } }, header('mcp-protocol-version', '2025-11-25')),
      /does not agree with the body's io\.modelcontextprotocol\/protocolVersion/,
      1,
    ],
    ['a session id with a control character', post(call('a', {}), header('mcp-session-id', 'a\tb')), /visible ASCII/, 1],
    ['a PUT to the endpoint', { method: 'PUT', headers: new Map<string, string>(), body: '' }, /takes POST, GET or DELETE/, undefined],
    ['a GET with a body', { method: 'GET', headers: new Map<string, string>(), body: '{}' }, /carries no body/, undefined],
  ])('refuses %s, echoing the id once read', (_name, request, reason, id) => {
    const refused = refusal(request);
    expect(refused.message).toMatch(reason);
    expect(refused.id).toBe(id);
  });
});

describe('jsonRpcError', () => {
  it('echoes the id and carries the answer in error.data, with a code per kind of denial', () => {
    expect(jsonRpcError('r-1', false, 'deny by ehr/no-export: x', { decision: 'deny' })).toEqual({
      jsonrpc: '2.0', id: 'r-1', error: { code: MCP_ERROR_CODES.denied, message: 'deny by ehr/no-export: x', data: { decision: 'deny' } },
    });
    expect(jsonRpcError(7, true, 'm', {})).toMatchObject({ id: 7, error: { code: MCP_ERROR_CODES.approvalNeeded } });
  });

  it('has no id when there is none to echo, as JSON-RPC answers an unreadable request', () => {
    expect(jsonRpcError(undefined, false, 'm', {})).not.toHaveProperty('id');
  });
});
