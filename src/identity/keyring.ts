// The token signing keys, kept in one Secret (default `portcullis-token-keys`) that every replica
// loads, apart from the bundle signing keys so each can rotate on its own schedule.
//
// Rotation never breaks a valid token:
// - A new key is added with `activatesAt` = now + the publish delay. From the moment it is written
//   every replica serves it in JWKS, but signs with it only once `activatesAt` has passed, so
//   verifiers that cache JWKS (for at most the delay) already know it when its first token arrives.
// - The key it replaces keeps verifying: it leaves the Secret only at a later rotation, once its
//   successor has been signing for longer than the longest token lifetime plus the clock skew, so
//   every token it signed has expired.

import type { CoreV1Api, V1Secret } from '@kubernetes/client-node';
import type { BundleJwks, BundleKey, SigningKey, StoredSigningKey } from '../bundle/index.ts';
import { exportSigningKey, generateSigningKey, importSigningKey, toJwks } from '../bundle/index.ts';
import { DEFAULT_CLOCK_SKEW_S, MAX_TOKEN_TTL_MS } from './tokens.ts';

export const TOKEN_KEYS_SECRET = 'portcullis-token-keys';
export const TOKEN_KEYS_SECRET_KEY = 'token-keys.json';
/** How long a new key is published before it signs: more than replicas' refresh and verifiers' JWKS cache. */
export const DEFAULT_PUBLISH_DELAY_MS = 2 * 60_000;
/** How long verifiers may cache the JWKS (its Cache-Control max-age); below the publish delay. */
export const JWKS_MAX_AGE_S = 60;
/** How long a retired key stays after its successor began signing. */
export const RETIRED_KEY_GRACE_MS = MAX_TOKEN_TTL_MS + DEFAULT_CLOCK_SKEW_S * 1000;

export interface StoredTokenKey extends StoredSigningKey {
  createdAt: string;
  /** When replicas start signing with it (RFC 3339). */
  activatesAt: string;
}

/** The Secret's JSON. */
export interface StoredTokenKeyring {
  keys: StoredTokenKey[];
}

interface LoadedKey {
  signing: SigningKey;
  publicKey: BundleKey;
  activatesAt: number;
}

export class TokenKeyring {
  readonly resourceVersion: string;
  readonly stored: StoredTokenKeyring;
  private readonly keys: LoadedKey[];

  constructor(stored: StoredTokenKeyring, keys: LoadedKey[], resourceVersion: string) {
    this.stored = stored;
    this.keys = keys;
    this.resourceVersion = resourceVersion;
  }

  /** Every key of the Secret, pending and retired ones included: what verifiers trust. */
  get publicKeys(): Map<string, BundleKey> {
    return new Map(this.keys.map((k) => [k.signing.keyId, k.publicKey]));
  }

  async jwks(): Promise<BundleJwks> {
    return toJwks(this.publicKeys);
  }

  /** The key to sign with at `now`. */
  signingKey(now: Date): SigningKey {
    const chosen = signingKeyIdAt(this.stored, now);
    const key = this.keys.find((k) => k.signing.keyId === chosen);
    if (!key) throw new Error(`the token keyring has no key ${chosen}`);
    return key.signing;
  }
}

/**
 * The key id to sign with: the latest key whose activation has passed. When none has (a replica's
 * clock behind the one that created the Secret), the earliest, which is as published as any.
 */
export function signingKeyIdAt(ring: StoredTokenKeyring, now: Date): string {
  const byActivation = [...ring.keys].sort((a, b) => Date.parse(a.activatesAt) - Date.parse(b.activatesAt));
  const active = byActivation.filter((k) => Date.parse(k.activatesAt) <= now.getTime()).at(-1) ?? byActivation[0];
  if (!active) throw new Error('the token keyring holds no key');
  return active.keyId;
}

/**
 * The keyring after adding `next`, which signs from `now + publishDelayMs`, and dropping every key
 * whose successor has been signing for longer than the grace (none of its tokens is still valid).
 */
export function rotatedKeyring(ring: StoredTokenKeyring, next: Omit<StoredTokenKey, 'activatesAt'>, now: Date, publishDelayMs: number, graceMs = RETIRED_KEY_GRACE_MS): StoredTokenKeyring {
  const byActivation = [...ring.keys].sort((a, b) => Date.parse(a.activatesAt) - Date.parse(b.activatesAt));
  const kept = byActivation.filter((key, index) => {
    const successor = byActivation[index + 1];
    return successor === undefined || Date.parse(successor.activatesAt) + graceMs > now.getTime();
  });
  return { keys: [...kept, { ...next, activatesAt: new Date(now.getTime() + publishDelayMs).toISOString() }] };
}

