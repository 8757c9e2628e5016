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

describe('the counters Redis of injected sidecars', () => {
  const log = pino({ level: 'silent' });
  const tokens = { url: 'https://portcullis-tokens.portcullis-system.svc:8443', ca: 'PEM' };

  it('is off by default: each injected sidecar counts in memory', () => {
    expect(webhookOptions({}, 'portcullis-system', kubeConfig, log, tokens).injection.countersRedisUrl).toBeUndefined();
  });

  it('is injected as given with --counters-redis-url', () => {
    const options = webhookOptions({ 'counters-redis-url': 'redis://redis.portcullis-system:6379/0' }, 'portcullis-system', kubeConfig, log, tokens);
    expect(options.injection.countersRedisUrl).toBe('redis://redis.portcullis-system:6379/0');
  });

  it.each([
    ['a URL with a password, which the pod spec would show', 'redis://:hunter2@redis:6379', /--counters-redis-url: the Redis URL redis:\/\/redis:6379 carries credentials/],
    ['a URL of another scheme', 'http://redis:6379', /--counters-redis-url: "http:\/\/redis:6379" is not a redis:\/\/ or rediss:\/\/ URL/],
  ])('refuses %s, naming the flag and never the password', (_name, url, message) => {
    const attempt = (): unknown => webhookOptions({ 'counters-redis-url': url }, 'portcullis-system', kubeConfig, log, tokens);
    expect(attempt).toThrow(message);
    expect(attempt).not.toThrow(/hunter2/);
  });
});
