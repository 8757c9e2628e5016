// A signed bundle as the data of the `portcullis-bundle` ConfigMap. Pure: no Kubernetes client.
import { createHash } from 'node:crypto';
import { gunzipSync, gzipSync } from 'node:zlib';
import { BundleDataInvalidError, BundleFileNameInvalidError, BundleTooLargeError } from './errors.ts';
import { MANIFEST_FILE, type SignedBundle } from './bundle.ts';

/** What the API server accepts in one ConfigMap's data and binaryData together. */
export const CONFIGMAP_MAX_BYTES = 1024 * 1024;

/** Kubernetes' rule for ConfigMap keys (at most 253 characters). */
const CONFIGMAP_KEY = /^[-._a-zA-Z0-9]{1,253}$/u;

export interface ConfigMapData {
  /** Files that are UTF-8 text, as text. */
  data: Record<string, string>;
  /** Other files (the policy module), base64. */
  binaryData: Record<string, string>;
}

function checkKey(key: string): void {
  if (!CONFIGMAP_KEY.test(key) || key === '.' || key === '..') {
    throw new BundleFileNameInvalidError(`${JSON.stringify(key)} is not a valid ConfigMap key ([-._a-zA-Z0-9], at most 253 characters)`);
  }
}

/** The file's text when it is valid UTF-8 and reads back to the same bytes, else undefined. */
function asText(bytes: Uint8Array): string | undefined {
  try {
    return new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(bytes);
  } catch {
    return undefined;
  }
}

function tenantOf(signed: SignedBundle): string {
  const manifest = signed.files.get(MANIFEST_FILE);
  try {
    const parsed = JSON.parse(asText(manifest ?? new Uint8Array()) ?? '') as { metadata?: { tenant?: unknown } };
    return typeof parsed.metadata?.tenant === 'string' ? parsed.metadata.tenant : '(unknown tenant)';
  } catch {
    return '(unknown tenant)';
  }
}

/** Binary files travel gzip-compressed under NAME.gz: the policy module shrinks to about a third. */
const COMPRESSED_SUFFIX = '.gz';
/** A compressed file may not inflate past this: a bundle never needs more, a zip bomb does. */
const MAX_INFLATED_BYTES = 32 * 1024 * 1024;

/**
 * Splits a signed bundle into ConfigMap `data` (text files) and `binaryData` (binary files,
 * gzip-compressed, base64, under NAME.gz), keys sorted. The signature covers the files themselves,
 * so compression is only how they travel. Refuses with BundleTooLargeError, naming the tenant and
 * every file's size, when keys plus values (binary values counted as base64) exceed 1 MiB.
 */
export function toConfigMapData(signed: SignedBundle): ConfigMapData {
  const { data, binaryData, total, sizes } = encode(signed);
  if (total > CONFIGMAP_MAX_BYTES) {
    throw new BundleTooLargeError(
      `the bundle of tenant ${tenantOf(signed)} takes ${total} bytes in a ConfigMap, over the limit of ${CONFIGMAP_MAX_BYTES} (${sizes.join(', ')})`,
    );
  }
  return { data, binaryData };
}

/** The bytes a signed bundle takes as ConfigMap data (keys plus values, binary values as base64), bounded or not. */
export function configMapSize(signed: SignedBundle): number {
  return encode(signed).total;
}

function encode(signed: SignedBundle): ConfigMapData & { total: number; sizes: string[] } {
  const data: Record<string, string> = {};
  const binaryData: Record<string, string> = {};
  let total = 0;
  const sizes: string[] = [];
  for (const name of [...signed.files.keys()].sort()) {
    checkKey(name);
    const bytes = signed.files.get(name) ?? new Uint8Array();
    const text = name.endsWith('.wasm') ? undefined : asText(bytes);
    let key = name;
    let size: number;
    if (text === undefined) {
      key = `${name}${COMPRESSED_SUFFIX}`;
      checkKey(key);
      const encoded = gzipBase64(bytes);
      binaryData[key] = encoded;
      size = encoded.length;
    } else {
      data[name] = text;
      size = bytes.byteLength;
    }
    total += key.length + size;
    sizes.push(`${key} ${size}`);
  }
  return { data, binaryData, total, sizes };
}

// Every tenant's bundle carries the same policy module unless it has raw Rego:
// compress each distinct file once.
const compressed = new Map<string, string>();
const COMPRESSED_CACHE_LIMIT = 8;

function gzipBase64(bytes: Uint8Array): string {
  const key = createHash('sha256').update(bytes).digest('hex');
  let encoded = compressed.get(key);
  if (encoded === undefined) {
    // Level 9 and no timestamp: the same file always gives the same bytes.
    encoded = gzipSync(bytes, { level: 9 }).toString('base64');
    if (compressed.size >= COMPRESSED_CACHE_LIMIT) compressed.clear();
    compressed.set(key, encoded);
  }
  return encoded;
}

function inflate(key: string, bytes: Buffer): Buffer {
  try {
    return gunzipSync(bytes, { maxOutputLength: MAX_INFLATED_BYTES });
  } catch (error) {
    throw new BundleDataInvalidError(`${key} is not gzip data of at most ${MAX_INFLATED_BYTES} bytes: ${error instanceof Error ? error.message : String(error)}`);
  }
}

/** Reads a signed bundle back from ConfigMap data; either map may be absent, as the API omits empty ones. */
export function fromConfigMapData(configMap: Partial<ConfigMapData>): SignedBundle {
  const files = new Map<string, Uint8Array>();
  for (const [name, text] of Object.entries(configMap.data ?? {})) {
    checkKey(name);
    files.set(name, new TextEncoder().encode(text));
  }
  for (const [key, base64] of Object.entries(configMap.binaryData ?? {})) {
    checkKey(key);
    const compressed = key.endsWith(COMPRESSED_SUFFIX);
    const name = compressed ? key.slice(0, -COMPRESSED_SUFFIX.length) : key;
    if (files.has(name)) {
      throw new BundleFileNameInvalidError(`${name} is in both data and binaryData`);
    }
    const bytes = Buffer.from(base64, 'base64');
    files.set(name, new Uint8Array(compressed ? inflate(key, bytes) : bytes));
  }
  return { files };
}
