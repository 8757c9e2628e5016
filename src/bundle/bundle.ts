// A tenant's bundle in OPA's layout, its Ed25519 signature, and the checks a sidecar runs before
// loading one.
import { CompactSign, compactVerify, decodeProtectedHeader } from 'jose';
import {
  BundleDataInvalidError,
  BundleDigestMismatchError,
  BundleFileMissingError,
  BundleFileNameInvalidError,
  BundleFileUnexpectedError,
  BundleKeyUnknownError,
  BundleManifestInvalidError,
  BundleRevisionConflictError,
  BundleRevisionRegressedError,
  BundleSignatureAlgorithmError,
  BundleSignatureInvalidError,
  BundleTenantMismatchError,
} from './errors.ts';
import { canonicalJson, canonicalJsonBytes, compareCodePoints } from './json.ts';
import { BUNDLE_SIGNING_ALGORITHM, type BundleKey } from './keys.ts';
import { parseRevision, sha256Hex } from './revision.ts';

export const MANIFEST_FILE = '.manifest';
export const WASM_FILE = 'policy.wasm';
export const DATA_FILE = 'data.json';
export const SIGNATURES_FILE = '.signatures.json';
/** How the manifest names the policy module (OPA's wasm manifest paths start with a slash). */
export const WASM_MODULE_PATH = `/${WASM_FILE}`;
/** The files a bundle holds besides its signature; every one is signed. */
export const CONTENT_FILES: readonly string[] = [MANIFEST_FILE, DATA_FILE, WASM_FILE];

/** A flat file name that is also a valid ConfigMap key. */
const FILE_NAME = /^[-._a-zA-Z0-9]+$/u;

export interface BundleManifest {
  /** `<sequence>-<digest>`; see revision.ts. */
  revision: string;
  roots: string[];
  metadata: { tenant: string; [key: string]: unknown };
  wasm?: { entrypoint: string; module: string }[];
}

export interface Bundle {
  manifest: BundleManifest;
  wasm: Uint8Array;
  /** A JSON value, written as data.json. */
  data: unknown;
}

/**
 * A signed bundle as files: flat names without a leading slash (`.manifest`, `policy.wasm`,
 * `data.json`, `.signatures.json`) to their exact bytes.
 */
export interface SignedBundle {
  files: Map<string, Uint8Array>;
}

/** One file as the signature lists it (OPA's format). */
export interface SignedFile {
  name: string;
  /** Lower-case hex SHA-256 of the file's bytes. */
  hash: string;
  algorithm: 'SHA-256';
}

/** The JWS payload of `.signatures.json`: OPA's fields plus the tenant and revision. */
export interface SignaturePayload {
  files: SignedFile[];
  keyid: string;
  tenant: string;
  revision: string;
}

export interface SigningKey {
  privateKey: BundleKey;
  keyId: string;
}

export interface BundleTrust {
  /** Trusted public keys by key id. */
  publicKeys: ReadonlyMap<string, BundleKey>;
  /** The only tenant whose bundles are accepted. */
  tenant: string;
  /** The revision already loaded: a bundle must be this very revision or a later one. */
  minRevision?: string;
  /**
   * Replaces the default order of revisions (by sequence, see revision.ts). With it, a revision is
   * accepted when `compareRevision(revision, minRevision) >= 0`.
   */
  compareRevision?: (a: string, b: string) => number;
}

function checkManifest(manifest: BundleManifest): void {
  parseRevision(manifest.revision);
  const tenant: unknown = manifest.metadata.tenant;
  if (typeof tenant !== 'string' || tenant === '') {
    throw new BundleManifestInvalidError('manifest metadata.tenant must be a non-empty string');
  }
  for (const entry of manifest.wasm ?? []) {
    if (entry.module !== WASM_MODULE_PATH) {
      throw new BundleManifestInvalidError(`manifest wasm entry ${entry.entrypoint} names module ${entry.module}; the bundle's only module is ${WASM_MODULE_PATH}`);
    }
  }
}

/**
 * The bundle's files (without the signature), byte for byte the same for the same bundle: the
 * manifest and data.json in canonical JSON (sorted keys, compact, no trailing newline), the
 * policy as given.
 */
export function buildBundle(bundle: Bundle): Map<string, Uint8Array> {
  checkManifest(bundle.manifest);
  return new Map([
    [MANIFEST_FILE, canonicalJsonBytes(bundle.manifest)],
    [DATA_FILE, canonicalJsonBytes(bundle.data)],
    [WASM_FILE, bundle.wasm],
  ]);
}

/**
 * A digest of everything in the bundle except its revision: feed it to `nextRevision` to give
 * changed content a new revision and unchanged content the old one.
 */
export function bundleContentDigest(bundle: Omit<Bundle, 'manifest'> & { manifest: Omit<BundleManifest, 'revision'> }): string {
  const { revision: _revision, ...manifest } = bundle.manifest as BundleManifest;
  return sha256Hex(canonicalJson({ manifest, data: bundle.data, wasm: sha256Hex(bundle.wasm) }));
}

