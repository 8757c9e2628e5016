// MCP streamable HTTP as the sidecar reads it (protocol revisions 2025-11-25
// and 2026-07-28): one JSON-RPC 2.0 message per POST to a declared MCP
// endpoint is one call of that tool. A tools/call request names the action
// (the MCP tool) and its arguments are the params; every other message is a
// call too, named mcp:METHOD, so policy can allow or deny it. The headers that
// mirror the body (Mcp-Method, Mcp-Name, MCP-Protocol-Version) must agree with
// it, and batches, null ids and malformed messages are refused. Pure.
import { parseStrictJson, StrictJsonError } from './strict-json.ts';

/** JSON-RPC ids as MCP allows them: a string or an integer, never null. */
export type JsonRpcId = string | number;

/**
 * Error codes of the JSON-RPC errors the sidecar answers for a denied MCP
 * message. Outside JSON-RPC's reserved range (-32768..-32000), as MCP asks of
 * codes it does not define; they echo the HTTP statuses 403 and 409.
 */
export const MCP_ERROR_CODES = { denied: -31403, approvalNeeded: -31409 } as const;

/** Actions of MCP messages other than tools/call start with it; no MCP tool name may. */
export const MCP_ACTION_PREFIX = 'mcp:';
/** The action of a JSON-RPC response the client sends back (2025-11-25: to a server's sampling or elicitation request). */
export const MCP_RESPONSE_ACTION = 'mcp:response';
/** GET opens the server's SSE stream (2025-11-25); DELETE ends a session. */
export const MCP_HTTP_ACTIONS: Readonly<Record<string, string>> = { GET: 'mcp:stream', DELETE: 'mcp:end-session' };

export const MCP_METHOD_HEADER = 'mcp-method';
export const MCP_NAME_HEADER = 'mcp-name';
export const MCP_PROTOCOL_VERSION_HEADER = 'mcp-protocol-version';
export const MCP_SESSION_HEADER = 'mcp-session-id';
/** Where 2026-07-28 carries the protocol version in the body. */
const PROTOCOL_VERSION_META = 'io.modelcontextprotocol/protocolVersion';
/** The first revision whose requests must carry Mcp-Method (and Mcp-Name where it applies). */
const HEADERS_REQUIRED_SINCE = '2026-07-28';

/** Methods whose Mcp-Name mirrors params.name, and those where it mirrors params.uri. */
const NAME_FROM_NAME = new Set(['tools/call', 'prompts/get']);
const NAME_FROM_URI = new Set(['resources/read', 'resources/subscribe', 'resources/unsubscribe']);
/** Requests that must carry Mcp-Name from 2026-07-28 on. */
const NAME_REQUIRED = new Set(['tools/call', 'resources/read', 'prompts/get']);

const MEMBERS = new Set(['jsonrpc', 'id', 'method', 'params', 'result', 'error']);
const TRACEPARENT = /^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$/;
const SESSION_ID = /^[\x21-\x7e]+$/;
const BASE64_SENTINEL = /^=\?base64\?(.*)\?=$/s;
const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

/** Why an MCP request cannot be judged; id is the request's, once it was read. */
export class McpRefusal extends Error {
  override readonly name = 'McpRefusal';
  readonly id: JsonRpcId | undefined;

  constructor(reason: string, id?: JsonRpcId) {
    super(reason);
    this.id = id;
  }
}

/** The HTTP request to a declared MCP endpoint, its body already read whole and decoded. */
export interface McpHttpRequest {
  method: string;
  /** Lower-cased names. */
  headers: ReadonlyMap<string, string>;
  body: string;
}