export function parseTokenKeyring(secret: V1Secret, where: string): StoredTokenKeyring {
  const encoded = secret.data?.[TOKEN_KEYS_SECRET_KEY];
  if (encoded === undefined) throw new Error(`${where} has no ${TOKEN_KEYS_SECRET_KEY}`);
  let parsed: unknown;
  try {
    parsed = JSON.parse(Buffer.from(encoded, 'base64').toString('utf8'));
  } catch (error) {
    throw new Error(`${where} ${TOKEN_KEYS_SECRET_KEY} is not JSON: ${String(error)}`, { cause: error });
  }
  const keys = (parsed as Partial<StoredTokenKeyring> | null)?.keys;
  if (!Array.isArray(keys) || keys.length === 0 || keys.some((k) => Number.isNaN(Date.parse(k.activatesAt)))) {
    throw new Error(`${where} ${TOKEN_KEYS_SECRET_KEY} must hold {keys: [...]} with at least one key, each with an activatesAt time`);
  }
  return { keys };
}

export async function loadTokenKeyring(stored: StoredTokenKeyring, resourceVersion = ''): Promise<TokenKeyring> {
  const keys = await Promise.all(
    stored.keys.map(async (key): Promise<LoadedKey> => {
      const pair = await importSigningKey(key);
      return { signing: { privateKey: pair.privateKey, keyId: pair.keyId }, publicKey: pair.publicKey, activatesAt: Date.parse(key.activatesAt) };
    }),
  );
  return new TokenKeyring(stored, keys, resourceVersion);
}

export async function newTokenKey(now: Date): Promise<Omit<StoredTokenKey, 'activatesAt'>> {
  return { ...(await exportSigningKey(await generateSigningKey())), createdAt: now.toISOString() };
}

function secretBody(namespace: string, name: string, ring: StoredTokenKeyring, resourceVersion?: string): V1Secret {
  return {
    metadata: {
      name,
      namespace,
      ...(resourceVersion ? { resourceVersion } : {}),
      labels: { 'app.kubernetes.io/name': 'portcullis', 'app.kubernetes.io/component': 'token-signing' },
    },
    type: 'Opaque',
    data: { [TOKEN_KEYS_SECRET_KEY]: Buffer.from(JSON.stringify(ring, null, 2)).toString('base64') },
  };
}

function apiCode(error: unknown): number | undefined {
  return (error as { code?: number } | null)?.code;
}

/** Reads the keyring; returns `known` itself when the Secret has not changed since. */
export async function readTokenKeyring(core: CoreV1Api, namespace: string, name: string, known?: TokenKeyring): Promise<TokenKeyring> {
  const secret = await core.readNamespacedSecret({ name, namespace });
  const resourceVersion = secret.metadata?.resourceVersion ?? '';
  if (known?.resourceVersion === resourceVersion) return known;
  return loadTokenKeyring(parseTokenKeyring(secret, `Secret ${namespace}/${name}`), resourceVersion);
}

/**
 * Reads the keyring, creating it when missing with one key that signs at once (no verifier can
 * hold an older JWKS to miss it). A create race is settled by the API server: the loser reads.
 */
export async function ensureTokenKeyring(core: CoreV1Api, namespace: string, name: string, now = new Date()): Promise<TokenKeyring> {
  try {
    return await readTokenKeyring(core, namespace, name);
  } catch (error) {
    if (apiCode(error) !== 404) throw error;
  }
  const first = { ...(await newTokenKey(now)), activatesAt: now.toISOString() };
  try {
    await core.createNamespacedSecret({ namespace, body: secretBody(namespace, name, { keys: [first] }) });
  } catch (error) {
    if (apiCode(error) !== 409) throw error;
  }
  return readTokenKeyring(core, namespace, name);
}

export interface RotateOptions {
  now?: Date;
  publishDelayMs?: number;
}

/** Adds a key that signs after the publish delay, drops keys past their grace; returns the new key id. */
export async function rotateTokenKeyring(core: CoreV1Api, namespace: string, name: string, options: RotateOptions = {}): Promise<string> {
  const now = options.now ?? new Date();
  const secret = await core.readNamespacedSecret({ name, namespace });
  const next = await newTokenKey(now);
  const rotated = rotatedKeyring(parseTokenKeyring(secret, `Secret ${namespace}/${name}`), next, now, options.publishDelayMs ?? DEFAULT_PUBLISH_DELAY_MS);
  // The resourceVersion makes a concurrent rotation fail instead of losing a key.
  await core.replaceNamespacedSecret({ name, namespace, body: secretBody(namespace, name, rotated, secret.metadata?.resourceVersion) });
  return next.keyId;
}
