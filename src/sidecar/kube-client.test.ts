import type { IncomingMessage, ServerResponse } from 'node:http';
import { createServer } from 'node:https';
import type { Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import type { PeerCertificate, TLSSocket } from 'node:tls';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { Pem } from '../webhook/certs.ts';
import { createCertificateAuthority } from '../webhook/certs.ts';
import type { ApiConnection } from './kube-config.ts';
import { KubeApiError, KubeClient, KubeRequestError, LineBuffer, LineError } from './kube-client.ts';

interface Seen {
  method: string;
  url: string;
  headers: IncomingMessage['headers'];
  body: string;
  clientCert: string | undefined;
}

type Handler = (request: IncomingMessage, response: ServerResponse, body: string) => void;

let ca: Pem;
let server: Pem;
let client: Pem;
let otherCa: Pem;
const servers: Server[] = [];
const clients: KubeClient[] = [];

beforeAll(async () => {
  const authority = await createCertificateAuthority('test-ca');
  ca = authority;
  server = await authority.issue({ commonName: 'kube-apiserver', ips: ['127.0.0.1'], dnsNames: ['kubernetes.default'], usage: 'server' });
  client = await authority.issue({ commonName: 'admin', organizations: ['system:masters'], usage: 'client' });
  otherCa = await createCertificateAuthority('another-ca');
});

afterEach(async () => {
  for (const c of clients.splice(0)) c.close();
  await Promise.all(servers.splice(0).map((s) => new Promise((resolve) => {
    s.closeAllConnections();
    s.close(resolve);
  })));
});

/** An HTTPS API server stand-in that records each request and answers with `handler`. */
async function apiServer(handler: Handler, options: { requestCert?: boolean } = {}): Promise<{ url: string; seen: Seen[] }> {
  const seen: Seen[] = [];
  const https = createServer({ cert: server.cert, key: server.key, ca: ca.cert, requestCert: options.requestCert ?? false, rejectUnauthorized: options.requestCert ?? false }, (request, response) => {
    const chunks: Buffer[] = [];
    request.on('data', (chunk: Buffer) => chunks.push(chunk));
    request.on('end', () => {
      const body = Buffer.concat(chunks).toString('utf8');
      // An empty object when the client sent no certificate.
      const peer: Partial<PeerCertificate> = (request.socket as TLSSocket).getPeerCertificate();
      seen.push({ method: request.method ?? '', url: request.url ?? '', headers: request.headers, body, clientCert: [peer.subject?.CN].flat()[0] });
      handler(request, response, body);
    });
  });
  servers.push(https);
  await new Promise<void>((resolve) => https.listen(0, '127.0.0.1', resolve));
  return { url: `https://127.0.0.1:${(https.address() as AddressInfo).port}`, seen };
}

function connect(url: string, change: Partial<ApiConnection> = {}, options: ConstructorParameters<typeof KubeClient>[1] = {}): KubeClient {
  const kube = new KubeClient({ origin: 'test', server: new URL(url), ca: ca.cert, insecureSkipTlsVerify: false, token: () => Promise.resolve('sa-token'), ...change }, options);
  clients.push(kube);
  return kube;
}

const json = (status: number, body: unknown): Handler => (_request, response) => {
  response.writeHead(status, { 'content-type': 'application/json' });
  response.end(JSON.stringify(body));
};

const status = (code: number, reason: string, message: string): unknown => ({ kind: 'Status', apiVersion: 'v1', status: 'Failure', code, reason, message });

async function failure(promise: Promise<unknown>): Promise<Error> {
  const error: unknown = await promise.then(() => undefined, (e: unknown) => e);
  expect(error).toBeInstanceOf(Error);
  return error as Error;
}

describe('requests', () => {
  it('GETs JSON with the bearer token, the query, and the path under the server URL', async () => {
    const api = await apiServer(json(200, { kind: 'ConfigMapList', items: [] }));
    const answer = await connect(`${api.url}/k8s/clusters/c-1`).get('/api/v1/namespaces/finance/configmaps', { fieldSelector: 'metadata.name=portcullis-bundle', limit: 1, skipped: undefined });
    expect(answer).toEqual({ kind: 'ConfigMapList', items: [] });
    expect(api.seen[0]).toMatchObject({ method: 'GET', url: '/k8s/clusters/c-1/api/v1/namespaces/finance/configmaps?fieldSelector=metadata.name%3Dportcullis-bundle&limit=1' });
    expect(api.seen[0]?.headers).toMatchObject({ authorization: 'Bearer sa-token', accept: 'application/json' });
  });

  it('asks for a fresh token at every request, so a rotated token file is used', async () => {
    const api = await apiServer(json(200, {}));
    const tokens = ['first', 'second'];
    const kube = connect(api.url, { token: () => Promise.resolve(tokens.shift() ?? 'none') });
    await kube.get('/api');
    await kube.get('/api');
    expect(api.seen.map((s) => s.headers.authorization)).toEqual(['Bearer first', 'Bearer second']);
  });

  it('POSTs an object as JSON to create it', async () => {
    const api = await apiServer(json(201, { metadata: { name: 'e-1' } }));
    expect(await connect(api.url).create('/api/v1/namespaces/finance/events', { kind: 'Event', message: 'é' })).toEqual({ metadata: { name: 'e-1' } });
    expect(api.seen[0]).toMatchObject({ method: 'POST', body: '{"kind":"Event","message":"é"}' });
    expect(api.seen[0]?.headers).toMatchObject({ 'content-type': 'application/json', 'content-length': '31' });
  });

  it('authenticates with a client certificate, as the admin kubeconfig does', async () => {
    const api = await apiServer(json(200, {}), { requestCert: true });
    await connect(api.url, { token: undefined, cert: client.cert, key: client.key }).get('/api');
    expect(api.seen[0]?.clientCert).toBe('admin');
    expect(api.seen[0]?.headers.authorization).toBeUndefined();
    expect(await failure(connect(api.url, { token: undefined }).get('/api'))).toBeInstanceOf(KubeRequestError);
  });

  it('refuses a server whose certificate the CA did not sign, unless told to skip the check', async () => {
    const api = await apiServer(json(200, { ok: true }));
    const error = await failure(connect(api.url, { ca: otherCa.cert }).get('/api'));
    expect(error).toBeInstanceOf(KubeRequestError);
    expect(error.message).toMatch(/^GET \/api: .*certificate/);
    expect(await connect(api.url, { ca: otherCa.cert, insecureSkipTlsVerify: true }).get('/api')).toEqual({ ok: true });
  });

  it('checks the certificate against tls-server-name when given', async () => {
    const api = await apiServer(json(200, { ok: true }));
    expect(await connect(api.url, { tlsServerName: 'kubernetes.default' }).get('/api')).toEqual({ ok: true });
    expect((await failure(connect(api.url, { tlsServerName: 'elsewhere.example' }).get('/api'))).message).toContain('elsewhere.example');
  });

  it("turns an error answer into a KubeApiError with the Status' code, reason and message", async () => {
    const api = await apiServer(json(403, status(403, 'Forbidden', 'configmaps is forbidden: User "system:serviceaccount:finance:agent" cannot list')));
    const error = await failure(connect(api.url).get('/api/v1/namespaces/finance/configmaps'));
    expect(error).toBeInstanceOf(KubeApiError);
    expect(error).toMatchObject({ status: 403, reason: 'Forbidden' });
    expect(error.message).toBe('GET /api/v1/namespaces/finance/configmaps: 403 Forbidden: configmaps is forbidden: User "system:serviceaccount:finance:agent" cannot list');
  });

  it('refuses an answer over the body bound, or that is not JSON', async () => {
    const big = await apiServer(json(200, { data: 'x'.repeat(2048) }));
    expect((await failure(connect(big.url, {}, { maxBodyBytes: 1024 }).get('/api'))).message).toBe('GET /api: the answer is over 1024 bytes');
    const text = await apiServer((_q, response) => { response.end('<html>'); });
    expect((await failure(connect(text.url).get('/api'))).message).toMatch(/^GET \/api: the answer is not JSON/);
  });

  it('gives up on a server that does not answer within the deadline', async () => {
    const api = await apiServer(() => undefined);
    const error = await failure(connect(api.url, {}, { requestTimeoutMs: 50 }).get('/api'));
    expect(error).toBeInstanceOf(KubeRequestError);
    expect(error.message).toBe('GET /api: no answer within 50 ms');
  });

  it('fails the request, naming it, when the token cannot be read', async () => {
    const api = await apiServer(json(200, {}));
    await expect(connect(api.url, { token: () => Promise.reject(new Error('the token file /sa/token is empty')) }).get('/api')).rejects.toThrow('the token file /sa/token is empty');
    expect(api.seen).toHaveLength(0);
  });
});

/** A watch answer written in the given pieces, then ended (or left open). */
function streaming(pieces: readonly (string | Buffer)[], end = true): Handler {
  return (_request, response) => {
    response.writeHead(200, { 'content-type': 'application/json' });
    for (const piece of pieces) response.write(piece);
    if (end) response.end();
  };
}

describe('watches', () => {
  const event = (type: string, name: string): string => JSON.stringify({ type, object: { metadata: { name, resourceVersion: '7' } } });

  it('hands over each event in order, whatever the chunks, and resolves when the server ends the watch', async () => {
    const lines = `${event('ADDED', 'a')}\n${event('MODIFIED', 'é')}\n\n${event('DELETED', 'c')}\n`;
    const bytes = Buffer.from(lines);
    const cut = bytes.indexOf(Buffer.from('é')) + 1;
    const api = await apiServer(streaming([bytes.subarray(0, 10), bytes.subarray(10, cut), bytes.subarray(cut)]));
    const events: unknown[] = [];
    await connect(api.url).watch('/api/v1/namespaces/finance/configmaps', { resourceVersion: '5', allowWatchBookmarks: true }, (e) => events.push(e), { idleTimeoutMs: 5_000 });
    expect(events).toEqual([JSON.parse(event('ADDED', 'a')), JSON.parse(event('MODIFIED', 'é')), JSON.parse(event('DELETED', 'c'))]);
    expect(api.seen[0]?.url).toBe('/api/v1/namespaces/finance/configmaps?resourceVersion=5&allowWatchBookmarks=true&watch=true');
  });

  it('refuses an event over the bound, one that is not JSON, and a watch that ends within an event', async () => {
    const watch = async (handler: Handler): Promise<string> => {
      const api = await apiServer(handler);
      return (await failure(connect(api.url, {}, { maxBodyBytes: 64 }).watch('/w', {}, () => undefined, { idleTimeoutMs: 5_000 }))).message;
    };
    expect(await watch(streaming(['x'.repeat(40), `${'x'.repeat(40)}\n`]))).toBe('watch /w: a line is over 64 bytes');
    expect(await watch(streaming(['{"type":\n']))).toMatch(/^watch \/w: an event is not JSON/);
    expect(await watch(streaming([Buffer.from([0x7b, 0xff, 0x7d, 0x0a])]))).toBe('watch /w: a line is not UTF-8');
    expect(await watch(streaming(['{"type":"BOOKMARK"}\n{"type":"MOD']))).toBe('watch /w: the watch ended within an event');
  });

  it('gives up on a watch where nothing arrives for the idle limit', async () => {
    const api = await apiServer(streaming([`${event('ADDED', 'a')}\n`], false));
    const events: unknown[] = [];
    const error = await failure(connect(api.url).watch('/w', {}, (e) => events.push(e), { idleTimeoutMs: 100 }));
    expect(error.message).toBe('watch /w: nothing arrived for 100 ms');
    expect(events).toHaveLength(1);
  });

  it('stops with the error its handler throws', async () => {
    const api = await apiServer(streaming([`${event('ADDED', 'a')}\n${event('ADDED', 'b')}\n`], false));
    const seen: unknown[] = [];
    const error = await failure(connect(api.url).watch('/w', {}, (e) => {
      seen.push(e);
      throw new Error('gone');
    }, { idleTimeoutMs: 5_000 }));
    expect(error.message).toBe('gone');
    expect(seen).toHaveLength(1);
  });

  it('turns an error answer (410 Gone) into a KubeApiError', async () => {
    const api = await apiServer(json(410, status(410, 'Expired', 'too old resource version: 5 (90)')));
    const error = await failure(connect(api.url).watch('/w', { resourceVersion: '5' }, () => undefined, { idleTimeoutMs: 5_000 }));
    expect(error).toMatchObject({ status: 410, reason: 'Expired', message: 'watch /w: 410 Expired: too old resource version: 5 (90)' });
  });

  it('ends when its signal aborts', async () => {
    const api = await apiServer(streaming([`${event('ADDED', 'a')}\n`], false));
    const controller = new AbortController();
    const watching = connect(api.url).watch('/w', {}, () => { controller.abort(); }, { idleTimeoutMs: 5_000, signal: controller.signal });
    await expect(watching).rejects.toThrow();
    expect(controller.signal.aborted).toBe(true);
  });
});

describe('LineBuffer', () => {
  it('splits lines across chunks, keeping a character cut between two chunks whole', () => {
    const lines = new LineBuffer(100);
    const bytes = Buffer.from('ab\ncé\nd');
    expect(lines.push(bytes.subarray(0, 5))).toEqual(['ab']);
    expect(lines.pending).toBe(2);
    expect(lines.push(bytes.subarray(5))).toEqual(['cé']);
    expect(lines.push(Buffer.from('\n\n'))).toEqual(['d', '']);
    expect(lines.pending).toBe(0);
  });

  it('refuses a line over the bound, even one that is not ended yet', () => {
    const lines = new LineBuffer(4);
    expect(lines.push(Buffer.from('1234\n'))).toEqual(['1234']);
    expect(() => lines.push(Buffer.from('12345'))).toThrow(LineError);
    expect(() => new LineBuffer(4).push(Buffer.from('123\n12345\n'))).toThrow('a line is over 4 bytes');
  });
});
