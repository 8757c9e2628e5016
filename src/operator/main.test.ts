import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { KubeConfig } from '@kubernetes/client-node';
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { ephemeralServingTls } from '../webhook/serving-certs.ts';
import { tokenEndpoint, webhookOptions } from './main.ts';

const kubeConfig = new KubeConfig();
kubeConfig.loadFromOptions({
  clusters: [{ name: 'c', server: 'https://127.0.0.1:1', skipTLSVerify: false }],
  users: [{ name: 'u', token: 't' }],
  contexts: [{ name: 'x', cluster: 'c', user: 'u' }],
  currentContext: 'x',
});

describe("the token service's address", () => {
  it('is its Service, over https, by default: the URL injected into sidecars and the issuer of its tokens', () => {
    expect(tokenEndpoint({}, 'portcullis-system', kubeConfig).url).toBe('https://portcullis-tokens.portcullis-system.svc:8443');
  });

  it('is --token-url when given, which must be https', () => {
    expect(tokenEndpoint({ 'token-url': 'https://127.0.0.1:8443/' }, 'ns', kubeConfig).url).toBe('https://127.0.0.1:8443');
    expect(() => tokenEndpoint({ 'token-url': 'http://127.0.0.1:8443' }, 'ns', kubeConfig)).toThrow(/--token-url must be https: sidecars send ServiceAccount tokens to the token service over TLS only/);
    expect(() => tokenEndpoint({ 'token-url': 'tokens:8443' }, 'ns', kubeConfig)).toThrow(/--token-url/);
  });

  it("serves cert-manager's certificate with --token-cert-dir, its ca.crt the CA the sidecars are given", async () => {
    const dir = await mkdtemp(join(tmpdir(), 'portcullis-token-certs-'));
    const tls = await ephemeralServingTls({ dnsNames: ['portcullis-tokens.ns.svc'], ips: [] });
    await Promise.all([writeFile(join(dir, 'tls.crt'), tls.cert), writeFile(join(dir, 'tls.key'), tls.key), writeFile(join(dir, 'ca.crt'), tls.ca)]);
    expect(await tokenEndpoint({ 'token-cert-dir': dir }, 'ns', kubeConfig).tls()).toEqual(tls);
  });
});

describe('the webhook settings', () => {
  it("inject the token service's URL and CA into every sidecar", () => {
    const options = webhookOptions({}, 'portcullis-system', kubeConfig, pino({ level: 'silent' }), { url: 'https://portcullis-tokens.portcullis-system.svc:8443', ca: 'PEM' });
    expect(options.injection).toMatchObject({ tokenService: 'https://portcullis-tokens.portcullis-system.svc:8443', tokenServiceCa: 'PEM' });
  });
});
