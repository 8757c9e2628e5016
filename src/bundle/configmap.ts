// A signed bundle as the data of the `portcullis-bundle` ConfigMap. Pure: no Kubernetes client.
import { BundleFileNameInvalidError, BundleTooLargeError } from './errors.ts';
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

/**
 * Splits a signed bundle into ConfigMap `data` (text files) and `binaryData` (base64), keys sorted.
 * Refuses with BundleTooLargeError, naming the tenant and every file's size, when keys plus values
 * (binary values counted as base64) exceed 1 MiB.
 */
export function toConfigMapData(signed: SignedBundle): ConfigMapData {
  const data: Record<string, string> = {};
  const binaryData: Record<string, string> = {};
  let total = 0;
  const sizes: string[] = [];
  for (const name of [...signed.files.keys()].sort()) {
    checkKey(name);
    const bytes = signed.files.get(name) ?? new Uint8Array();
    const text = name.endsWith('.wasm') ? undefined : asText(bytes);
    const size = text === undefined ? Buffer.from(bytes).toString('base64').length : bytes.byteLength;
    if (text === undefined) {
      binaryData[name] = Buffer.from(bytes).toString('base64');
    } else {
      data[name] = text;
    }
    total += name.length + size;
    sizes.push(`${name} ${size}`);
  }
  if (total > CONFIGMAP_MAX_BYTES) {
    throw new BundleTooLargeError(
      `the bundle of tenant ${tenantOf(signed)} takes ${total} bytes in a ConfigMap, over the limit of ${CONFIGMAP_MAX_BYTES} (${sizes.join(', ')})`,
    );
  }
  return { data, binaryData };
}

/** Reads a signed bundle back from ConfigMap data; either map may be absent, as the API omits empty ones. */
export function fromConfigMapData(configMap: Partial<ConfigMapData>): SignedBundle {
  const files = new Map<string, Uint8Array>();
  for (const [name, text] of Object.entries(configMap.data ?? {})) {
    checkKey(name);
    files.set(name, new TextEncoder().encode(text));
  }
  for (const [name, base64] of Object.entries(configMap.binaryData ?? {})) {
    checkKey(name);
    if (files.has(name)) {
      throw new BundleFileNameInvalidError(`${name} is in both data and binaryData`);
    }
    files.set(name, new Uint8Array(Buffer.from(base64, 'base64')));
  }
  return { files };
}
