import { X509Certificate } from 'node:crypto';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { CoreV1Api, V1Secret } from '@kubernetes/client-node';
import { describe, expect, it } from 'vitest';
import { createCertificateAuthority } from './certs.ts';
import { ensureServingCerts, ephemeralServingTls, mountedServingTls, namesIdentity } from './serving-certs.ts';

const TOKENS = { caCommonName: 'portcullis-tokens-ca', component: 'tokens' };
const SERVICE = { dnsNames: ['portcullis-tokens.portcullis-system.svc', 'portcullis-tokens.portcullis-system.svc.cluster.local'], ips: [] };

/** The Secrets API as ensureServingCerts uses it, over a map. */
function secretsApi(): { core: CoreV1Api; secrets: Map<string, V1Secret> } {
  const secrets = new Map<string, V1Secret>();
  const api = {
    readNamespacedSecret: ({ name }: { name: string }): Promise<V1Secret> => {
      const found = secrets.get(name);
      return found === undefined ? Promise.reject(Object.assign(new Error('not found'), { code: 404 })) : Promise.resolve(structuredClone(found));
    },
    createNamespacedSecret: ({ body }: { body: V1Secret }): Promise<V1Secret> => {
      const stored = structuredClone(body);
      stored.metadata ??= {};
      stored.metadata.resourceVersion = '1';
      secrets.set(stored.metadata.name ?? '', stored);
      return Promise.resolve(body);
    },
    replaceNamespacedSecret: ({ name, body }: { name: string; body: V1Secret }): Promise<V1Secret> => {
      const stored = structuredClone(body);
      stored.metadata ??= {};
      stored.metadata.resourceVersion = String(Number(body.metadata?.resourceVersion ?? '0') + 1);
      secrets.set(name, stored);
      return Promise.resolve(body);
    },
  };
  // The three calls ensureServingCerts makes; the rest of the client is never reached.
  return { core: api as unknown as CoreV1Api, secrets };
}

describe('the operator-managed serving certificate', () => {
  it('is created with its own CA, named for its purpose, and names the identity', async () => {
    const { core, secrets } = secretsApi();
    const certs = await ensureServingCerts(core, 'portcullis-system', 'portcullis-tokens-tls', SERVICE, new Date(), TOKENS);
    expect(new X509Certificate(certs.ca.cert).subject).toBe('CN=portcullis-tokens-ca');
    expect(new X509Certificate(certs.serving.cert).verify(new X509Certificate(certs.ca.cert).publicKey)).toBe(true);
    expect(namesIdentity(certs.serving.cert, SERVICE)).toBe(true);
    expect(secrets.get('portcullis-tokens-tls')?.metadata?.labels?.['app.kubernetes.io/component']).toBe('tokens');
  });

  it('is read back unchanged while it is fresh and names the identity', async () => {
    const { core } = secretsApi();
    const first = await ensureServingCerts(core, 'ns', 's', SERVICE, new Date(), TOKENS);
    expect(await ensureServingCerts(core, 'ns', 's', SERVICE, new Date(), TOKENS)).toEqual(first);
  });

  it.each([
    ['when it no longer names the identity', { dnsNames: ['localhost'], ips: ['127.0.0.1'] }, new Date()],
    ['when it is close to expiry', SERVICE, new Date(Date.now() + 70 * 86_400_000)],
  ])('is renewed under the same CA %s, so sidecars given the CA keep trusting it', async (_name, identity, now) => {
    const { core } = secretsApi();
    const first = await ensureServingCerts(core, 'ns', 's', SERVICE, new Date(), TOKENS);
    const renewed = await ensureServingCerts(core, 'ns', 's', identity, now, TOKENS);
    expect(renewed.ca).toEqual(first.ca);
    expect(renewed.serving.cert).not.toBe(first.serving.cert);
    expect(namesIdentity(renewed.serving.cert, identity)).toBe(true);
  });
});

describe('whether a certificate names an identity', () => {
  it.each([
    ['every DNS name and IP it carries', { dnsNames: ['localhost'], ips: ['127.0.0.1'] }, true],
    ['a DNS name it does not carry', { dnsNames: ['portcullis-tokens.other.svc'], ips: [] }, false],
    ['an IP it does not carry', { dnsNames: [], ips: ['10.0.0.1'] }, false],
    ['a name only its common name holds', { dnsNames: ['common.example'], ips: [] }, false],
  ])('answers for %s', async (_name, identity, expected) => {
    const ca = await createCertificateAuthority('ca');
    const serving = await ca.issue({ commonName: 'common.example', dnsNames: ['localhost'], ips: ['127.0.0.1'], usage: 'server' });
    expect(namesIdentity(serving.cert, identity)).toBe(expected);
  });
});

describe("cert-manager's mounted Secret", () => {
  it('gives the certificate, its key and the CA clients are to trust', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'portcullis-certs-'));
    const tls = await ephemeralServingTls(SERVICE, TOKENS);
    await Promise.all([writeFile(join(dir, 'tls.crt'), tls.cert), writeFile(join(dir, 'tls.key'), tls.key), writeFile(join(dir, 'ca.crt'), tls.ca)]);
    expect(await mountedServingTls(dir)).toEqual(tls);
  });

  it.each([
    ['no ca.crt', { 'tls.crt': 'c', 'tls.key': 'k' }, /ca\.crt cannot be read \(ENOENT\)/],
    ['an empty ca.crt', { 'tls.crt': 'c', 'tls.key': 'k', 'ca.crt': '' }, /ca\.crt is empty: the Certificate's issuer must be a CA issuer/],
  ])('is refused with %s', async (_name, files, message) => {
    const dir = await mkdtemp(join(tmpdir(), 'portcullis-certs-'));
    await Promise.all(Object.entries(files).map(([file, text]) => writeFile(join(dir, file), text)));
    await expect(mountedServingTls(dir)).rejects.toThrow(message);
  });
});