/** Signs a bundle: every file's SHA-256, the tenant and the revision, in one EdDSA compact JWS. */
export async function signBundle(bundle: Bundle, key: SigningKey): Promise<SignedBundle> {
  const files = buildBundle(bundle);
  const payload: SignaturePayload = {
    files: [...files.keys()].sort(compareCodePoints).map((name) => ({
      name,
      hash: sha256Hex(files.get(name) ?? new Uint8Array()),
      algorithm: 'SHA-256',
    })),
    keyid: key.keyId,
    tenant: bundle.manifest.metadata.tenant,
    revision: bundle.manifest.revision,
  };
  const jws = await new CompactSign(canonicalJsonBytes(payload))
    .setProtectedHeader({ alg: BUNDLE_SIGNING_ALGORITHM, kid: key.keyId, typ: 'JWT' })
    .sign(key.privateKey);
  files.set(SIGNATURES_FILE, canonicalJsonBytes({ signatures: [jws] }));
  return { files };
}

/**
 * Checks a signed bundle and returns its content. In order, refusing with the first failure:
 * file names are flat; `.signatures.json` holds exactly one compact JWS; its algorithm is EdDSA
 * (never `none`, HMAC or anything else) and its key id is trusted; the signature verifies; the
 * signed tenant is the trusted tenant; every signed file is present with the signed SHA-256 and no
 * other file is; the manifest parses, names the same tenant and revision as the signature; the
 * revision is not older than `minRevision`; data.json parses.
 */
export async function verifyBundle(signed: SignedBundle, trust: BundleTrust): Promise<Bundle> {
  for (const name of signed.files.keys()) {
    if (!FILE_NAME.test(name)) {
      throw new BundleFileNameInvalidError(`file name ${JSON.stringify(name)} is not a flat name of [-._a-zA-Z0-9]`);
    }
  }
  const payload = await verifySignature(signed, trust.publicKeys);
  if (payload.tenant !== trust.tenant) {
    throw new BundleTenantMismatchError(`the bundle is signed for tenant ${payload.tenant}, not ${trust.tenant}`);
  }
  checkFiles(signed, payload);
  const manifest = parseManifest(signed);
  if (manifest.metadata.tenant !== trust.tenant) {
    throw new BundleTenantMismatchError(`the manifest names tenant ${manifest.metadata.tenant}, not ${trust.tenant}`);
  }
  if (manifest.revision !== payload.revision) {
    throw new BundleManifestInvalidError(`the manifest revision ${manifest.revision} is not the signed revision ${payload.revision}`);
  }
  checkRevisionOrder(manifest.revision, trust);
  return { manifest, wasm: fileOf(signed, WASM_FILE), data: parseJsonFile(signed, DATA_FILE, BundleDataInvalidError) };
}

function fileOf(signed: SignedBundle, name: string): Uint8Array {
  const bytes = signed.files.get(name);
  if (bytes === undefined) {
    throw new BundleFileMissingError(`the bundle has no ${name}`);
  }
  return bytes;
}

function parseJsonFile(signed: SignedBundle, name: string, Failure: new (message: string) => Error): unknown {
  try {
    return JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(fileOf(signed, name))) as unknown;
  } catch (error) {
    if (error instanceof BundleFileMissingError) {
      throw error;
    }
    throw new Failure(`${name} is not UTF-8 JSON: ${error instanceof Error ? error.message : String(error)}`);
  }
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

async function verifySignature(signed: SignedBundle, publicKeys: ReadonlyMap<string, BundleKey>): Promise<SignaturePayload> {
  const document = parseJsonFile(signed, SIGNATURES_FILE, BundleSignatureInvalidError);
  const signatures = isRecord(document) ? document.signatures : undefined;
  if (!Array.isArray(signatures) || signatures.length !== 1 || typeof signatures[0] !== 'string') {
    throw new BundleSignatureInvalidError(`${SIGNATURES_FILE} must hold {"signatures": [one compact JWS]}`);
  }
  const jws = signatures[0];
  // One byte form only: a signature file that verifies is byte for byte the one the operator
  // wrote. Without this, added whitespace or the unused low bits of the last base64url character
  // of the signature would give other bytes that still verify.
  const signature = jws.split('.')[2] ?? '';
  if (!isCanonical(signed, jws) || Buffer.from(signature, 'base64url').toString('base64url') !== signature) {
    throw new BundleSignatureInvalidError(`${SIGNATURES_FILE} is not in its canonical form {"signatures":["<compact JWS>"]}`);
  }
  let header: ReturnType<typeof decodeProtectedHeader>;
  try {
    header = decodeProtectedHeader(jws);
  } catch (error) {
    throw new BundleSignatureInvalidError(`${SIGNATURES_FILE}: the JWS header does not decode`, { cause: error });
  }
  if (header.alg !== BUNDLE_SIGNING_ALGORITHM) {
    throw new BundleSignatureAlgorithmError(`${SIGNATURES_FILE}: the JWS algorithm is ${String(header.alg)}; only ${BUNDLE_SIGNING_ALGORITHM} is accepted`);
  }
  const key = header.kid === undefined ? undefined : publicKeys.get(header.kid);
  if (header.kid === undefined || key === undefined) {
    throw new BundleKeyUnknownError(`${SIGNATURES_FILE}: the JWS key id ${header.kid ?? '(none)'} is not a trusted key`);
  }
  let payloadBytes: Uint8Array;
  try {
    ({ payload: payloadBytes } = await compactVerify(jws, key, { algorithms: [BUNDLE_SIGNING_ALGORITHM] }));
  } catch (error) {
    throw new BundleSignatureInvalidError(`${SIGNATURES_FILE}: the signature does not verify with key ${header.kid}`, { cause: error });
  }
  return parsePayload(payloadBytes, header.kid);
}

