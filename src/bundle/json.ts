// Canonical JSON: the one byte form of a JSON value that the bundle writes and signs.
import { BundleDataInvalidError } from './errors.ts';

/** Orders strings by Unicode code point, the order of their UTF-8 bytes (Go's sort.Strings). */
export function compareCodePoints(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));
}

function canonicalString(text: string): string {
  // Go's encoder (which OPA re-encodes with before hashing) escapes these two; JSON.stringify does not.
  return JSON.stringify(text).replace(/\u2028/gu, '\\u2028').replace(/\u2029/gu, '\\u2029');
}

/**
 * Compact JSON with object keys sorted by code point and no trailing newline: the form OPA
 * re-encodes `.manifest` and `data.json` into before hashing them, so the SHA-256 of these bytes
 * is the digest OPA computes too (for strings that are well-formed Unicode).
 * Throws BundleDataInvalidError, naming the path, for anything that is not a JSON value:
 * undefined, functions, symbols, bigints, non-finite numbers, and objects that are not plain.
 */
export function canonicalJson(value: unknown, path = '$'): string {
  switch (typeof value) {
    case 'string':
      return canonicalString(value);
    case 'boolean':
      return value ? 'true' : 'false';
    case 'number':
      if (!Number.isFinite(value)) {
        throw new BundleDataInvalidError(`${path}: ${String(value)} is not a JSON number`);
      }
      return JSON.stringify(value);
    case 'object':
      return canonicalContainer(value, path);
    default:
      throw new BundleDataInvalidError(`${path}: a ${typeof value} is not a JSON value`);
  }
}

function canonicalContainer(value: object | null, path: string): string {
  if (value === null) {
    return 'null';
  }
  if (Array.isArray(value)) {
    return `[${value.map((item: unknown, index) => canonicalJson(item, `${path}[${index}]`)).join(',')}]`;
  }
  const prototype: unknown = Object.getPrototypeOf(value);
  if (prototype !== Object.prototype && prototype !== null) {
    throw new BundleDataInvalidError(`${path}: a ${value.constructor.name} is not a JSON object`);
  }
  const members = Object.keys(value)
    .sort(compareCodePoints)
    .map((key) => `${canonicalString(key)}:${canonicalJson((value as Record<string, unknown>)[key], `${path}.${key}`)}`);
  return `{${members.join(',')}}`;
}

export function canonicalJsonBytes(value: unknown): Uint8Array {
  return new TextEncoder().encode(canonicalJson(value));
}
