// The request half of Envoy ext_proc without the transport: the request
// headers and buffered body Envoy sends become the proxied request that
// envoy-check.ts maps to a call, and a sanitize decision becomes the rewrite of
// that request (the body, and the query, with the redacted params). Pure.
import { isDeepStrictEqual } from 'node:util';
import type { ProxiedRequest } from './envoy-check.ts';
import { isSingleHeader } from './envoy-check.ts';
import { parseStrictJson, StrictJsonError } from './strict-json.ts';

/** config.core.v3.HeaderValue as @grpc/proto-loader decodes it; ext_proc puts values in raw_value. */
export interface HeaderValue {
  key?: string;
  value?: string;
  raw_value?: Uint8Array;
}

/**
 * envoy-check.ts reads a body as whole only when the proxy says so with this
 * header (false: not cut). ext_proc received the body in one message with
 * end_of_stream, so it is whole, whatever the client sent in that header.
 */
const PARTIAL_BODY_HEADER = 'x-envoy-auth-partial-body';

function valueOf(header: HeaderValue): string {
  return header.raw_value !== undefined && header.raw_value.length > 0 ? Buffer.from(header.raw_value).toString('utf8') : (header.value ?? '');
}

/** Lower-cased headers, a repeated header joined with commas as Envoy joins them; a repeated one that must be single refuses the request. */
export function headerMapOf(headers: readonly HeaderValue[]): Map<string, string> | { refuse: string } {
  const map = new Map<string, string>();
  for (const header of headers) {
    const name = (header.key ?? '').toLowerCase();
    const previous = map.get(name);
    if (previous !== undefined && isSingleHeader(name)) return { refuse: `the header ${name} is repeated` };
    map.set(name, previous === undefined ? valueOf(header) : `${previous},${valueOf(header)}`);
  }
  return map;
}

/** The proxied request of ext_proc's request headers and its whole body (empty when it has none). */
export function proxiedRequestOf(headers: ReadonlyMap<string, string>, body: Uint8Array): ProxiedRequest {
  const marked = new Map(headers);
  marked.set(PARTIAL_BODY_HEADER, 'false');
  return {
    method: headers.get(':method') ?? '',
    path: headers.get(':path') ?? '',
    authority: headers.get(':authority') ?? '',
    scheme: headers.get(':scheme') ?? 'http',
    headers: marked,
    body,
    clientContentLength: true,
  };
}

/** How a sanitize decision changes the request: a new :path (query) and a new body, each only when it changed. */
export interface Rewrite {
  path?: string;
  body?: string;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** A copy of record with each key's value from values; defineProperty keeps a "__proto__" key a key. */
function withValues(keys: readonly string[], values: Record<string, unknown>): Record<string, unknown> {
  const copy: Record<string, unknown> = {};
  for (const key of keys) Object.defineProperty(copy, key, { value: values[key], enumerable: true, writable: true, configurable: true });
  return copy;
}

function parsedBody(body: Uint8Array): unknown {
  return body.length === 0 ? undefined : parseStrictJson(Buffer.from(body).toString('utf8'));
}

/**
 * The request rewritten to the redacted params of a sanitize decision, put back
 * where the params came from: for an MCP request the JSON-RPC message's
 * params.arguments; otherwise the query parameters (as strings) and the members
 * of the JSON body. Refuses when the params do not match the request as
 * written (the sidecar could not say where a redacted value goes).
 */
export function sanitizedRequest(request: ProxiedRequest, params: unknown, redacted: unknown, mcp: boolean): Rewrite | { refuse: string } {
  let body: unknown;
  try {
    body = parsedBody(request.body);
  } catch (error) {
    if (error instanceof StrictJsonError) return { refuse: `the body does not parse strictly: ${error.message}` };
    throw error;
  }
  if (!isRecord(params) || !isRecord(redacted)) return { refuse: 'the sanitized params are not an object' };
  if (mcp) {
    if (!isRecord(body) || !isRecord(body.params) || !isDeepStrictEqual(body.params.arguments, params)) return { refuse: "the sanitized params are not the MCP message's arguments" };
    return { body: JSON.stringify({ ...body, params: { ...body.params, arguments: redacted } }) };
  }
  const [path = '', ...rest] = request.path.split('?');
  const query = [...new URLSearchParams(rest.join('?'))];
  const members = body === undefined ? {} : body;
  if (!isRecord(members)) return { refuse: 'the body is not a JSON object' };
  const names = [...query.map(([name]) => name), ...Object.keys(members)];
  const written = names.length === Object.keys(params).length && query.every(([name, value]) => params[name] === value) && Object.keys(members).every((key) => isDeepStrictEqual(members[key], params[key]));
  if (!written) return { refuse: 'the sanitized params are not the query and body of the request' };
  const rewrite: Rewrite = {};
  const newQuery = query.map(([name]): [string, string] => [name, typeof redacted[name] === 'string' ? redacted[name] : JSON.stringify(redacted[name])]);
  if (!isDeepStrictEqual(newQuery, query)) rewrite.path = `${path}?${new URLSearchParams(newQuery).toString()}`;
  const newBody = withValues(Object.keys(members), redacted);
  if (body !== undefined && !isDeepStrictEqual(newBody, members)) rewrite.body = JSON.stringify(newBody);
  return rewrite;
}
