import { calculateJwkThumbprint, exportJWK, generateKeyPair } from 'jose';
import { describe, expect, it } from 'vitest';
import { exportSigningKey, fromJwks, generateSigningKey, importSigningKey, keyIdOf, toJwks } from './index.ts';

describe('signing keys', () => {
  it('names a key by its RFC 7638 thumbprint', async () => {
    const pair = await generateSigningKey();
    const { kty, crv, x } = await exportJWK(pair.publicKey);
    expect(pair.keyId).toBe(await calculateJwkThumbprint({ kty, crv, x }));
    expect(await keyIdOf(pair.privateKey)).toBe(pair.keyId);
  });

  it('round-trips through PEM', async () => {
    const pair = await generateSigningKey();
    const stored = await exportSigningKey(pair);
    expect(stored.privateKeyPem).toMatch(/^-----BEGIN PRIVATE KEY-----/u);
    expect(stored.publicKeyPem).toMatch(/^-----BEGIN PUBLIC KEY-----/u);
    const imported = await importSigningKey(stored);
    expect(imported.keyId).toBe(pair.keyId);
  });

  it('refuses a stored key whose id is not its thumbprint', async () => {
    const stored = await exportSigningKey(await generateSigningKey());
    await expect(importSigningKey({ ...stored, keyId: 'someone-else' })).rejects.toMatchObject({ code: 'bundle_key_invalid' });
  });

  it('refuses a stored private key and public key that are not a pair', async () => {
    const [first, second] = await Promise.all([generateSigningKey().then(exportSigningKey), generateSigningKey().then(exportSigningKey)]);
    await expect(importSigningKey({ ...first, publicKeyPem: second.publicKeyPem })).rejects.toMatchObject({ code: 'bundle_key_invalid' });
  });

  it('refuses PEM that is not an Ed25519 key', async () => {
    const stored = await exportSigningKey(await generateSigningKey());
    await expect(importSigningKey({ ...stored, privateKeyPem: 'not a key' })).rejects.toMatchObject({ code: 'bundle_key_invalid' });
  });

  it('round-trips public keys through a JWK set', async () => {
    const pairs = await Promise.all([generateSigningKey(), generateSigningKey()]);
    const jwks = await toJwks(new Map(pairs.map((pair) => [pair.keyId, pair.publicKey])));
    expect(jwks.keys.map((jwk) => [jwk.kid, jwk.alg, jwk.use, jwk.d])).toEqual(pairs.map((pair) => [pair.keyId, 'EdDSA', 'sig', undefined]));
    expect([...(await fromJwks(jwks)).keys()]).toEqual(pairs.map((pair) => pair.keyId));
  });

  it('refuses a JWK whose kid is not its thumbprint', async () => {
    const pair = await generateSigningKey();
    const jwks = await toJwks(new Map([['forged', pair.publicKey]]));
    await expect(fromJwks(jwks)).rejects.toMatchObject({ code: 'bundle_key_invalid' });
  });

  it('refuses private key material and keys of other types in a JWK set', async () => {
    const pair = await generateSigningKey();
    await expect(fromJwks({ keys: [await exportJWK(pair.privateKey)] })).rejects.toMatchObject({ code: 'bundle_key_invalid' });
    const ec = await generateKeyPair('ES256', { extractable: true });
    await expect(fromJwks({ keys: [await exportJWK(ec.publicKey)] })).rejects.toMatchObject({ code: 'bundle_key_invalid' });
  });
});
