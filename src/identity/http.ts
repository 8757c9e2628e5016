// The token service's HTTP edge, with no framework: decode the request, call the core, map its
// named errors to JSON answers (`{"error": CODE, "message": ...}` with the error's status), and log
// every refusal with its code.
//
//   POST /v1/token                         ServiceAccount token as `Authorization: Bearer`, or
//                                          {"service_account_token": ...}; optional "agent",
//                                          "subject_token" → RFC 8693 token response
//   GET  /.well-known/jwks.json            the token signing keys, pending and retired ones included
//   GET  /.well-known/openid-configuration the discovery document

import type { IncomingMessage, RequestListener, ServerResponse } from 'node:http';
import type { Logger } from 'pino';
import { CredentialsMissingError, IdentityError, RequestInvalidError } from './errors.ts';
import { JWKS_MAX_AGE_S } from './keyring.ts';
import type { TokenServiceMetrics } from './metrics.ts';
import type { TokenExchangeRequest, TokenService } from './token-service.ts';

const MAX_BODY_BYTES = 64 * 1024;

export function tokenServiceHandler(service: TokenService, log: Logger, metrics?: TokenServiceMetrics): RequestListener {
  return (req, res) => {
    const started = process.hrtime.bigint();
    const observe = (result: string): void => {
      if (metrics === undefined || (req.url ?? '').split('?')[0] !== '/v1/token') return;
      metrics.exchanges.inc({ result });
      metrics.exchangeDuration.observe({ result }, Number(process.hrtime.bigint() - started) / 1e9);
    };
    route(service, req, res).then(
      () => { observe(res.statusCode === 200 ? 'issued' : res.statusCode === 405 ? 'method_not_allowed' : 'not_found'); },
      (error: unknown) => {
        if (error instanceof IdentityError) {
          log.warn({ code: error.code, reason: error.message, path: req.url }, 'token request refused');
          sendJson(res, error.status, { error: error.code, message: error.message });
          observe(error.code);
          return;
        }
        log.error({ error: error instanceof Error ? error.message : String(error), path: req.url }, 'token service failed');
        sendJson(res, 500, { error: 'internal', message: 'the token service failed; see its log' });
        observe('internal');
      },
    );
  };
}

async function route(service: TokenService, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const path = (req.url ?? '/').split('?')[0];
  const method = req.method ?? 'GET';
  if (path === '/v1/token') {
    if (method !== 'POST') { methodNotAllowed(res, 'POST'); return; }
    const issued = await service.exchange(await exchangeRequest(req));
    sendJson(res, 200, issued.response, { 'cache-control': 'no-store' });
    return;
  }
  if (path === '/.well-known/jwks.json' || path === '/.well-known/openid-configuration') {
    if (method !== 'GET' && method !== 'HEAD') { methodNotAllowed(res, 'GET, HEAD'); return; }
    const body = path === '/.well-known/jwks.json' ? await service.jwks() : service.discovery();
    sendJson(res, 200, body, { 'cache-control': `public, max-age=${String(JWKS_MAX_AGE_S)}` });
    return;
  }
  sendJson(res, 404, { error: 'not_found', message: `no endpoint ${path ?? ''}` });
}

async function exchangeRequest(req: IncomingMessage): Promise<TokenExchangeRequest> {
  const text = await readBody(req);
  let body: Record<string, unknown> = {};
  if (text.trim() !== '') {
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch {
      throw new RequestInvalidError('the body is not JSON');
    }
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw new RequestInvalidError('the body is not a JSON object');
    body = parsed as Record<string, unknown>;
  }
  for (const field of ['service_account_token', 'agent', 'subject_token']) {
    if (body[field] !== undefined && typeof body[field] !== 'string') throw new RequestInvalidError(`"${field}" must be a string`);
  }
  const bearer = /^Bearer +(\S+)$/i.exec(req.headers.authorization ?? '')?.[1];
  const serviceAccountToken = bearer ?? (body.service_account_token as string | undefined);
  if (serviceAccountToken === undefined || serviceAccountToken === '') {
    throw new CredentialsMissingError('send the pod\'s ServiceAccount token (audience portcullis) as "Authorization: Bearer" or "service_account_token"');
  }
  return {
    serviceAccountToken,
    ...(typeof body.agent === 'string' ? { agent: body.agent } : {}),
    ...(typeof body.subject_token === 'string' ? { subjectToken: body.subject_token } : {}),
  };
}

async function readBody(req: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > MAX_BODY_BYTES) throw new RequestInvalidError(`the body is larger than ${String(MAX_BODY_BYTES)} bytes`);
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString('utf8');
}

function methodNotAllowed(res: ServerResponse, allow: string): void {
  res.setHeader('allow', allow);
  sendJson(res, 405, { error: 'method_not_allowed', message: `use ${allow}` });
}

function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  if (res.headersSent) return;
  res.writeHead(status, { 'content-type': 'application/json', ...headers }).end(`${JSON.stringify(body)}\n`);
}
