// The Ed25519 keys of audit checkpoints: the writer's private key (a PEM or
// JWK file, or an ephemeral key made at start), and the public keys a verifier
// pins. Keys are named by their RFC 7638 thumbprint, as bundle keys are.
import type { JsonWebKey, KeyObject } from 'node:crypto';
import { createHash, createPrivateKey, createPublicKey, generateKeyPairSync, sign, verify } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import type { ChainSigner } from './chain.ts';
import type { PublicKeyJwk } from './entry.ts';

/** A key file that cannot serve: the message names the file and what is wrong. */
export class AuditKeyError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = 'AuditKeyError';
  }
}

/** The RFC 7638 thumbprint (SHA-256, base64url) of an Ed25519 public key: its required members, sorted, no spaces. */
export function jwkThumbprint(jwk: PublicKeyJwk): string {
  return createHash('sha256').update(JSON.stringify({ crv: jwk.crv, kty: jwk.kty, x: jwk.x })).digest('base64url');
}

function describeType(key: KeyObject): string {
  return key.asymmetricKeyType ?? key.type;
}

/** The public JWK of an Ed25519 key (private or public). */
export function publicJwkOf(key: KeyObject): PublicKeyJwk {
  const { kty, crv, x } = (key.type === 'private' ? createPublicKey(key) : key).export({ format: 'jwk' });
  if (kty !== 'OKP' || crv !== 'Ed25519' || x === undefined) throw new AuditKeyError(`the key is ${describeType(key)}, not Ed25519`);
  return { kty, crv, x };
}

export function signerOf(privateKey: KeyObject, ephemeral: boolean): ChainSigner {
  const jwk = publicJwkOf(privateKey);
  return { kid: jwkThumbprint(jwk), jwk, ephemeral, sign: (message) => sign(null, message, privateKey) };
}

/** A key made now and kept in memory only: its chain can be checked, but proves nothing about who wrote it. */
export function ephemeralSigner(): ChainSigner {
  return signerOf(generateKeyPairSync('ed25519').privateKey, true);
}

function isJson(text: string): boolean {
  return text.trimStart().startsWith('{');
}

function parseJson(text: string, source: string): unknown {
  try {
    return JSON.parse(text);
  } catch (error) {
    throw new AuditKeyError(`${source}: not a PEM key and not valid JSON: ${error instanceof Error ? error.message : String(error)}`);
  }
}

function ed25519(key: KeyObject, source: string): KeyObject {
  if (key.asymmetricKeyType !== 'ed25519') throw new AuditKeyError(`${source}: the key is ${describeType(key)}, not Ed25519`);
  return key;
}

function importOr<T>(source: string, what: string, load: () => T): T {
  try {
    return load();
  } catch (error) {
    throw new AuditKeyError(`${source}: not ${what}: ${error instanceof Error ? error.message : String(error)}`, { cause: error });
  }
}

/** The private key of a PKCS #8 PEM or a JWK with `d`. */
export function parseSigningKey(text: string, source: string): KeyObject {
  if (isJson(text)) {
    const jwk = parseJson(text, source) as JsonWebKey;
    if (typeof jwk.d !== 'string') throw new AuditKeyError(`${source}: the JWK holds no private key (d)`);
    return ed25519(importOr(source, 'an Ed25519 private JWK', () => createPrivateKey({ key: jwk, format: 'jwk' })), source);
  }
  return ed25519(importOr(source, 'a PEM private key', () => createPrivateKey(text)), source);
}

function publicFromJwk(jwk: JsonWebKey, source: string): KeyObject {
  if (jwk.d !== undefined) throw new AuditKeyError(`${source}: the JWK holds a private key; give the verifier the public key only`);
  return ed25519(importOr(source, 'an Ed25519 public JWK', () => createPublicKey({ key: { kty: jwk.kty, crv: jwk.crv, x: jwk.x }, format: 'jwk' })), source);
}

/**
 * The public keys of an SPKI PEM, a JWK or a JWK set, by thumbprint. A `kid`
 * that is not the key's thumbprint is refused, so a key id names one key
 * wherever it is read.
 */
export function parsePublicKeys(text: string, source: string): Map<string, KeyObject> {
  let keys: KeyObject[];
  if (isJson(text)) {
    const parsed = parseJson(text, source) as { keys?: unknown } & JsonWebKey;
    const jwks = Array.isArray(parsed.keys) ? (parsed.keys as JsonWebKey[]) : [parsed];
    keys = jwks.map((jwk, i) => {
      const key = publicFromJwk(jwk, jwks.length > 1 ? `${source} key ${i}` : source);
      const kid = (jwk as { kid?: unknown }).kid;
      const thumbprint = jwkThumbprint(publicJwkOf(key));
      if (kid !== undefined && kid !== thumbprint) throw new AuditKeyError(`${source}: kid ${JSON.stringify(kid)} is not the key's thumbprint ${thumbprint}`);
      return key;
    });
  } else {
    if (text.includes('PRIVATE KEY')) throw new AuditKeyError(`${source}: a private key; give the verifier the public key (openssl pkey -in KEY -pubout)`);
    keys = [ed25519(importOr(source, 'a PEM public key', () => createPublicKey(text)), source)];
  }
  if (keys.length === 0) throw new AuditKeyError(`${source}: the key set is empty`);
  return new Map(keys.map((key) => [jwkThumbprint(publicJwkOf(key)), key]));
}

export function verifyCheckpointSignature(publicKey: KeyObject, message: Uint8Array, sig: string): boolean {
  try {
    return verify(null, message, publicKey, Buffer.from(sig, 'base64url'));
  } catch {
    return false;
  }
}

export function publicKeyOfJwk(jwk: PublicKeyJwk): KeyObject | undefined {
  try {
    return createPublicKey({ key: { kty: jwk.kty, crv: jwk.crv, x: jwk.x }, format: 'jwk' });
  } catch {
    return undefined;
  }
}

async function readKeyFile(path: string): Promise<string> {
  try {
    return await readFile(path, 'utf8');
  } catch (error) {
    throw new AuditKeyError(`${path}: cannot read the key file: ${error instanceof Error ? error.message : String(error)}`, { cause: error });
  }
}

export async function loadSigner(path: string): Promise<ChainSigner> {
  return signerOf(parseSigningKey(await readKeyFile(path), path), false);
}

export async function loadPublicKeys(path: string): Promise<Map<string, KeyObject>> {
  return parsePublicKeys(await readKeyFile(path), path);
}

/** A new key pair as PEM (PKCS #8 private, SPKI public), named by its thumbprint. */
export function generateAuditKey(): { privateKeyPem: string; publicKeyPem: string; kid: string } {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  return {
    privateKeyPem: privateKey.export({ format: 'pem', type: 'pkcs8' }).toString(),
    publicKeyPem: publicKey.export({ format: 'pem', type: 'spki' }).toString(),
    kid: jwkThumbprint(publicJwkOf(publicKey)),
  };
}
