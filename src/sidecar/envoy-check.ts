// Envoy ext_authz v3 without the transport: a CheckRequest's HTTP attributes
// become a call (tool and action by the tool table, params from the query and
// the JSON body), and a decision becomes a CheckResponse. Strict: a request
// the sidecar cannot read whole and unambiguously is refused, never judged on
// a part of it. Pure; grpc-server.ts is the transport.
import type { SidecarDecision } from './authorizer.ts';
import { parseStrictJson, StrictJsonError } from './strict-json.ts';
import type { ToolTable } from './tools.ts';
import { matchRoute } from './tools.ts';

/** AttributeContext.HttpRequest as @grpc/proto-loader decodes it (keepCase, longs as strings). */
export interface HttpAttributes {
  method?: string;
  headers?: Record<string, string>;
  header_map?: { headers?: { key?: string; value?: string; raw_value?: Uint8Array }[] };
  path?: string;
  host?: string;
  scheme?: string;
  size?: string;
  body?: string;
  raw_body?: Uint8Array;
}

export interface CheckRequest {
  attributes?: { request?: { http?: HttpAttributes } };
}

export type RequestCall =
  | { kind: 'call'; call: Record<string, unknown> }
  /** Why the request cannot be judged: it is denied with this reason. */
  | { kind: 'refuse'; reason: string };

/** Envoy sets this header when the body was cut at max_request_bytes. */
const PARTIAL_BODY_HEADER = 'x-envoy-auth-partial-body';
export const DEFAULT_INSPECTION_LIMIT = 64 * 1024;

class Refusal extends Error {}

function refuse(reason: string): never {
  throw new Refusal(reason);
}

/** Headers from either encoding Envoy uses: the map, or header_map with encode_raw_headers. */
function headersOf(http: HttpAttributes): Map<string, string> {
  const headers = new Map<string, string>();
  for (const [name, value] of Object.entries(http.headers ?? {})) headers.set(name.toLowerCase(), value);
  for (const header of http.header_map?.headers ?? []) {
    const name = (header.key ?? '').toLowerCase();
    const value = header.raw_value !== undefined && header.raw_value.length > 0 ? Buffer.from(header.raw_value).toString('utf8') : (header.value ?? '');
    // A repeated header is ambiguous (a tool may read either value): refuse it for the headers that matter.
    if (headers.has(name) && (name === 'content-type' || name === 'content-length' || name.startsWith(':'))) refuse(`the header ${name} is repeated`);
    headers.set(name, value);
  }
  return headers;
}

const HOST = /^([a-z0-9.-]+|\[[0-9a-f:.]+\])(?::(\d{1,5}))?$/;

function hostAndPort(authority: string, scheme: string): { host: string; port: number } {
  const match = HOST.exec(authority.toLowerCase());
  if (match === null) refuse(`the host ${JSON.stringify(authority)} is not a host name with an optional port`);
  const port = match[2] === undefined ? (scheme === 'https' ? 443 : 80) : Number(match[2]);
  if (port < 1 || port > 65535) refuse(`the port ${port} is out of range`);
  return { host: (match[1] ?? '').replace(/\.$/, ''), port };
}

function queryParams(query: string): Record<string, unknown> {
  const params: Record<string, unknown> = {};
  for (const [name, value] of new URLSearchParams(query)) {
    if (Object.hasOwn(params, name)) refuse(`the query parameter ${name} is repeated`);
    params[name] = value;
  }
  return params;
}

function bodyText(http: HttpAttributes, headers: Map<string, string>, limit: number): string {
  const raw = http.raw_body !== undefined && http.raw_body.length > 0 ? Buffer.from(http.raw_body) : Buffer.from(http.body ?? '', 'utf8');
  if (headers.get(PARTIAL_BODY_HEADER) === 'true') refuse('the body was truncated before inspection');
  if (raw.length > limit) refuse(`the body is over the inspection limit of ${limit} bytes`);
  const declared = headers.get('content-length');
  if (declared !== undefined && Number(declared) !== raw.length) refuse(`the body has ${raw.length} bytes, not the ${declared} its content-length says`);
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(raw);
  } catch {
    return refuse('the body is not UTF-8');
  }
}

function bodyParams(text: string, contentType: string | undefined): Record<string, unknown> {
  if (text === '') return {};
  const type = (contentType ?? '').split(';')[0]?.trim().toLowerCase() ?? '';
  if (type !== 'application/json' && !type.endsWith('+json')) refuse(`a body of content type ${JSON.stringify(contentType ?? '')} cannot be inspected`);
  let body: unknown;
  try {
    body = parseStrictJson(text);
  } catch (error) {
    if (error instanceof StrictJsonError) refuse(`the JSON body does not parse strictly: ${error.message}`);
    throw error;
  }
  if (body === null || typeof body !== 'object' || Array.isArray(body)) refuse('the JSON body is not an object');
  return body as Record<string, unknown>;
}

function mergeParams(query: Record<string, unknown>, body: Record<string, unknown>): Record<string, unknown> {
  for (const name of Object.keys(query)) {
    if (Object.hasOwn(body, name)) refuse(`the parameter ${name} is in both the query and the body`);
  }
  return { ...query, ...body };
}

