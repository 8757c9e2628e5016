import { createPublicKey, generateKeyPairSync } from 'node:crypto';
import { calculateJwkThumbprint } from 'jose';
import { describe, expect, it } from 'vitest';
import { AuditKeyError, generateAuditKey, jwkThumbprint, parsePublicKeys, parseSigningKey, publicJwkOf, signerOf, verifyCheckpointSignature } from './keys.ts';

describe('audit keys', () => {
  const generated = generateAuditKey();

  it('names a key by its RFC 7638 thumbprint, as jose computes it', async () => {
    const jwk = publicJwkOf(createPublicKey(generated.publicKeyPem));
    expect(jwkThumbprint(jwk)).toBe(await calculateJwkThumbprint(jwk));
    expect(generated.kid).toBe(jwkThumbprint(jwk));
  });

  it('reads the signing key from PKCS #8 PEM or a private JWK, and signs what the public key verifies', () => {
    const fromPem = parseSigningKey(generated.privateKeyPem, 'audit.pem');
    const fromJwk = parseSigningKey(JSON.stringify(fromPem.export({ format: 'jwk' })), 'audit.jwk');
    const signer = signerOf(fromJwk, false);
    const message = new TextEncoder().encode('checkpoint');
    const sig = Buffer.from(signer.sign(message)).toString('base64url');
    const [kid, publicKey] = [...parsePublicKeys(generated.publicKeyPem, 'audit.pub.pem')][0] ?? [];
    expect(kid).toBe(signer.kid);
    expect(publicKey !== undefined && verifyCheckpointSignature(publicKey, message, sig)).toBe(true);
  });

  it('refuses a key that is not Ed25519, naming the file', () => {
    const rsa = generateKeyPairSync('rsa', { modulusLength: 1024 }).privateKey.export({ format: 'pem', type: 'pkcs8' }).toString();
    expect(() => parseSigningKey(rsa, 'rsa.pem')).toThrow(new AuditKeyError('rsa.pem: the key is rsa, not Ed25519'));
  });

  it('refuses a public key or a public JWK as the signing key', () => {
    expect(() => parseSigningKey(generated.publicKeyPem, 'pub.pem')).toThrow(/pub\.pem: not a PEM private key/);
    expect(() => parseSigningKey(JSON.stringify(publicJwkOf(createPublicKey(generated.publicKeyPem))), 'pub.jwk')).toThrow('pub.jwk: the JWK holds no private key (d)');
  });

  it('pins public keys from a JWK set, checking each kid', () => {
    const other = generateAuditKey();
    const jwks = { keys: [generated, other].map((k) => ({ ...publicJwkOf(createPublicKey(k.publicKeyPem)), kid: k.kid })) };
    expect([...parsePublicKeys(JSON.stringify(jwks), 'jwks.json').keys()]).toEqual([generated.kid, other.kid]);
    const lying = { keys: [{ ...jwks.keys[0], kid: other.kid }] };
    expect(() => parsePublicKeys(JSON.stringify(lying), 'jwks.json')).toThrow(/kid ".*" is not the key's thumbprint/);
  });

  it('refuses to pin a private key: the verifier needs only the public one', () => {
    expect(() => parsePublicKeys(generated.privateKeyPem, 'audit.pem')).toThrow(/audit\.pem: a private key/);
    const privateJwk = parseSigningKey(generated.privateKeyPem, 'audit.pem').export({ format: 'jwk' });
    expect(() => parsePublicKeys(JSON.stringify(privateJwk), 'audit.jwk')).toThrow(/holds a private key/);
  });

  it('says so when a key file is neither PEM nor JSON', () => {
    expect(() => parsePublicKeys('{ not json', 'key.json')).toThrow(/key\.json: not a PEM key and not valid JSON/);
  });
});