/** What one MCP message is as a call of its tool. */
export interface McpCall {
  action: string;
  params: Record<string, unknown>;
  /** The JSON-RPC id, which a denial echoes; absent for notifications. */
  id?: JsonRpcId;
  /** params._meta.traceparent, when it is W3C trace context. */
  traceparent?: string;
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function parseMessage(body: string): Record<string, unknown> {
  if (body === '') throw new McpRefusal('an MCP POST must carry one JSON-RPC message, and this one has no body');
  let message: unknown;
  try {
    message = parseStrictJson(body);
  } catch (error) {
    if (error instanceof StrictJsonError) throw new McpRefusal(`the JSON-RPC message does not parse strictly: ${error.message}`);
    throw error;
  }
  if (Array.isArray(message)) throw new McpRefusal('a JSON-RPC batch cannot be judged as one call; MCP sends one message per POST since 2025-06-18');
  if (!isObject(message)) throw new McpRefusal('the JSON-RPC message is not an object');
  return message;
}

function idOf(message: Record<string, unknown>): JsonRpcId | undefined {
  const { id } = message;
  if (id === undefined || typeof id === 'string' || Number.isSafeInteger(id)) return id as JsonRpcId | undefined;
  throw new McpRefusal(`the JSON-RPC id ${JSON.stringify(id)} is neither a string nor an integer (MCP allows no other, not even null)`);
}

function checkEnvelope(message: Record<string, unknown>, id: JsonRpcId | undefined): void {
  const unknown = Object.keys(message).filter((key) => !MEMBERS.has(key));
  if (unknown.length > 0) throw new McpRefusal(`the JSON-RPC message has members JSON-RPC does not define: ${unknown.join(', ')}`, id);
  if (message.jsonrpc !== '2.0') throw new McpRefusal('the message is not JSON-RPC 2.0 (jsonrpc must be "2.0")', id);
}

/** The value of a header that may be in MCP's Base64 sentinel form, =?base64?...?= (2026-07-28). */
function decodeHeader(value: string, header: string, id: JsonRpcId | undefined): string {
  const sentinel = BASE64_SENTINEL.exec(value);
  if (sentinel === null) return value;
  const encoded = sentinel[1] ?? '';
  if (!BASE64.test(encoded) || encoded.length % 4 !== 0) throw new McpRefusal(`the ${header} header is not valid Base64 inside =?base64?...?=`, id);
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(Buffer.from(encoded, 'base64'));
  } catch {
    throw new McpRefusal(`the ${header} header does not decode to UTF-8`, id);
  }
}

/** Whether this protocol version requires the mirrored headers: 2026-07-28 and later, and any version not named by a date. */
function requiresHeaders(version: string | undefined): boolean {
  if (version === undefined) return false;
  return !/^\d{4}-\d{2}-\d{2}$/.test(version) || version >= HEADERS_REQUIRED_SINCE;
}

/** The body value Mcp-Name mirrors: params.name or params.uri by method. */
function nameSource(method: string, params: Record<string, unknown>): unknown {
  if (NAME_FROM_NAME.has(method)) return params.name;
  if (NAME_FROM_URI.has(method)) return params.uri;
  return params.name ?? params.uri;
}

interface MessageParts {
  method: string | undefined;
  params: Record<string, unknown>;
  meta: Record<string, unknown>;
  id: JsonRpcId | undefined;
}

/** The protocol version the headers speak, once it agrees with the body's; the session id must be visible ASCII. */
function checkVersionAndSession(headers: ReadonlyMap<string, string>, message: MessageParts): string | undefined {
  const { meta, id } = message;
  const version = headers.get(MCP_PROTOCOL_VERSION_HEADER);
  const bodyVersion = meta[PROTOCOL_VERSION_META];
  if (version !== undefined && typeof bodyVersion === 'string' && bodyVersion !== version) {
    throw new McpRefusal(`the MCP-Protocol-Version header (${version}) does not agree with the body's ${PROTOCOL_VERSION_META} (${bodyVersion})`, id);
  }
  const session = headers.get(MCP_SESSION_HEADER);
  if (session !== undefined && !SESSION_ID.test(session)) throw new McpRefusal('the Mcp-Session-Id header holds characters other than visible ASCII', id);
  return version;
}

function checkHeaders(headers: ReadonlyMap<string, string>, message: MessageParts): void {
  const { method, params, id } = message;
  const version = checkVersionAndSession(headers, message);
  const required = requiresHeaders(version) && id !== undefined;
  const methodHeader = headers.get(MCP_METHOD_HEADER);
  if (methodHeader === undefined) {
    if (required && method !== undefined) throw new McpRefusal(`MCP ${version ?? ''} requires the Mcp-Method header on a request, and it is missing`, id);
  } else if (methodHeader !== method) {
    throw new McpRefusal(`the Mcp-Method header (${methodHeader}) does not agree with the body's method (${method ?? 'none: the message is a response'})`, id);
  }
  if (method === undefined) return;
  const nameHeader = headers.get(MCP_NAME_HEADER);
  if (nameHeader === undefined) {
    if (required && NAME_REQUIRED.has(method)) throw new McpRefusal(`MCP ${version ?? ''} requires the Mcp-Name header on ${method}, and it is missing`, id);
    return;
  }
  const name = decodeHeader(nameHeader, 'Mcp-Name', id);
  const source = nameSource(method, params);
  if (source !== name) {
    throw new McpRefusal(`the Mcp-Name header (${JSON.stringify(name)}) does not agree with the body's ${NAME_FROM_URI.has(method) ? 'params.uri' : 'params.name'} (${JSON.stringify(source ?? null)})`, id);
  }
}

function traceparentOf(meta: Record<string, unknown>): string | undefined {
  const value = meta.traceparent;
  return typeof value === 'string' && TRACEPARENT.test(value) ? value : undefined;
}

