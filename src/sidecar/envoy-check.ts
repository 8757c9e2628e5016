// Envoy ext_authz without the transport, shared by its gRPC (grpc-server.ts)
// and HTTP (envoy-http.ts) modes: a proxied request becomes a call (tool and
// action by the loaded bundle's tool table, params from the query and the JSON
// body, or from the JSON-RPC message for MCP), and a decision becomes an
// answer. Strict: a request the sidecar cannot read whole and unambiguously is
// refused, never judged on a part of it. The mapping and the answers are pure;
// decideProxied is the one step both modes share around the Authorizer.
import { InputError } from '../compiler/index.ts';
import { AGENT_TOKEN_HEADER } from './agent-tokens.ts';
import type { Authorizer, CallContext, SidecarDecision, VerifiedFacts } from './authorizer.ts';
import { SIDECAR_RULES } from './authorizer.ts';
import type { JsonRpcId } from './mcp.ts';
import { jsonRpcError, mcpCallOf, McpRefusal } from './mcp.ts';
import { parseStrictJson, StrictJsonError } from './strict-json.ts';
import { USER_TOKEN_HEADER } from './user-tokens.ts';
import { normalPath, queryParams, foldName, TargetRefusal } from './request-target.ts';
import type { ToolTable } from './tools.ts';
import { caseVariantReason, hostOwner, matchRoute } from './tools.ts';

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

/** A proxied HTTP request as an Envoy transport hands it over. */
export interface ProxiedRequest {
  method: string;
  /** The path with its query. */
  path: string;
  /** Host and optional port. */
  authority: string;
  scheme: string;
  /** Lower-cased names; a repeated header joined with commas, as Envoy joins them. */
  headers: ReadonlyMap<string, string>;
  body: Uint8Array;
  /**
   * Whether content-length is the client's own (gRPC: Envoy passes the request's
   * headers) or not (HTTP mode: Envoy sets it to the size of what it forwards).
   */
  clientContentLength: boolean;
}

export type RequestCall =
  | { kind: 'call'; call: Record<string, unknown> }
  /** Why the request cannot be judged: it is denied with this reason. */
  | { kind: 'refuse'; reason: string };

/** A proxied request read: the call or the refusal, and what shapes its answer. */
export interface RequestMapping {
  result: RequestCall;
  /** Set for requests to an MCP endpoint: a denial is a JSON-RPC error echoing id (absent when there is none to echo). */
  mcp?: { id?: JsonRpcId };
  /** W3C trace context: MCP's params._meta.traceparent, else the traceparent header. */
  traceparent?: string;
}

/** Envoy sets this header when it buffered a body (with_request_body): true when it cut it at max_request_bytes. */
const PARTIAL_BODY_HEADER = 'x-envoy-auth-partial-body';
export const DEFAULT_INSPECTION_LIMIT = 64 * 1024;
/** Methods whose requests carry a body unless they say otherwise. */
const BODY_METHODS = new Set(['POST', 'PUT', 'PATCH']);
/** Headers whose repetition would let the tool read another value than the sidecar judged. */
const SINGLE_HEADERS = new Set(['content-type', 'content-length', PARTIAL_BODY_HEADER, 'traceparent', 'mcp-method', 'mcp-name', 'mcp-protocol-version', 'mcp-session-id']);
const TRACEPARENT = /^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$/;

class Refusal extends Error {}

function refuse(reason: string): never {
  throw new Refusal(reason);
}

/** Whether a header may appear once only (see SINGLE_HEADERS; pseudo-headers too). */
export function isSingleHeader(name: string): boolean {
  return SINGLE_HEADERS.has(name) || name.startsWith(':');
}