function isCanonical(signed: SignedBundle, jws: string): boolean {
  const expected = canonicalJsonBytes({ signatures: [jws] });
  const actual = signed.files.get(SIGNATURES_FILE) ?? new Uint8Array();
  return Buffer.from(actual).equals(expected);
}

function parsePayload(bytes: Uint8Array, keyId: string): SignaturePayload {
  let payload: unknown;
  try {
    payload = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes));
  } catch (error) {
    throw new BundleSignatureInvalidError(`${SIGNATURES_FILE}: the signed payload is not JSON`, { cause: error });
  }
  if (
    !isRecord(payload) ||
    !Array.isArray(payload.files) ||
    typeof payload.tenant !== 'string' ||
    typeof payload.revision !== 'string' ||
    payload.keyid !== keyId
  ) {
    throw new BundleSignatureInvalidError(`${SIGNATURES_FILE}: the signed payload needs files, tenant, revision and keyid ${keyId}`);
  }
  const files = payload.files.map((entry: unknown): SignedFile => {
    if (!isRecord(entry) || typeof entry.name !== 'string' || typeof entry.hash !== 'string' || entry.algorithm !== 'SHA-256') {
      throw new BundleSignatureInvalidError(`${SIGNATURES_FILE}: every signed file needs a name, a hash and algorithm SHA-256`);
    }
    return { name: entry.name, hash: entry.hash, algorithm: 'SHA-256' };
  });
  return { files, keyid: keyId, tenant: payload.tenant, revision: payload.revision };
}

function checkFiles(signed: SignedBundle, payload: SignaturePayload): void {
  const listed = new Map<string, string>();
  for (const { name, hash } of payload.files) {
    if (listed.has(name) || name === SIGNATURES_FILE) {
      throw new BundleSignatureInvalidError(`${SIGNATURES_FILE}: ${name} is listed twice or is the signature itself`);
    }
    listed.set(name, hash);
  }
  for (const name of CONTENT_FILES) {
    if (!listed.has(name)) {
      throw new BundleFileMissingError(`the signature does not cover ${name}`);
    }
  }
  for (const [name, hash] of listed) {
    const actual = sha256Hex(fileOf(signed, name));
    if (actual !== hash) {
      throw new BundleDigestMismatchError(`${name}: SHA-256 is ${actual}, the signature says ${hash}`);
    }
  }
  for (const name of signed.files.keys()) {
    if (name !== SIGNATURES_FILE && !listed.has(name)) {
      throw new BundleFileUnexpectedError(`${name} is in the bundle but not covered by the signature`);
    }
  }
}

function isWasmEntry(entry: unknown): boolean {
  return isRecord(entry) && typeof entry.entrypoint === 'string' && typeof entry.module === 'string';
}

function parseManifest(signed: SignedBundle): BundleManifest {
  const manifest = parseJsonFile(signed, MANIFEST_FILE, BundleManifestInvalidError);
  if (
    !isRecord(manifest) ||
    typeof manifest.revision !== 'string' ||
    !Array.isArray(manifest.roots) ||
    !manifest.roots.every((root) => typeof root === 'string') ||
    !isRecord(manifest.metadata) ||
    typeof manifest.metadata.tenant !== 'string' ||
    !(manifest.wasm === undefined || (Array.isArray(manifest.wasm) && manifest.wasm.every(isWasmEntry)))
  ) {
    throw new BundleManifestInvalidError(`${MANIFEST_FILE} needs revision, roots (strings), metadata.tenant, and wasm entries with entrypoint and module`);
  }
  const result = manifest as unknown as BundleManifest;
  checkManifest(result);
  return result;
}

function checkRevisionOrder(revision: string, trust: BundleTrust): void {
  const loaded = trust.minRevision;
  if (loaded === undefined) {
    return;
  }
  if (trust.compareRevision !== undefined) {
    if (trust.compareRevision(revision, loaded) < 0) {
      throw new BundleRevisionRegressedError(`revision ${revision} is older than the loaded revision ${loaded}`);
    }
    return;
  }
  const candidate = parseRevision(revision);
  const current = parseRevision(loaded);
  if (candidate.sequence < current.sequence) {
    throw new BundleRevisionRegressedError(`revision ${revision} is older than the loaded revision ${loaded}`);
  }
  if (candidate.sequence === current.sequence && revision !== loaded) {
    throw new BundleRevisionConflictError(`revision ${revision} has the sequence of the loaded revision ${loaded} but other content`);
  }
}
