// The sidecar's side of the token service's transport: HTTPS verified against the token service's
// own CA and no other (the pod's ServiceAccount token travels on this connection), the host name
// checked against the certificate, answers bounded in size and time. Plain HTTP only when asked for
// by name, for development. node:https, not the global fetch: fetch cannot take a CA per request.

import { X509Certificate } from 'node:crypto';
import type { Agent as HttpAgent, IncomingMessage, OutgoingHttpHeaders } from 'node:http';
import { Agent as PlainAgent, request as plainRequest } from 'node:http';
import { Agent as TlsAgent, request as tlsRequest } from 'node:https';

/** What is wrong with a token service's settings, for the caller to say which of its own to change. */
export type TokenServiceConfigProblem = 'url_invalid' | 'plain_http' | 'ca_missing' | 'ca_invalid';

/** A token service URL or CA the sidecar will not use, with the reason. */
export class TokenServiceConfigError extends Error {
  override readonly name = 'TokenServiceConfigError';
  readonly problem: TokenServiceConfigProblem;

  constructor(problem: TokenServiceConfigProblem, message: string) {
    super(message);
    this.problem = problem;
  }
}

/**
 * The CA certificates of a PEM bundle, each checked: a certificate that does not parse or is not
 * a CA is refused, naming its place in the bundle. Several are allowed, so a new CA can be
 * trusted next to the old one while the token service's certificate moves to it.
 */
export function parseCaBundle(pem: string): string[] {
  const blocks = pem.match(/-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g) ?? [];
  const outside = pem.replace(/-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g, '').trim();
  if (blocks.length === 0) throw new TokenServiceConfigError('ca_invalid', 'holds no PEM certificate (-----BEGIN CERTIFICATE-----)');
  if (outside !== '') throw new TokenServiceConfigError('ca_invalid', `holds text outside its PEM certificates: ${JSON.stringify(outside.slice(0, 40))}`);
  return blocks.map((block, index) => {
    let certificate: X509Certificate;
    try {
      certificate = new X509Certificate(block);
    } catch (error) {
      throw new TokenServiceConfigError('ca_invalid', `certificate ${String(index + 1)} does not parse: ${error instanceof Error ? error.message : String(error)}`);
    }
    if (!certificate.ca) throw new TokenServiceConfigError('ca_invalid', `certificate ${String(index + 1)} (${certificate.subject}) is not a CA certificate`);
    return block;
  });
}

export interface TokenServiceEndpointOptions {
  /** PEM: the only CAs the token service's certificate may chain to. Required for https. */
  ca?: string;
  /** Development only: allow an http:// URL, over which the ServiceAccount token travels in clear. */
  allowPlainHttp?: boolean;
}

export interface TokenServiceEndpoint {
  /** The base URL, without a trailing slash: also the default issuer of agent tokens. */
  url: string;
  /** The CA certificates (https), or undefined for plain HTTP. */
  ca: string[] | undefined;
}

/** The token service the sidecar may talk to, or a TokenServiceConfigError saying why not. Pure. */
export function tokenServiceEndpoint(service: string, options: TokenServiceEndpointOptions = {}): TokenServiceEndpoint {
  let url: URL;
  try {
    url = new URL(service);
  } catch {
    throw new TokenServiceConfigError('url_invalid', `${JSON.stringify(service)} is not a URL`);
  }
  if (url.username !== '' || url.password !== '' || url.search !== '' || url.hash !== '') {
    throw new TokenServiceConfigError('url_invalid', `${JSON.stringify(service)} may hold only a scheme, a host, a port and a path`);
  }
  if (url.protocol === 'http:') {
    if (options.allowPlainHttp !== true) {
      throw new TokenServiceConfigError('plain_http', `${JSON.stringify(service)} is plain HTTP: the pod's ServiceAccount token would cross the network in clear; use https (plain HTTP is for development only, when allowed by name)`);
    }
    return { url: withoutTrailingSlash(url), ca: undefined };
  }
  if (url.protocol !== 'https:') throw new TokenServiceConfigError('url_invalid', `${JSON.stringify(service)} is not an https URL`);
  if (options.ca === undefined || options.ca.trim() === '') {
    throw new TokenServiceConfigError('ca_missing', `${JSON.stringify(service)} needs the CA that signs the token service's certificate; no other CA is trusted for it`);
  }
  let ca: string[];
  try {
    ca = parseCaBundle(options.ca);
  } catch (error) {
    if (error instanceof TokenServiceConfigError) throw new TokenServiceConfigError(error.problem, `the token service CA ${error.message}`);
    throw error;
  }
  return { url: withoutTrailingSlash(url), ca };
}

function withoutTrailingSlash(url: URL): string {
  return url.toString().replace(/\/+$/, '');
}

export interface TokenServiceAnswer {
  status: number;
  /** The answer's JSON, or undefined when it is not JSON. */
  body: unknown;
}

/** Answers are a token or a JWKS: a few KiB. */
const MAX_ANSWER_BYTES = 1024 * 1024;
const DEFAULT_TIMEOUT_MS = 10_000;

/** Talks to one token service over connections kept alive, verified against its CA only. */
export class TokenServiceClient {
  readonly url: string;
  private readonly agent: HttpAgent;
  private readonly timeoutMs: number;

  constructor(endpoint: TokenServiceEndpoint, options: { timeoutMs?: number } = {}) {
    this.url = endpoint.url;
    this.timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    // `ca` replaces Node's bundled roots: only the token service's own CA is trusted.
    this.agent = endpoint.ca === undefined ? new PlainAgent({ keepAlive: true }) : new TlsAgent({ keepAlive: true, ca: endpoint.ca, minVersion: 'TLSv1.2' });
  }

  /** One request to a path under the base URL; JSON sent and read. */
  request(method: 'GET' | 'POST', path: string, headers: OutgoingHttpHeaders = {}, body?: unknown): Promise<TokenServiceAnswer> {
    const target = new URL(`${this.url}${path}`);
    const text = body === undefined ? undefined : JSON.stringify(body);
    const send = target.protocol === 'https:' ? tlsRequest : plainRequest;
    return new Promise((resolve, reject) => {
      const req = send(target, {
        method,
        agent: this.agent,
        timeout: this.timeoutMs,
        headers: { accept: 'application/json', ...headers, ...(text === undefined ? {} : { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) }) },
      }, (res) => { readAnswer(res).then(resolve, reject); });
      req.on('timeout', () => { req.destroy(new Error(`the token service did not answer within ${String(this.timeoutMs)} ms`)); });
      req.on('error', reject);
      req.end(text);
    });
  }

  /** Closes the connections kept alive. */
  close(): void {
    this.agent.destroy();
  }
}

async function readAnswer(res: IncomingMessage): Promise<TokenServiceAnswer> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of res as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > MAX_ANSWER_BYTES) {
      res.destroy();
      throw new Error(`the token service's answer is larger than ${String(MAX_ANSWER_BYTES)} bytes`);
    }
    chunks.push(chunk);
  }
  const text = Buffer.concat(chunks).toString('utf8');
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    body = undefined;
  }
  return { status: res.statusCode ?? 0, body };
}
