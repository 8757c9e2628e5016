// Why a bundle was refused. Each reason is its own class with a stable code, so the sidecar can
// put the code in a metric label and an event reason, and callers can match on the class.

export const BUNDLE_ERROR_CODES = [
  'bundle_file_missing',
  'bundle_file_unexpected',
  'bundle_file_name_invalid',
  'bundle_digest_mismatch',
  'bundle_signature_invalid',
  'bundle_signature_algorithm',
  'bundle_key_unknown',
  'bundle_tenant_mismatch',
  'bundle_revision_invalid',
  'bundle_revision_regressed',
  'bundle_revision_conflict',
  'bundle_manifest_invalid',
  'bundle_data_invalid',
  'bundle_too_large',
  'bundle_key_invalid',
] as const;

export type BundleErrorCode = (typeof BUNDLE_ERROR_CODES)[number];

export abstract class BundleError extends Error {
  abstract readonly code: BundleErrorCode;
}

/** A file the signature lists (or the layout requires) is not in the bundle. */
export class BundleFileMissingError extends BundleError {
  readonly code = 'bundle_file_missing';
  override readonly name = 'BundleFileMissingError';
}

/** The bundle holds a file the signature does not cover. */
export class BundleFileUnexpectedError extends BundleError {
  readonly code = 'bundle_file_unexpected';
  override readonly name = 'BundleFileUnexpectedError';
}

/** A file name is not a flat name of `[-._a-zA-Z0-9]` characters. */
export class BundleFileNameInvalidError extends BundleError {
  readonly code = 'bundle_file_name_invalid';
  override readonly name = 'BundleFileNameInvalidError';
}

/** A file's SHA-256 differs from the one the signature states. */
export class BundleDigestMismatchError extends BundleError {
  readonly code = 'bundle_digest_mismatch';
  override readonly name = 'BundleDigestMismatchError';
}

/** The signature file is malformed, the JWS does not verify, or its payload is malformed. */
export class BundleSignatureInvalidError extends BundleError {
  readonly code = 'bundle_signature_invalid';
  override readonly name = 'BundleSignatureInvalidError';
}

/** The JWS names an algorithm other than EdDSA (including `none` and HMAC). */
export class BundleSignatureAlgorithmError extends BundleError {
  readonly code = 'bundle_signature_algorithm';
  override readonly name = 'BundleSignatureAlgorithmError';
}

/** The JWS names no key id, or one that is not trusted. */
export class BundleKeyUnknownError extends BundleError {
  readonly code = 'bundle_key_unknown';
  override readonly name = 'BundleKeyUnknownError';
}

/** The signed tenant or the manifest's tenant is not the tenant the verifier serves. */
export class BundleTenantMismatchError extends BundleError {
  readonly code = 'bundle_tenant_mismatch';
  override readonly name = 'BundleTenantMismatchError';
}

/** A revision is not `<sequence>-<digest>`. */
export class BundleRevisionInvalidError extends BundleError {
  readonly code = 'bundle_revision_invalid';
  override readonly name = 'BundleRevisionInvalidError';
}

/** The revision is older than the one already loaded. */
export class BundleRevisionRegressedError extends BundleError {
  readonly code = 'bundle_revision_regressed';
  override readonly name = 'BundleRevisionRegressedError';
}

/** The revision has the sequence of the one already loaded but different content. */
export class BundleRevisionConflictError extends BundleError {
  readonly code = 'bundle_revision_conflict';
  override readonly name = 'BundleRevisionConflictError';
}

/** The manifest does not parse, lacks a field, or disagrees with the signature. */
export class BundleManifestInvalidError extends BundleError {
  readonly code = 'bundle_manifest_invalid';
  override readonly name = 'BundleManifestInvalidError';
}

/** The data is not a JSON value (or data.json does not parse). */
export class BundleDataInvalidError extends BundleError {
  readonly code = 'bundle_data_invalid';
  override readonly name = 'BundleDataInvalidError';
}

/** The bundle does not fit in a ConfigMap. */
export class BundleTooLargeError extends BundleError {
  readonly code = 'bundle_too_large';
  override readonly name = 'BundleTooLargeError';
}

/** A stored key does not import, is not Ed25519, or its key id is not its thumbprint. */
export class BundleKeyInvalidError extends BundleError {
  readonly code = 'bundle_key_invalid';
  override readonly name = 'BundleKeyInvalidError';
}