/** Headers from either encoding Envoy uses: the map, or header_map with encode_raw_headers. */
function headersOf(http: HttpAttributes): Map<string, string> {
  const headers = new Map<string, string>();
  for (const [name, value] of Object.entries(http.headers ?? {})) headers.set(name.toLowerCase(), value);
  for (const header of http.header_map?.headers ?? []) {
    const name = (header.key ?? '').toLowerCase();
    const value = header.raw_value !== undefined && header.raw_value.length > 0 ? Buffer.from(header.raw_value).toString('utf8') : (header.value ?? '');
    const previous = headers.get(name);
    if (previous !== undefined && isSingleHeader(name)) refuse(`the header ${name} is repeated`);
    headers.set(name, previous === undefined ? value : `${previous},${value}`);
  }
  return headers;
}

/** The request a CheckRequest describes, or why it cannot be read. */
export function proxiedRequestOfCheck(check: CheckRequest): ProxiedRequest | { refuse: string } {
  const http = check.attributes?.request?.http;
  if (http === undefined) return { refuse: 'the CheckRequest carries no HTTP request' };
  let headers: Map<string, string>;
  try {
    headers = headersOf(http);
  } catch (error) {
    if (error instanceof Refusal) return { refuse: error.message };
    throw error;
  }
  const body = http.raw_body !== undefined && http.raw_body.length > 0 ? http.raw_body : Buffer.from(http.body ?? '', 'utf8');
  const authority = http.host ?? headers.get(':authority') ?? '';
  // Envoy fills host from :authority; a Host header that says otherwise is a second answer to "which host".
  for (const name of [':authority', 'host']) {
    const other = headers.get(name);
    if (other !== undefined && other.toLowerCase() !== authority.toLowerCase()) return { refuse: `the request names the host ${JSON.stringify(authority)} and its ${name} header ${JSON.stringify(other)}: they disagree` };
  }
  return {
    method: http.method ?? headers.get(':method') ?? '',
    path: http.path ?? headers.get(':path') ?? '',
    authority,
    scheme: http.scheme ?? headers.get(':scheme') ?? 'http',
    headers,
    body,
    clientContentLength: true,
  };
}

const AUTHORITY = /^([^:[\]]+|\[[0-9a-f:.]+\])(?::(\d{1,5}))?$/;
const HOST_NAME = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

/** Host and port of an authority in one normal form: lower case, one trailing dot dropped, a port without leading zeros. */
function hostAndPort(authority: string, scheme: string): { host: string; port: number } {
  const match = AUTHORITY.exec(authority.toLowerCase());
  const name = (match?.[1] ?? '').replace(/\.$/, '');
  if (match === null || !(name.startsWith('[') || HOST_NAME.test(name))) refuse(`the host ${JSON.stringify(authority)} is not a host name with an optional port`);
  const written = match[2];
  if (written?.startsWith('0') === true) refuse(`the port ${written} is written with a leading zero`);
  const port = written === undefined ? (scheme === 'https' ? 443 : 80) : Number(written);
  if (port < 1 || port > 65535) refuse(`the port ${port} is out of range`);
  return { host: name, port };
}

/** Headers and parameters by which some servers run another method than the request's own. */
export const METHOD_OVERRIDE_HEADERS = ['x-http-method-override', 'x-http-method', 'x-method-override'] as const;
const METHOD_OVERRIDE_PARAM = '_method';

function refuseMethodOverride(headers: ReadonlyMap<string, string>, params: Record<string, unknown>): void {
  const header = METHOD_OVERRIDE_HEADERS.find((name) => headers.has(name));
  if (header !== undefined) refuse(`the header ${header} asks the tool to run another method than the request's; it is refused`);
  if (Object.keys(params).some((name) => foldName(name) === METHOD_OVERRIDE_PARAM)) refuse(`the parameter ${METHOD_OVERRIDE_PARAM} asks the tool to run another method than the request's; it is refused`);
}

/**
 * The body as text, only when it is known to be whole: Envoy says so with
 * x-envoy-auth-partial-body: false, or (gRPC) the client's content-length
 * matches it. A POST, PUT or PATCH with neither was not sent for inspection
 * (with_request_body is off, or its header is not forwarded): it is refused.
 */
