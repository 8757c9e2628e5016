// Ed25519 signing keys for bundles, and the forms they are stored in: PEM (PKCS #8 / SPKI) for
// the operator's private key in a Secret, JWK sets for the public keys sidecars trust.
import type { KeyObject } from 'node:crypto';
import {
  calculateJwkThumbprint,
  exportJWK,
  exportPKCS8,
  exportSPKI,
  generateKeyPair,
  importJWK,
  importPKCS8,
  importSPKI,
  type CryptoKey,
  type JWK,
} from 'jose';
import { BundleKeyInvalidError } from './errors.ts';

/** A key as Node's crypto or Web Crypto holds it. */
export type BundleKey = KeyObject | CryptoKey;

/** The only JWS algorithm bundles are signed with; verifiers accept no other. */
export const BUNDLE_SIGNING_ALGORITHM = 'EdDSA';

export interface SigningKeyPair {
  privateKey: BundleKey;
  publicKey: BundleKey;
  /** The RFC 7638 JWK thumbprint (SHA-256, base64url) of the public key. */
  keyId: string;
}

export interface StoredSigningKey {
  /** PKCS #8 PEM of the private key. */
  privateKeyPem: string;
  /** SPKI PEM of the public key. */
  publicKeyPem: string;
  keyId: string;
}

export interface BundleJwks {
  keys: JWK[];
}

export async function generateSigningKey(): Promise<SigningKeyPair> {
  const { privateKey, publicKey } = await generateKeyPair(BUNDLE_SIGNING_ALGORITHM, { crv: 'Ed25519', extractable: true });
  return { privateKey, publicKey, keyId: await keyIdOf(publicKey) };
}

/** The RFC 7638 thumbprint of a public (or private: its public part is used) Ed25519 key. */
export async function keyIdOf(key: BundleKey): Promise<string> {
  const { kty, crv, x } = await exportJWK(key);
  if (kty !== 'OKP' || crv !== 'Ed25519' || x === undefined) {
    throw new BundleKeyInvalidError(`the key is ${kty ?? 'unknown'}/${crv ?? 'unknown'}, not an Ed25519 key`);
  }
  return calculateJwkThumbprint({ kty, crv, x });
}

export async function exportSigningKey(pair: SigningKeyPair): Promise<StoredSigningKey> {
  return {
    privateKeyPem: await exportPKCS8(pair.privateKey),
    publicKeyPem: await exportSPKI(pair.publicKey),
    keyId: pair.keyId,
  };
}

/** Imports a stored key pair; refuses one whose key id is not its public key's thumbprint. */
export async function importSigningKey(stored: StoredSigningKey): Promise<SigningKeyPair> {
  const privateKey = await importOrExplain(() => importPKCS8(stored.privateKeyPem, BUNDLE_SIGNING_ALGORITHM, { extractable: true }));
  const publicKey = await importOrExplain(() => importSPKI(stored.publicKeyPem, BUNDLE_SIGNING_ALGORITHM, { extractable: true }));
  const [privateId, publicId] = await Promise.all([keyIdOf(privateKey), keyIdOf(publicKey)]);
  if (privateId !== publicId) {
    throw new BundleKeyInvalidError('the stored private and public keys are not a pair');
  }
  if (stored.keyId !== publicId) {
    throw new BundleKeyInvalidError(`the stored key id ${stored.keyId} is not the key's thumbprint ${publicId}`);
  }
  return { privateKey, publicKey, keyId: publicId };
}

/** The public keys as a JWK set (each with `kid`, `alg` and `use`), for a ConfigMap or JWKS endpoint. */
export async function toJwks(publicKeys: ReadonlyMap<string, BundleKey>): Promise<BundleJwks> {
  const keys: JWK[] = [];
  for (const [kid, key] of publicKeys) {
    const { kty, crv, x } = await exportJWK(key);
    keys.push({ kty, crv, x, kid, alg: BUNDLE_SIGNING_ALGORITHM, use: 'sig' });
  }
  return { keys };
}

/**
 * Imports the public keys of a JWK set as the `publicKeys` a verifier trusts. Refuses a key that is
 * not Ed25519, holds private material, or whose `kid` is not its thumbprint (so a key id names one
 * key, whichever set it is read from).
 */
export async function fromJwks(jwks: BundleJwks): Promise<Map<string, BundleKey>> {
  const publicKeys = new Map<string, BundleKey>();
  for (const jwk of jwks.keys) {
    if (jwk.kty !== 'OKP' || jwk.crv !== 'Ed25519' || jwk.x === undefined || jwk.d !== undefined) {
      throw new BundleKeyInvalidError(`key ${jwk.kid ?? '(no kid)'} is not an Ed25519 public key`);
    }
    const thumbprint = await calculateJwkThumbprint({ kty: jwk.kty, crv: jwk.crv, x: jwk.x });
    if (jwk.kid !== undefined && jwk.kid !== thumbprint) {
      throw new BundleKeyInvalidError(`key id ${jwk.kid} is not the key's thumbprint ${thumbprint}`);
    }
    const key = await importOrExplain(() => importJWK({ kty: jwk.kty, crv: jwk.crv, x: jwk.x }, BUNDLE_SIGNING_ALGORITHM));
    if (key instanceof Uint8Array) {
      throw new BundleKeyInvalidError(`key ${thumbprint} imported as a secret, not a public key`);
    }
    publicKeys.set(thumbprint, key);
  }
  return publicKeys;
}

async function importOrExplain<T>(load: () => Promise<T>): Promise<T> {
  try {
    return await load();
  } catch (error) {
    throw new BundleKeyInvalidError(`the key does not import as an Ed25519 key: ${error instanceof Error ? error.message : String(error)}`, {
      cause: error,
    });
  }
}