function callOfRequest(http: HttpAttributes, tools: ToolTable, limit: number): Record<string, unknown> {
  const headers = headersOf(http);
  const method = (http.method ?? headers.get(':method') ?? '').toUpperCase();
  const target = http.path ?? headers.get(':path') ?? '';
  const scheme = http.scheme ?? headers.get(':scheme') ?? 'http';
  const { host, port } = hostAndPort(http.host ?? headers.get(':authority') ?? '', scheme);
  if (method === 'CONNECT') return { egress: { host, port } };
  const [path = '', ...rest] = target.split('?');
  const query = rest.join('?');
  if (!path.startsWith('/')) refuse(`the path ${JSON.stringify(target)} is not absolute`);
  // A tool may decode and normalize the path; the policy must judge what it will act on.
  if (/%2f|%5c|%2e|\/\.\.?(\/|$)|\/\//i.test(path)) refuse(`the path ${JSON.stringify(path)} is not in normal form`);
  const route = matchRoute(tools, { host, port, method, path });
  if (route.kind === 'egress') return { egress: { host, port } };
  if (route.kind === 'unknown-action') refuse(`the tool ${route.tool} declares no action for ${method} ${path}`);
  const params = mergeParams(queryParams(query), bodyParams(bodyText(http, headers, limit), headers.get('content-type')));
  return { tool: route.tool, ...(route.action === undefined ? {} : { action: route.action }), params };
}

/** The call a CheckRequest stands for, or why it cannot be judged. */
export function callOfCheck(check: CheckRequest, tools: ToolTable, inspectionLimit = DEFAULT_INSPECTION_LIMIT): RequestCall {
  const http = check.attributes?.request?.http;
  if (http === undefined) return { kind: 'refuse', reason: 'the CheckRequest carries no HTTP request' };
  try {
    return { kind: 'call', call: callOfRequest(http, tools, inspectionLimit) };
  } catch (error) {
    if (error instanceof Refusal) return { kind: 'refuse', reason: error.message };
    throw error;
  }
}

/** The CheckResponse fields the sidecar sets, with Envoy's names. */
export interface CheckResponse {
  status: { code: number; message: string };
  ok_response?: { headers: HeaderOption[] };
  denied_response?: { status: { code: number }; headers: HeaderOption[]; body: string };
}

interface HeaderOption {
  header: { key: string; value: string };
  /** OVERWRITE_IF_EXISTS_OR_ADD: a caller cannot smuggle its own decision header upstream. */
  append_action: number;
}

export const DECISION_HEADER = 'x-portcullis-decision';
export const DECISION_ID_HEADER = 'x-portcullis-decision-id';
export const APPROVAL_HEADER = 'x-portcullis-approval';
/** google.rpc.Code. */
const GRPC_OK = 0;
const GRPC_PERMISSION_DENIED = 7;
const OVERWRITE_IF_EXISTS_OR_ADD = 2;
/**
 * approval_needed answers 409 Conflict: the call is well formed but may not run
 * until a human approves it; the same call is retried once approved. Not 429,
 * which clients take as rate limiting and retry on a timer.
 */
export const APPROVAL_STATUS = 409;

function header(key: string, value: string): HeaderOption {
  return { header: { key, value }, append_action: OVERWRITE_IF_EXISTS_OR_ADD };
}

/**
 * The CheckResponse for a decision. Lets the call through for allow and for any
 * decision not enforced (shadow mode, which the decision header records).
 * sanitize is denied: ext_authz cannot rewrite the body to the redacted
 * params, and letting the unredacted call through would not be sanitize.
 */
export function checkResponseOf(decision: SidecarDecision): CheckResponse {
  const passes = !decision.enforced || decision.decision === 'allow';
  if (passes) {
    return {
      status: { code: GRPC_OK, message: '' },
      ok_response: { headers: [header(DECISION_ID_HEADER, decision.decisionId), header(DECISION_HEADER, decision.enforced ? decision.decision : `shadow:${decision.decision}`)] },
    };
  }
  const reasons = decision.decision === 'sanitize' ? [...decision.reasons, 'sanitize cannot be applied to a proxied request: ext_authz cannot rewrite its body'] : decision.reasons;
  const body = {
    decision: decision.decision,
    policy: decision.policy,
    rule: decision.rule,
    revision: decision.revision,
    reasons,
    decisionId: decision.decisionId,
    ...(decision.approval === undefined ? {} : { approval: decision.approval }),
  };
  const headers = [header('content-type', 'application/json'), header(DECISION_ID_HEADER, decision.decisionId), header(DECISION_HEADER, decision.decision)];
  if (decision.approval !== undefined) headers.push(header(APPROVAL_HEADER, decision.approval));
  return {
    status: { code: GRPC_PERMISSION_DENIED, message: `${decision.decision} by ${decision.rule}` },
    denied_response: { status: { code: decision.decision === 'approval_needed' ? APPROVAL_STATUS : 403 }, headers, body: JSON.stringify(body) },
  };
}
