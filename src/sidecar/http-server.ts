// The sidecar's HTTP listeners. The decision listener: POST /v1/authorize (the
// DESIGN.md contract, for SDKs), /healthz, /readyz and /metrics, a thin adapter
// over the Authorizer that reads, parses strictly, calls authorize and writes
// the answer; it belongs on loopback. The status listener: GET or HEAD of
// /healthz, /readyz and /metrics and nothing else, for the kubelet's probes and
// Prometheus on the pod network (docs/sidecar.md, Listeners).
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import { createServer } from 'node:http';
import type { Registry } from 'prom-client';
import { InputError } from '../compiler/index.ts';
import type { Authorizer, CallContext, VerifiedFacts } from './authorizer.ts';
import { SIDECAR_RULES } from './authorizer.ts';
import { parseStrictJson, StrictJsonError } from './strict-json.ts';
import type { ToolTable } from './tools.ts';
import { caseVariantReason } from './tools.ts';

export const DECISION_ID_HEADER = 'x-portcullis-decision-id';
/** Calls are small JSON documents; anything larger is refused before it is parsed. */
export const DEFAULT_MAX_BODY_BYTES = 256 * 1024;

/** What the status routes read: whether a bundle is loaded, why else not ready, and the metrics. */
export interface StatusOptions {
  authorizer: Pick<Authorizer, 'ready'>;
  registry: Registry;
  /** Why the sidecar is not ready besides a missing bundle (draining, no agent token), or undefined. */
  notReady?: () => string | undefined;
}

export interface HttpServerOptions extends StatusOptions {
  authorizer: Authorizer;
  maxBodyBytes?: number;
  /** Checks the agent token forwarded with a call (as on the proxied path); a refusal is a deny. */
  verify?: (headers: ReadonlyMap<string, string>) => Promise<VerifiedFacts | { refuse: string }>;
  /** The loaded bundle's tool table: params the policies read under another letter case are refused, as on the proxied path. */
  tools?: () => ToolTable;
}

const TRACEPARENT = /^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$/;

/** The request's headers, lower-cased, with repeated ones joined as Node joins them. */
function headerMap(request: IncomingMessage): Map<string, string> {
  const headers = new Map<string, string>();
  for (const [name, value] of Object.entries(request.headers)) {
    if (value !== undefined) headers.set(name, Array.isArray(value) ? value.join(', ') : value);
  }
  return headers;
}

class HttpError extends Error {
  readonly status: number;
  readonly field: string | undefined;

  constructor(status: number, message: string, field?: string) {
    super(message);
    this.status = status;
    this.field = field;
  }
}

function send(response: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const text = typeof body === 'string' ? body : JSON.stringify(body);
  response.writeHead(status, {
    'content-type': typeof body === 'string' ? 'text/plain; charset=utf-8' : 'application/json',
    'content-length': Buffer.byteLength(text),
    ...headers,
  });
  response.end(text);
}

async function readBody(request: IncomingMessage, limit: number): Promise<string> {
  const declared = Number(request.headers['content-length'] ?? '0');
  if (declared > limit) throw new HttpError(413, `the body is over the limit of ${limit} bytes`);
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of request) {
    const buffer = chunk as Buffer;
    size += buffer.byteLength;
    if (size > limit) throw new HttpError(413, `the body is over the limit of ${limit} bytes`);
    chunks.push(buffer);
  }
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(Buffer.concat(chunks));
  } catch {
    throw new HttpError(400, 'the body is not UTF-8');
  }
}

function isJsonContentType(value: string | undefined): boolean {
  const type = (value ?? '').split(';')[0]?.trim().toLowerCase();
  return type === 'application/json';
}

/** Why the call's params cannot be judged for their letter case (see caseVariantReason), if they cannot. */
function caseVariantOfCall(call: object, tools: (() => ToolTable) | undefined): string | undefined {
  const params = (call as { params?: unknown }).params;
  if (tools === undefined || params === null || typeof params !== 'object' || Array.isArray(params)) return undefined;
  return caseVariantReason(tools(), params as Record<string, unknown>);
}

