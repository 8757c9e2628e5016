// Envoy's ext_authz in HTTP mode (http_service): for each proxied request
// Envoy sends the authorization server the request's own method and path (after
// path_prefix), its Host and Authorization headers and those allowed_headers
// lets through, and with with_request_body its body, content-length set to the
// body's size. A 200 answer lets the request through, its headers added
// upstream as allowed_upstream_headers permits; any other status is sent to
// the client as the denial, body and headers included. A thin adapter over
// decideProxied (envoy-check.ts), the same core as the gRPC mode.
//
// It has its own listener: every method and path on it is a proxied request to
// judge, so it cannot share a listener with /v1/authorize and the probes without
// a path prefix Envoy must be configured to agree with, and it stays on the
// loopback while the probe and metrics listener is reachable from outside.
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import { createServer, STATUS_CODES } from 'node:http';
import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import type { ProxiedRequest, ProxyAnswer, ProxyOptions } from './envoy-check.ts';
import { decideProxied, DEFAULT_INSPECTION_LIMIT, isSingleHeader } from './envoy-check.ts';

export interface EnvoyHttpServerOptions extends ProxyOptions {
  log: Logger;
}

/** Lower-cased headers, a repeated one joined with commas as Envoy joins them, or why they are ambiguous. */
function headersOf(request: IncomingMessage): Map<string, string> | { refuse: string } {
  const headers = new Map<string, string>();
  for (const [name, values] of Object.entries(request.headersDistinct)) {
    if (values === undefined) continue;
    if (values.length > 1 && isSingleHeader(name)) return { refuse: `the header ${name} is repeated` };
    headers.set(name, values.join(','));
  }
  return headers;
}

/**
 * The body, kept up to one byte over the limit (enough to know it is over) and
 * the rest read and dropped, so the connection stays usable for the answer.
 */
async function bodyOf(request: IncomingMessage, limit: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let kept = 0;
  for await (const chunk of request) {
    const buffer = chunk as Buffer;
    if (kept > limit) continue;
    chunks.push(buffer);
    kept += buffer.byteLength;
  }
  return Buffer.concat(chunks).subarray(0, limit + 1);
}

/** An absolute-form request target (RFC 9112 3.2.2): scheme, authority and the path with its query. */
const ABSOLUTE_FORM = /^([A-Za-z][A-Za-z0-9+.-]*):\/\/([^/?#]*)([^#]*)$/;

/**
 * The authority a request is for, and its path: from the request target when
 * it names one (CONNECT's authority-form, an absolute-form URL), which the Host
 * header, when present, must then name too; else from Host. A request whose
 * target and Host disagree is refused: the proxy routes by one, and the
 * sidecar must judge that one, not guess which.
 */
function targetOf(method: string, url: string, host: string | undefined): { authority: string; path: string; scheme: string } | { refuse: string } {
  const agrees = (authority: string): boolean => host === undefined || host.toLowerCase() === authority.toLowerCase();
  if (method === 'CONNECT') {
    if (!agrees(url)) return { refuse: `the CONNECT target ${JSON.stringify(url)} and the Host header ${JSON.stringify(host)} disagree` };
    return { authority: url, path: '', scheme: 'http' };
  }
  const absolute = ABSOLUTE_FORM.exec(url);
  if (absolute !== null) {
    const [, scheme = '', authority = '', rest = ''] = absolute;
    if (!agrees(authority)) return { refuse: `the request target names ${JSON.stringify(authority)} and the Host header ${JSON.stringify(host)}: they disagree` };
    return { authority, path: rest === '' ? '/' : rest, scheme: scheme.toLowerCase() };
  }
  if (host === undefined) return { refuse: 'the request has no Host header and its target names no host' };
  // Envoy does not send the scheme: a host without a port is port 80, as for a plain-HTTP forward proxy.
  return { authority: host, path: url, scheme: 'http' };
}

function proxiedRequestOf(request: IncomingMessage, body: Buffer): ProxiedRequest | { refuse: string } {
  const headers = headersOf(request);
  if ('refuse' in headers) return headers;
  const method = request.method ?? '';
  const target = targetOf(method, request.url ?? '', headers.get('host'));
  if ('refuse' in target) return target;
  return { method, ...target, headers, body, clientContentLength: false };
}

function decide(request: IncomingMessage, body: Buffer, options: EnvoyHttpServerOptions): Promise<ProxyAnswer> {
  return decideProxied(proxiedRequestOf(request, body), 'envoy-http', options);
}

/** Envoy's HTTP mode reads the headers to remove upstream from this answer header, comma-separated. */
const HEADERS_TO_REMOVE = 'x-envoy-auth-headers-to-remove';

function headersOfAnswer(answer: ProxyAnswer): [string, string][] {
  const removals: [string, string][] = answer.headersToRemove.length === 0 ? [] : [[HEADERS_TO_REMOVE, answer.headersToRemove.join(', ')]];
  return [...answer.headers, ...removals];
}

function write(response: ServerResponse, answer: ProxyAnswer): void {
  response.writeHead(answer.status, [...headersOfAnswer(answer).flat(), 'content-length', String(Buffer.byteLength(answer.body))]);
  response.end(answer.body);
}

const INTERNAL_ERROR = '{"error":"internal error"}';

/** Envoy answers a 5xx as a denial unless failure_mode_allow is set, which the sidecar's deployments never set. */
function failClosed(response: ServerResponse, error: unknown, log: Logger): void {
  log.error({ err: error }, 'ext_authz HTTP check failed');
  if (response.headersSent) {
    response.destroy();
    return;
  }
  response.writeHead(500, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(INTERNAL_ERROR) });
  response.end(INTERNAL_ERROR);
}

/** Node hands CONNECT to its own event with the raw socket: the answer is written by hand, then the socket closed. */
function answerConnect(request: IncomingMessage, socket: Duplex, options: EnvoyHttpServerOptions): void {
  const send = (status: number, headers: [string, string][], body: string): void => {
    const lines = [`HTTP/1.1 ${status} ${STATUS_CODES[status] ?? ''}`, ...headers.map(([k, v]) => `${k}: ${v}`), `content-length: ${Buffer.byteLength(body)}`, 'connection: close'];
    socket.end(`${lines.join('\r\n')}\r\n\r\n${body}`);
  };
  decide(request, Buffer.alloc(0), options).then(
    (answer) => { send(answer.status, headersOfAnswer(answer), answer.body); },
    (error: unknown) => {
      options.log.error({ err: error }, 'ext_authz HTTP check failed');
      send(500, [['content-type', 'application/json']], INTERNAL_ERROR);
    },
  );
}

export function createEnvoyHttpServer(options: EnvoyHttpServerOptions): Server {
  const limit = options.inspectionLimit ?? DEFAULT_INSPECTION_LIMIT;
  const server = createServer((request, response) => {
    bodyOf(request, limit)
      .then((body) => decide(request, body, options))
      .then(
        (answer) => { write(response, answer); },
        (error: unknown) => { failClosed(response, error, options.log); },
      );
  });
  server.on('connect', (request: IncomingMessage, socket: Duplex) => {
    answerConnect(request, socket, options);
  });
  return server;
}
