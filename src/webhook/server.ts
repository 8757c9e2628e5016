// The webhook's HTTPS server: POST /inject takes an AdmissionReview and answers
// with the mutation; GET /healthz. Certificates can be swapped while serving.

import { createServer } from 'node:https';
import type { Server } from 'node:https';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Logger } from 'pino';
import type { Histogram } from 'prom-client';
import type { Pem } from './certs.ts';
import type { InjectionConfig } from './inject.ts';
import { AdmissionReviewError, mutate, parseAdmissionReview } from './admission.ts';

const MAX_REVIEW_BYTES = 3 * 1024 * 1024;

export interface WebhookServerOptions {
  host: string;
  port: number;
  tls: Pem;
  injection: InjectionConfig;
  excludedNamespaces: readonly string[];
  log: Logger;
  duration?: Histogram<'result'>;
  /** The tenant of a namespace (its portcullis.dev/tenant label, else its name). */
  tenantOf: (namespace: string) => Promise<string>;
}

export interface WebhookServer {
  server: Server;
  /** Serves new connections with a renewed certificate. */
  updateTls(tls: Pem): void;
  close(): Promise<void>;
}

async function readBody(req: IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > MAX_REVIEW_BYTES) throw new AdmissionReviewError(`the AdmissionReview is larger than ${MAX_REVIEW_BYTES} bytes`);
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}

function send(res: ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body));
}

async function handleInject(req: IncomingMessage, res: ServerResponse, options: WebhookServerOptions): Promise<void> {
  const started = performance.now();
  let review: unknown;
  try {
    review = JSON.parse((await readBody(req)).toString('utf8')) as unknown;
  } catch (error) {
    send(res, 400, { error: error instanceof AdmissionReviewError ? error.message : 'the body is not JSON' });
    return;
  }
  try {
    const request = parseAdmissionReview(review);
    const tenant = await options.tenantOf(request.namespace ?? '');
    const outcome = mutate(request, options.injection, options.excludedNamespaces, { tenant });
    options.log.info({ namespace: outcome.namespace, pod: outcome.pod, result: outcome.result, reason: outcome.reason }, 'admission');
    options.duration?.observe({ result: outcome.result }, (performance.now() - started) / 1000);
    send(res, 200, outcome.review);
  } catch (error) {
    if (!(error instanceof AdmissionReviewError)) throw error;
    send(res, 400, { error: error.message });
  }
}

export async function startWebhookServer(options: WebhookServerOptions): Promise<WebhookServer> {
  const server = createServer({ cert: options.tls.cert, key: options.tls.key, minVersion: 'TLSv1.2' }, (req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method === 'POST' && path === '/inject') {
      handleInject(req, res, options).catch((error: unknown) => {
        options.log.error({ error: String(error) }, 'admission failed');
        if (!res.headersSent) send(res, 500, { error: 'internal error' });
      });
    } else if (req.method === 'GET' && path === '/healthz') {
      res.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n');
    } else {
      send(res, 404, { error: `no ${req.method ?? ''} ${path ?? ''} here` });
    }
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port, options.host, () => { resolve(); });
  });
  return {
    server,
    updateTls: (tls) => { server.setSecureContext({ cert: tls.cert, key: tls.key }); },
    close: () => new Promise<void>((resolve) => { server.close(() => { resolve(); }); server.closeAllConnections(); }),
  };
}