async function authorizeCall(request: IncomingMessage, response: ServerResponse, options: HttpServerOptions): Promise<void> {
  if (!isJsonContentType(request.headers['content-type'])) throw new HttpError(415, 'the call must be sent as application/json');
  const text = await readBody(request, options.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES);
  let call: unknown;
  try {
    call = parseStrictJson(text);
  } catch (error) {
    if (error instanceof StrictJsonError) throw new HttpError(400, `the body is not strict JSON: ${error.message}`);
    throw error;
  }
  if (call === null || typeof call !== 'object' || Array.isArray(call)) throw new HttpError(400, 'the call must be a JSON object');
  const headers = headerMap(request);
  const traceparent = headers.get('traceparent');
  const context: CallContext = { transport: 'http', ...(traceparent !== undefined && TRACEPARENT.test(traceparent) ? { traceparent } : {}) };
  const verdict = await options.verify?.(headers).catch((error: unknown) => ({ refuse: `the forwarded tokens could not be verified: ${error instanceof Error ? error.message : String(error)}` }));
  if (verdict !== undefined && 'refuse' in verdict) {
    const refused = options.authorizer.refuse(verdict.refuse, context, SIDECAR_RULES.untrustedToken);
    send(response, 200, refused, { [DECISION_ID_HEADER]: refused.decisionId });
    return;
  }
  if (verdict !== undefined) context.verified = verdict;
  const caseVariant = caseVariantOfCall(call, options.tools);
  if (caseVariant !== undefined) {
    const refused = options.authorizer.refuse(caseVariant, context);
    send(response, 200, refused, { [DECISION_ID_HEADER]: refused.decisionId });
    return;
  }
  try {
    const decision = await options.authorizer.authorize(call as Record<string, unknown>, context);
    send(response, 200, decision, { [DECISION_ID_HEADER]: decision.decisionId });
  } catch (error) {
    if (error instanceof InputError) throw new HttpError(400, error.message, error.field);
    throw error;
  }
}

/** Why the sidecar is not ready, or undefined when it is: draining, no agent token, no bundle. */
function notReadyReason(options: StatusOptions): string | undefined {
  return options.notReady?.() ?? (options.authorizer.ready ? undefined : 'no valid policy bundle is loaded yet');
}

/** The read-only answers both listeners give: liveness, readiness and the metrics. */
async function sendStatus(path: StatusPath, response: ServerResponse, options: StatusOptions): Promise<void> {
  switch (path) {
    case '/healthz':
      send(response, 200, 'ok\n');
      return;
    case '/readyz': {
      const notReady = notReadyReason(options);
      if (notReady === undefined) send(response, 200, 'ok\n');
      else send(response, 503, `${notReady}\n`);
      return;
    }
    case '/metrics':
      send(response, 200, await options.registry.metrics(), { 'content-type': options.registry.contentType });
  }
}

const STATUS_PATHS = ['/healthz', '/readyz', '/metrics'] as const;
type StatusPath = (typeof STATUS_PATHS)[number];
const isStatusPath = (path: string): path is StatusPath => (STATUS_PATHS as readonly string[]).includes(path);

async function route(request: IncomingMessage, response: ServerResponse, options: HttpServerOptions): Promise<void> {
  const path = (request.url ?? '/').split('?')[0] ?? '';
  const method = request.method ?? 'GET';
  const expected = path === '/v1/authorize' ? 'POST' : 'GET';
  if (path !== '/v1/authorize' && !isStatusPath(path)) throw new HttpError(404, `no route ${path}`);
  if (method !== expected) {
    response.setHeader('allow', expected);
    throw new HttpError(405, `${path} takes ${expected}`);
  }
  return isStatusPath(path) ? sendStatus(path, response, options) : authorizeCall(request, response, options);
}

/**
 * The status listener's routes: GET (or HEAD) of /healthz, /readyz and
 * /metrics; every other path is 404 and every other method 405, whatever the
 * path. The body is never read: nothing here decides, counts or spends.
 */
async function statusRoute(request: IncomingMessage, response: ServerResponse, options: StatusOptions): Promise<void> {
  const path = (request.url ?? '/').split('?')[0] ?? '';
  if (!isStatusPath(path)) throw new HttpError(404, `no route ${path}: this listener serves only ${STATUS_PATHS.join(', ')}`);
  if (request.method !== 'GET' && request.method !== 'HEAD') {
    response.setHeader('allow', 'GET, HEAD');
    throw new HttpError(405, `${path} takes GET or HEAD`);
  }
  return sendStatus(path, response, options);
}

function serve<O>(handler: (request: IncomingMessage, response: ServerResponse, options: O) => Promise<void>, options: O): Server {
  return createServer((request, response) => {
    handler(request, response, options).catch((error: unknown) => {
      if (response.headersSent) {
        response.destroy();
        return;
      }
      if (error instanceof HttpError) {
        send(response, error.status, { error: error.message, ...(error.field === undefined ? {} : { field: error.field }) });
        return;
      }
      // Never a stack trace on the wire; the decision path has already failed closed.
      send(response, 500, { error: 'internal error' });
    });
  });
}

/** The decision listener: /v1/authorize and the status routes. Bind it to loopback in a pod. */
export function createHttpServer(options: HttpServerOptions): Server {
  return serve(route, options);
}

/** The status listener: read-only, for the kubelet's probes and Prometheus on the pod network. */
export function createStatusServer(options: StatusOptions): Server {
  return serve(statusRoute, options);
}