function bodyText(request: ProxiedRequest, method: string, limit: number): string {
  const { headers, body } = request;
  const partial = headers.get(PARTIAL_BODY_HEADER);
  if (partial === 'true') refuse('the body was truncated before inspection');
  if (partial !== undefined && partial !== 'false') refuse(`the header ${PARTIAL_BODY_HEADER} is neither true nor false`);
  if (body.length > limit) refuse(`the body is over the inspection limit of ${limit} bytes`);
  const declared = request.clientContentLength ? headers.get('content-length') : undefined;
  if (declared !== undefined && (!/^\d+$/.test(declared) || Number(declared) !== body.length)) refuse(`the body has ${body.length} bytes, not the ${declared} its content-length says`);
  if (partial === undefined && declared === undefined && (body.length > 0 || BODY_METHODS.has(method))) {
    refuse(`the proxy did not say the body is whole (${PARTIAL_BODY_HEADER}): enable with_request_body and forward that header`);
  }
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(body);
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

function mergeParams(query: Record<string, string>, body: Record<string, unknown>): Record<string, unknown> {
  const inBody = new Map(Object.keys(body).map((name) => [foldName(name), name]));
  for (const name of Object.keys(query)) {
    const other = inBody.get(foldName(name));
    if (other === name) refuse(`the parameter ${name} is in both the query and the body`);
    if (other !== undefined) refuse(`the query parameter ${name} and the body's ${other} differ only in letter case`);
  }
  const params: Record<string, unknown> = {};
  // defineProperty keeps a "__proto__" member a member.
  for (const [name, value] of [...Object.entries(query), ...Object.entries(body)]) Object.defineProperty(params, name, { value, enumerable: true, writable: true, configurable: true });
  return params;
}

function traceparentHeader(headers: ReadonlyMap<string, string>): string | undefined {
  const value = headers.get('traceparent');
  return value !== undefined && TRACEPARENT.test(value) ? value : undefined;
}

/** What mapRequest has learnt so far, so a refusal still answers in the right shape. */
interface Progress {
  mcp?: { id?: JsonRpcId };
  traceparent?: string;
}

/** Refuses a parameter the policies read under another letter case (tools.ts caseVariantReason). */
function refuseCaseVariants(tools: ToolTable, params: Record<string, unknown>): void {
  const reason = caseVariantReason(tools, params);
  if (reason !== undefined) refuse(reason);
}

/** The path and query of a request to a tool's host, in normal form; refuses anything two parsers could read differently. */
function targetOf(request: ProxiedRequest): { path: string; query: Record<string, string> } {
  const [rawPath = '', ...rest] = request.path.split('?');
  try {
    return { path: normalPath(rawPath), query: queryParams(rest.join('?')) };
  } catch (error) {
    if (error instanceof TargetRefusal) refuse(error.message);
    throw error;
  }
}

function callOfRequest(request: ProxiedRequest, tools: ToolTable, limit: number, progress: Progress): Record<string, unknown> {
  const method = request.method;
  const { host, port } = hostAndPort(request.authority, request.scheme);
  const owner = hostOwner(tools, host);
  if (owner.kind === 'none') return { egress: { host, port } };
  // A tunnel hides its calls: a host that declares tools is reached through the proxy's inspection or not at all.
  if (method.toUpperCase() === 'CONNECT') refuse(`the host ${host} declares tools: a CONNECT tunnel to it would hide its calls from inspection`);
  if (!/^[A-Z]+$/.test(method)) refuse(`the method ${JSON.stringify(method)} is not an upper-case HTTP method`);
  const { path, query } = targetOf(request);
  refuseMethodOverride(request.headers, query);
  const route = matchRoute(tools, { host, port, method, path });
  if (route.kind === 'egress') return { egress: { host, port } };
  if (route.kind === 'refused') refuse(route.reason);
  if (route.kind === 'unknown-action') refuse(`the tool ${route.tool} declares no action for ${method} ${path}`);
  if (route.kind === 'mcp') {
    progress.mcp = {};
    const message = mcpCallOf({ method, headers: request.headers, body: bodyText(request, method, limit) });
    progress.mcp = message.id === undefined ? {} : { id: message.id };
    if (message.traceparent !== undefined) progress.traceparent = message.traceparent;
    refuseCaseVariants(tools, message.params);
    return { tool: route.tool, action: message.action, params: message.params };
  }
  const body = bodyParams(bodyText(request, method, limit), request.headers.get('content-type'));
  refuseMethodOverride(request.headers, body);
  const params = mergeParams(query, body);
  refuseCaseVariants(tools, params);
  return { tool: route.tool, ...(route.action === undefined ? {} : { action: route.action }), params };
}

/** The call a proxied request stands for, or why it cannot be judged, and how to answer it. */
export function mapRequest(request: ProxiedRequest, tools: ToolTable, inspectionLimit = DEFAULT_INSPECTION_LIMIT): RequestMapping {
  const traceparent = traceparentHeader(request.headers);
  const progress: Progress = traceparent === undefined ? {} : { traceparent };
  let result: RequestCall;
  try {
    result = { kind: 'call', call: callOfRequest(request, tools, inspectionLimit, progress) };
  } catch (error) {
    if (error instanceof McpRefusal) {
      result = { kind: 'refuse', reason: error.message };
      progress.mcp = error.id === undefined ? {} : { id: error.id };
    } else if (error instanceof Refusal) {
      result = { kind: 'refuse', reason: error.message };
    } else {
      throw error;
    }
  }
  return { result, ...progress };
}

/** What a proxied request's decision answers, in either Envoy mode. */
export interface ProxyAnswer {
  /** The call may go on (allow, or any decision in shadow mode). */
  allowed: boolean;
  /** 200 when allowed; else the status the client gets. */
  status: number;
  /** Allowed: headers for the upstream request; denied: headers of the client's response. */
  headers: [string, string][];
  /** Allowed: headers Envoy removes from the upstream request (the agent's token, on any call that is not a tool's). */
  headersToRemove: string[];
  /** Denied: the client's response body (JSON, or a JSON-RPC error for MCP). */
  body: string;
  /** The decision in a few words, for logs and gRPC's status message: "deny by RULE". */
  summary: string;
}

export const DECISION_HEADER = 'x-portcullis-decision';
export const DECISION_ID_HEADER = 'x-portcullis-decision-id';
export const APPROVAL_HEADER = 'x-portcullis-approval';
export const RETRY_AFTER_HEADER = 'retry-after';
/**
 * approval_needed answers 409 Conflict: the call is well formed but may not run
 * until a human approves it; the same call is retried once approved. Not 429,
 * which clients take as rate limiting and retry on a timer.
 */
export const APPROVAL_STATUS = 409;

/** Whole seconds to wait, from the decision's retry hint; read defensively, as a decision may carry none. */
function retryAfterOf(decision: SidecarDecision): number | undefined {
  const value: unknown = decision.retryAfterSeconds;
  return typeof value === 'number' && Number.isFinite(value) && value > 0 ? Math.ceil(value) : undefined;
}

function deniedBody(decision: SidecarDecision, mcp: RequestMapping['mcp']): string {
  const reasons = decision.decision === 'sanitize' ? [...decision.reasons, 'sanitize cannot be applied to a proxied request: ext_authz cannot rewrite its body'] : decision.reasons;
  const retryAfterSeconds = retryAfterOf(decision);
  const data = {
    decision: decision.decision,
    policy: decision.policy,
    rule: decision.rule,
    revision: decision.revision,
    reasons,
    decisionId: decision.decisionId,
    ...(decision.approval === undefined ? {} : { approval: decision.approval }),
    ...(retryAfterSeconds === undefined ? {} : { retryAfterSeconds }),
    ...(decision.resetsAt === undefined ? {} : { resetsAt: decision.resetsAt }),
  };
  if (mcp === undefined) return JSON.stringify(data);
  const by = decision.policy === null ? decision.rule : `${decision.policy}/${decision.rule}`;
  return JSON.stringify(jsonRpcError(mcp.id, decision.decision === 'approval_needed', `${decision.decision} by ${by}: ${reasons.join('; ')}`, data));
}

/** Whether Envoy lets the call through: see answerOf. */
function letsThrough(decision: SidecarDecision, sanitizeDownstream: boolean | undefined): boolean {
  return !decision.enforced || decision.decision === 'allow' || (decision.decision === 'sanitize' && sanitizeDownstream === true);
}

/**
 * The answer to a decision. Lets the call through for allow and for any
 * decision not enforced (shadow mode, which the decision header records), with
 * okHeaders for the upstream request. sanitize passes only when ext_proc
 * follows in the filter chain to rewrite the body to the redacted params
 * (`sanitizeDownstream`); otherwise it is denied, since ext_authz cannot
 * rewrite a body and letting the unredacted call through would not be sanitize.
 */
export function answerOf(decision: SidecarDecision, options: { mcp?: RequestMapping['mcp']; okHeaders?: Record<string, string>; headersToRemove?: string[]; sanitizeDownstream?: boolean } = {}): ProxyAnswer {
  if (letsThrough(decision, options.sanitizeDownstream)) {
    // The decision headers come last: no other header may stand in for them upstream.
    const headers = Object.entries(options.okHeaders ?? {}).filter(([key]) => key !== DECISION_HEADER && key !== DECISION_ID_HEADER);
    headers.push([DECISION_ID_HEADER, decision.decisionId], [DECISION_HEADER, decision.enforced ? decision.decision : `shadow:${decision.decision}`]);
    return { allowed: true, status: 200, headers, headersToRemove: options.headersToRemove ?? [], body: '', summary: `${decision.decision} by ${decision.rule}` };
  }
  const headers: [string, string][] = [['content-type', 'application/json'], [DECISION_ID_HEADER, decision.decisionId], [DECISION_HEADER, decision.decision]];
  if (decision.approval !== undefined) headers.push([APPROVAL_HEADER, decision.approval]);
  const retryAfter = retryAfterOf(decision);
  if (retryAfter !== undefined) headers.push([RETRY_AFTER_HEADER, String(retryAfter)]);
  const status = decision.decision === 'approval_needed' ? APPROVAL_STATUS : 403;
  return { allowed: false, status, headers, headersToRemove: [], body: deniedBody(decision, options.mcp), summary: `${decision.decision} by ${decision.rule}` };
}

/** What both Envoy modes need to decide a proxied request. */
export interface ProxyOptions {
  authorizer: Authorizer;
  /** The loaded bundle's tool table, read at every request so a new bundle's tools take effect with it. */
  tools: () => ToolTable;
  inspectionLimit?: number;
  /** ext_proc follows ext_authz in Envoy's filter chain and rewrites sanitized calls: let sanitize through. */
  sanitizeDownstream?: boolean;
  /**
   * Checks the tokens forwarded with a request (its lower-cased headers) before
   * it is authorized: the facts go into the call's context, a refusal denies it
   * with the rule portcullis:untrusted-token.
   */
  verify?: (headers: ReadonlyMap<string, string>) => Promise<VerifiedFacts | { refuse: string }>;
  /**
   * Headers added to an answer that lets a tool call through (the agent's
   * identity token), given the request's lower-cased headers. Never asked for
   * egress or a refused request: the token goes only to the tools it is for.
   */
  okHeaders?: (headers: ReadonlyMap<string, string>) => Record<string, string>;
}

async function verified(request: ProxiedRequest, options: ProxyOptions): Promise<VerifiedFacts | { refuse: string } | undefined> {
  if (options.verify === undefined) return undefined;
  try {
    return await options.verify(request.headers);
  } catch (error) {
    // Whatever failed, an unverified token cannot speak for the call.
    return { refuse: `the forwarded tokens could not be verified: ${error instanceof Error ? error.message : String(error)}` };
  }
}

/**
 * Decides one proxied request: map it, verify its tokens, authorize. Every
 * failure to read or verify it is a recorded deny; an error past that point
 * (the answer's own headers failing) rejects, and the transport fails closed.
 */
export async function decideProxied(request: ProxiedRequest | { refuse: string }, transport: CallContext['transport'], options: ProxyOptions): Promise<ProxyAnswer> {
  if ('refuse' in request) return answerOf(options.authorizer.refuse(request.refuse, { transport }));
  const mapping = mapRequest(request, options.tools(), options.inspectionLimit);
  const context: CallContext = { transport, ...(mapping.traceparent === undefined ? {} : { traceparent: mapping.traceparent }) };
  const toolCall = mapping.result.kind === 'call' && typeof mapping.result.call.tool === 'string';
  // An agent token goes to no one but a tool: not the sidecar's own, and not one the agent forwarded.
  // A user token is for the sidecar alone: it goes to no one.
  const removals = [...(request.headers.has(USER_TOKEN_HEADER) ? [USER_TOKEN_HEADER] : []), ...(toolCall ? [] : [AGENT_TOKEN_HEADER])];
  const answer = (decision: SidecarDecision): ProxyAnswer => {
    const okHeaders = toolCall && letsThrough(decision, options.sanitizeDownstream) ? options.okHeaders?.(request.headers) : undefined;
    return answerOf(decision, {
      ...(mapping.mcp === undefined ? {} : { mcp: mapping.mcp }),
      ...(okHeaders === undefined ? {} : { okHeaders }),
      ...(removals.length === 0 ? {} : { headersToRemove: removals }),
      ...(options.sanitizeDownstream === true ? { sanitizeDownstream: true } : {}),
    });
  };
  if (mapping.result.kind === 'refuse') return answer(options.authorizer.refuse(mapping.result.reason, context));
  const verdict = await verified(request, options);
  if (verdict !== undefined && 'refuse' in verdict) return answer(options.authorizer.refuse(verdict.refuse, context, SIDECAR_RULES.untrustedToken));
  if (verdict !== undefined) context.verified = verdict;
  try {
    return answer(await options.authorizer.authorize(mapping.result.call, context));
  } catch (error) {
    if (error instanceof InputError) return answer(options.authorizer.refuse(error.message, context));
    throw error;
  }
}

/** The CheckResponse fields the sidecar sets, with Envoy's names. */
export interface CheckResponse {
  status: { code: number; message: string };
  ok_response?: { headers: HeaderOption[]; headers_to_remove: string[] };
  denied_response?: { status: { code: number }; headers: HeaderOption[]; body: string };
}

interface HeaderOption {
  header: { key: string; value: string };
  /** OVERWRITE_IF_EXISTS_OR_ADD: a caller cannot smuggle its own decision header upstream. */
  append_action: number;
}

/** google.rpc.Code. */
const GRPC_OK = 0;
const GRPC_PERMISSION_DENIED = 7;
const OVERWRITE_IF_EXISTS_OR_ADD = 2;

function headerOptions(headers: [string, string][]): HeaderOption[] {
  return headers.map(([key, value]) => ({ header: { key, value }, append_action: OVERWRITE_IF_EXISTS_OR_ADD }));
}

/** The gRPC CheckResponse of an answer: ok_response, or denied_response with PERMISSION_DENIED. */
export function checkResponseOf(answer: ProxyAnswer): CheckResponse {
  if (answer.allowed) return { status: { code: GRPC_OK, message: '' }, ok_response: { headers: headerOptions(answer.headers), headers_to_remove: answer.headersToRemove } };
  return {
    status: { code: GRPC_PERMISSION_DENIED, message: answer.summary },
    denied_response: { status: { code: answer.status }, headers: headerOptions(answer.headers), body: answer.body },
  };
}