/** A request or notification: tools/call is its tool's call, anything else mcp:METHOD. */
function callOfMethod(method: string, parts: MessageParts): Pick<McpCall, 'action' | 'params'> {
  const { params, id } = parts;
  if (method !== 'tools/call') {
    const { _meta: _ignored, ...rest } = params;
    return { action: `${MCP_ACTION_PREFIX}${method}`, params: rest };
  }
  if (id === undefined) throw new McpRefusal('tools/call must be a request with an id, not a notification');
  const { name, arguments: args } = params;
  if (typeof name !== 'string' || name === '') throw new McpRefusal('tools/call needs params.name, the tool to call', id);
  if (name.startsWith(MCP_ACTION_PREFIX)) throw new McpRefusal(`the MCP tool name ${name} starts with ${MCP_ACTION_PREFIX}, which names protocol messages here`, id);
  if (args !== undefined && !isObject(args)) throw new McpRefusal('tools/call params.arguments must be an object', id);
  return { action: name, params: args ?? {} };
}

/** A JSON-RPC response the client sends back to a server's request. */
function callOfResponse(message: Record<string, unknown>, id: JsonRpcId | undefined): Pick<McpCall, 'action' | 'params'> {
  const hasResult = Object.hasOwn(message, 'result');
  const hasError = Object.hasOwn(message, 'error');
  if (id === undefined || hasResult === hasError) throw new McpRefusal('the JSON-RPC message has no method, so it must be a response: an id and exactly one of result or error', id);
  if (hasError && !isObject(message.error)) throw new McpRefusal('the JSON-RPC error must be an object', id);
  return { action: MCP_RESPONSE_ACTION, params: hasResult ? { result: message.result } : { error: message.error } };
}

/** The call a POST to an MCP endpoint stands for; throws McpRefusal when it cannot be judged. */
function callOfPost(request: McpHttpRequest): McpCall {
  const message = parseMessage(request.body);
  const id = idOf(message);
  checkEnvelope(message, id);
  const method = message.method;
  if (method !== undefined && (typeof method !== 'string' || method === '')) throw new McpRefusal('the JSON-RPC method must be a non-empty string', id);
  if (message.params !== undefined && !isObject(message.params)) throw new McpRefusal('the JSON-RPC params must be an object (MCP uses no positional params)', id);
  const params = (message.params ?? {});
  const meta = isObject(params._meta) ? params._meta : {};
  const parts: MessageParts = { method, params, meta, id };
  checkHeaders(request.headers, parts);
  let call: Pick<McpCall, 'action' | 'params'>;
  if (method === undefined) {
    call = callOfResponse(message, id);
  } else {
    if (Object.hasOwn(message, 'result') || Object.hasOwn(message, 'error')) throw new McpRefusal('a JSON-RPC message holds either a method or a result or error, not both', id);
    call = callOfMethod(method, parts);
  }
  const traceparent = traceparentOf(meta);
  return { ...call, ...(id === undefined ? {} : { id }), ...(traceparent === undefined ? {} : { traceparent }) };
}

/**
 * The call an HTTP request to a declared MCP endpoint stands for: a POST is the
 * JSON-RPC message in its body; GET (the server's stream) and DELETE (the end
 * of a session) are calls of their own. Throws McpRefusal when it cannot be judged.
 */
export function mcpCallOf(request: McpHttpRequest): McpCall {
  const httpAction = MCP_HTTP_ACTIONS[request.method];
  if (httpAction !== undefined) {
    if (request.body !== '') throw new McpRefusal(`an MCP ${request.method} carries no body, and this one has one`);
    return { action: httpAction, params: {} };
  }
  if (request.method !== 'POST') throw new McpRefusal(`an MCP endpoint takes POST, GET or DELETE, not ${request.method}`);
  const type = (request.headers.get('content-type') ?? '').split(';')[0]?.trim().toLowerCase();
  if (type !== 'application/json') throw new McpRefusal(`an MCP POST must be application/json, not ${JSON.stringify(request.headers.get('content-type') ?? '')}`);
  return callOfPost(request);
}

/**
 * The JSON-RPC error answering a denied MCP message, echoing its id (none when
 * the message had none or it could not be read). data holds what the plain
 * HTTP answer's body holds: decision, reasons, policy, rule and decision id.
 */
export function jsonRpcError(id: JsonRpcId | undefined, approvalNeeded: boolean, message: string, data: Record<string, unknown>): Record<string, unknown> {
  const code = approvalNeeded ? MCP_ERROR_CODES.approvalNeeded : MCP_ERROR_CODES.denied;
  return { jsonrpc: '2.0', ...(id === undefined ? {} : { id }), error: { code, message, data } };
}
