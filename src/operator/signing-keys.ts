// The operator's bundle signing keys, kept in one Secret that every replica
// loads. The first replica to start generates the first key; a create race is
// settled by the API server (409) and the loser reads the winner's key.
//
// Rotation (see README): `portcullis operator --rotate-signing-key`, or adding
// a key to the Secret by hand, appends a new key and makes it active. The
// operator publishes every key of the Secret in the trust ConfigMap of its own
// namespace before it signs with a new one; older keys stay in both, so bundles
// they signed keep verifying until replaced, and are dropped by hand once every
// tenant carries a bundle signed with the new key. A key dropped from the
// Secret leaves the trust, and sidecars unload the bundles it signed.

import type { CoreV1Api, V1Secret } from '@kubernetes/client-node';
import type { BundleKey, SigningKey, StoredSigningKey } from '../bundle/index.ts';
import { exportSigningKey, generateSigningKey, importSigningKey } from '../bundle/index.ts';

export const SIGNING_SECRET_KEY = 'signing-keys.json';

/** The Secret's JSON: every key, the active one named. */
export interface StoredKeyring {
  active: string;
  keys: (StoredSigningKey & { createdAt: string })[];
}

export interface Keyring {
  active: SigningKey;
  publicKeys: Map<string, BundleKey>;
  /** The Secret's resourceVersion the keyring was read from. */
  resourceVersion: string;
}

function apiCode(error: unknown): number | undefined {
  return (error as { code?: number } | null)?.code;
}

export function parseKeyring(secret: V1Secret, where: string): StoredKeyring {
  const encoded = secret.data?.[SIGNING_SECRET_KEY];
  if (encoded === undefined) throw new Error(`${where} has no ${SIGNING_SECRET_KEY}`);
  let parsed: unknown;
  try {
    parsed = JSON.parse(Buffer.from(encoded, 'base64').toString('utf8'));
  } catch (error) {
    throw new Error(`${where} ${SIGNING_SECRET_KEY} is not JSON: ${String(error)}`, { cause: error });
  }
  const ring = parsed as Partial<StoredKeyring>;
  if (typeof ring.active !== 'string' || !Array.isArray(ring.keys) || !ring.keys.some((k) => k.keyId === ring.active)) {
    throw new Error(`${where} ${SIGNING_SECRET_KEY} must hold {active, keys[]} with the active key among the keys`);
  }
  return ring as StoredKeyring;
}

export async function loadKeyring(stored: StoredKeyring, resourceVersion = ''): Promise<Keyring> {
  const publicKeys = new Map<string, BundleKey>();
  let active: SigningKey | undefined;
  for (const key of stored.keys) {
    const pair = await importSigningKey(key);
    publicKeys.set(pair.keyId, pair.publicKey);
    if (pair.keyId === stored.active) active = { privateKey: pair.privateKey, keyId: pair.keyId };
  }
  if (!active) throw new Error(`the active signing key ${stored.active} is not in the keyring`);
  return { active, publicKeys, resourceVersion };
}

async function newStoredKey(now: Date): Promise<StoredKeyring['keys'][number]> {
  return { ...(await exportSigningKey(await generateSigningKey())), createdAt: now.toISOString() };
}

function secretBody(namespace: string, name: string, ring: StoredKeyring, resourceVersion?: string): V1Secret {
  return {
    metadata: {
      name,
      namespace,
      ...(resourceVersion ? { resourceVersion } : {}),
      labels: { 'app.kubernetes.io/name': 'portcullis', 'app.kubernetes.io/component': 'bundle-signing' },
    },
    type: 'Opaque',
    data: { [SIGNING_SECRET_KEY]: Buffer.from(JSON.stringify(ring, null, 2)).toString('base64') },
  };
}

/** Reads the keyring, creating it with one new key when the Secret does not exist. */
export async function ensureKeyring(core: CoreV1Api, namespace: string, name: string): Promise<Keyring> {
  try {
    return await readKeyring(core, namespace, name);
  } catch (error) {
    if (apiCode(error) !== 404) throw error;
  }
  const first = await newStoredKey(new Date());
  try {
    await core.createNamespacedSecret({ namespace, body: secretBody(namespace, name, { active: first.keyId, keys: [first] }) });
  } catch (error) {
    if (apiCode(error) !== 409) throw error;
  }
  return readKeyring(core, namespace, name);
}

/** Reads the keyring; returns `known` itself when the Secret has not changed since. */
export async function readKeyring(core: CoreV1Api, namespace: string, name: string, known?: Keyring): Promise<Keyring> {
  const secret = await core.readNamespacedSecret({ name, namespace });
  const resourceVersion = secret.metadata?.resourceVersion ?? '';
  if (known?.resourceVersion === resourceVersion) return known;
  return loadKeyring(parseKeyring(secret, `Secret ${namespace}/${name}`), resourceVersion);
}

/** Adds a new key and makes it active, keeping the old ones for verification. */
export async function rotateKeyring(core: CoreV1Api, namespace: string, name: string): Promise<string> {
  const secret = await core.readNamespacedSecret({ name, namespace });
  const ring = parseKeyring(secret, `Secret ${namespace}/${name}`);
  const next = await newStoredKey(new Date());
  const rotated: StoredKeyring = { active: next.keyId, keys: [...ring.keys, next] };
  // The resourceVersion makes a concurrent rotation fail instead of losing a key.
  await core.replaceNamespacedSecret({ name, namespace, body: secretBody(namespace, name, rotated, secret.metadata?.resourceVersion) });
  return next.keyId;
}
