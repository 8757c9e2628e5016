import type { Server } from 'node:https';
import { createServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { CertificateAuthority, Pem } from '../webhook/certs.ts';
import { createCertificateAuthority } from '../webhook/certs.ts';
import { parseCaBundle, TokenServiceClient, tokenServiceEndpoint } from './token-service-client.ts';
import { tokenServiceFetcher } from './token-source.ts';

let ca: CertificateAuthority;
let otherCa: CertificateAuthority;
let serving: Pem;

beforeAll(async () => {
  ca = await createCertificateAuthority('portcullis-tokens-ca');
  otherCa = await createCertificateAuthority('someone-else');
  serving = await ca.issue({ commonName: 'localhost', dnsNames: ['localhost'], ips: ['127.0.0.1'], usage: 'server' });
});

describe('the token service endpoint a sidecar accepts', () => {
  it.each([
    ['a plain HTTP URL', 'http://portcullis-tokens.portcullis-system.svc:8443', {}, 'plain_http', /is plain HTTP: the pod's ServiceAccount token would cross the network in clear/],
    ['an https URL without a CA', 'https://portcullis-tokens.portcullis-system.svc:8443', {}, 'ca_missing', /needs the CA that signs the token service's certificate/],
    ['an https URL with an empty CA', 'https://portcullis-tokens.portcullis-system.svc:8443', { ca: '  \n' }, 'ca_missing', /needs the CA/],
    ['a CA that is not PEM', 'https://t.example:8443', { ca: 'not a certificate' }, 'ca_invalid', /the token service CA holds no PEM certificate/],
    ['a URL with credentials', 'https://user:secret@t.example:8443', {}, 'url_invalid', /may hold only a scheme, a host, a port and a path/],
    ['a URL with a query', 'https://t.example:8443/?x=1', {}, 'url_invalid', /may hold only/],
    ['another scheme', 'ftp://t.example', {}, 'url_invalid', /is not an https URL/],
    ['no URL at all', 'portcullis-tokens:8443', {}, 'url_invalid', /is not an https URL|is not a URL/],
  ])('refuses %s, saying why', (_name, url, options, problem, message) => {
    expect(() => tokenServiceEndpoint(url, options)).toThrow(message);
    expect(() => tokenServiceEndpoint(url, options)).toThrow(expect.objectContaining({ name: 'TokenServiceConfigError', problem }));
  });

  it('takes plain HTTP only when it is allowed by name, and then trusts no CA', () => {
    expect(tokenServiceEndpoint('http://127.0.0.1:8443/', { allowPlainHttp: true })).toEqual({ url: 'http://127.0.0.1:8443', ca: undefined });
  });

  it('takes an https URL with its CA, the URL without a trailing slash (the default issuer)', () => {
    const endpoint = tokenServiceEndpoint('https://portcullis-tokens.portcullis-system.svc:8443/', { ca: ca.cert });
    expect(endpoint.url).toBe('https://portcullis-tokens.portcullis-system.svc:8443');
    expect(endpoint.ca).toEqual([ca.cert.trim()]);
  });
});

describe('the token service CA bundle', () => {
  it('holds every CA of a bundle, so a new CA can be trusted next to the old one', () => {
    expect(parseCaBundle(`${ca.cert}\n${otherCa.cert}`)).toHaveLength(2);
  });

  it.each([
    ['a serving certificate, which is no CA', (): string => serving.cert, /certificate 1 \(CN=localhost\) is not a CA certificate/],
    ['a private key next to the CA', (): string => `${ca.cert}\n${serving.key}`, /holds text outside its PEM certificates/],
    ['a certificate that does not parse', (): string => '-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----', /certificate 1 does not parse/],
    ['nothing', (): string => '', /holds no PEM certificate/],
  ])('refuses %s', (_name, pem, message) => {
    expect(() => parseCaBundle(pem())).toThrow(message);
  });
});

describe('the token service client', () => {
  let server: Server | undefined;

  afterEach(async () => {
    const closing = server;
    server = undefined;
    if (closing !== undefined) await new Promise((resolve) => { closing.close(resolve); closing.closeAllConnections(); });
  });

  /** A TLS server with the given certificate that answers every request with a token and records its Authorization. */
  async function serve(certificate: Pem, seen: string[] = []): Promise<number> {
    server = createServer({ cert: certificate.cert, key: certificate.key }, (req, res) => {
      seen.push(req.headers.authorization ?? '');
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ access_token: 'agent-token', expires_in: 600 }));
    });
    const listening = server;
    await new Promise<void>((resolve) => listening.listen(0, '127.0.0.1', resolve));
    return (listening.address() as AddressInfo).port;
  }

  it('exchanges the ServiceAccount token with a service whose certificate its CA signed', async () => {
    const seen: string[] = [];
    const port = await serve(serving, seen);
    const client = new TokenServiceClient(tokenServiceEndpoint(`https://127.0.0.1:${String(port)}`, { ca: ca.cert }));
    await expect(tokenServiceFetcher(client, () => Promise.resolve('sa-token\n'))()).resolves.toEqual({ token: 'agent-token', expiresInS: 600 });
    expect(seen).toEqual(['Bearer sa-token']);
    client.close();
  });

  it.each([
    ['signed by another CA (a man in the middle)', async (): Promise<Pem> => otherCa.issue({ commonName: 'localhost', dnsNames: ['localhost'], ips: ['127.0.0.1'], usage: 'server' }), /certificate/i],
    ['signed by its CA for another name', async (): Promise<Pem> => ca.issue({ commonName: 'elsewhere', dnsNames: ['elsewhere.example'], usage: 'server' }), /IP: 127\.0\.0\.1 is not in the cert's list|altnames/i],
  ])('never sends the ServiceAccount token to a service whose certificate is %s', async (_name, certificate, message) => {
    const seen: string[] = [];
    const port = await serve(await certificate(), seen);
    const client = new TokenServiceClient(tokenServiceEndpoint(`https://127.0.0.1:${String(port)}`, { ca: ca.cert }));
    await expect(tokenServiceFetcher(client, () => Promise.resolve('sa-token'))()).rejects.toThrow(message);
    expect(seen).toEqual([]);
    client.close();
  });

  it('says what the token service answered when it refuses', async () => {
    server = createServer({ cert: serving.cert, key: serving.key }, (_req, res) => {
      res.writeHead(401, { 'content-type': 'application/json' }).end(JSON.stringify({ error: 'credentials_invalid', message: 'the token is not valid' }));
    });
    const listening = server;
    await new Promise<void>((resolve) => listening.listen(0, '127.0.0.1', resolve));
    const client = new TokenServiceClient(tokenServiceEndpoint(`https://127.0.0.1:${String((listening.address() as AddressInfo).port)}`, { ca: ca.cert }));
    await expect(tokenServiceFetcher(client, () => Promise.resolve('sa-token'))()).rejects.toThrow('the token service answered 401 credentials_invalid: the token is not valid');
    client.close();
  });
});
