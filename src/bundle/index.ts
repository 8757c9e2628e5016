// Tenant bundles: OPA's bundle layout, Ed25519 signatures, revisions, and the ConfigMap form.
// Directory and tarball I/O live in ./files.ts, apart, as they touch the file system.
export {
  buildBundle,
  bundleContentDigest,
  CONTENT_FILES,
  DATA_FILE,
  MANIFEST_FILE,
  signBundle,
  SIGNATURES_FILE,
  verifyBundle,
  WASM_FILE,
  WASM_MODULE_PATH,
} from './bundle.ts';
export type { Bundle, BundleManifest, BundleTrust, SignaturePayload, SignedBundle, SignedFile, SigningKey } from './bundle.ts';
export { CONFIGMAP_MAX_BYTES, configMapSize, fromConfigMapData, toConfigMapData } from './configmap.ts';
export type { ConfigMapData } from './configmap.ts';
export * from './errors.ts';
export { canonicalJson } from './json.ts';
export {
  BUNDLE_SIGNING_ALGORITHM,
  exportSigningKey,
  fromJwks,
  generateSigningKey,
  importSigningKey,
  keyIdOf,
  toJwks,
} from './keys.ts';
export type { BundleJwks, BundleKey, SigningKeyPair, StoredSigningKey } from './keys.ts';
export { compareRevisions, formatRevision, nextRevision, parseRevision, REVISION_DIGEST_LENGTH } from './revision.ts';
export type { ParsedRevision } from './revision.ts';
