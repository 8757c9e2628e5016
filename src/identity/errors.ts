// Why an agent token, or a request for one, was refused. Each reason is its own class with a
// stable code (for logs, metrics and the JSON error body) and the HTTP status the token service
// answers with, so the edge maps errors to responses in one place and keeps the cause.

export const IDENTITY_ERROR_CODES = [
  'token_malformed',
  'token_algorithm',
  'token_key_unknown',
  'token_signature_invalid',
  'token_expired',
  'token_not_yet_valid',
  'token_audience',
  'token_issuer',
  'token_tenant',
  'token_claims_invalid',
  'token_replayed',
  'token_replay_unchecked',
  'delegation_too_deep',
  'self_delegation',
  'credentials_missing',
  'request_invalid',
  'service_account_unauthenticated',
  'token_review_unavailable',
  'not_a_service_account',
  'service_account_mismatch',
  'pod_unbound',
  'pod_unknown',
  'pod_ineligible',
  'pod_lookup_unavailable',
  'agent_unknown',
  'agent_ambiguous',
  'agent_suspended',
  'agent_revoked',
  'rate_limited',
] as const;

export type IdentityErrorCode = (typeof IDENTITY_ERROR_CODES)[number];

export abstract class IdentityError extends Error {
  abstract readonly code: IdentityErrorCode;
  /** The HTTP status the token service answers with. */
  abstract readonly status: 400 | 401 | 403 | 404 | 409 | 429 | 503;
}

/** An agent token failed verification; the verifier's errors all derive from this. */
export abstract class AgentTokenError extends IdentityError {}

/** Not a compact JWS, or its header or payload is not a JSON object. */
export class TokenMalformedError extends AgentTokenError {
  readonly code = 'token_malformed';
  readonly status = 401;
  override readonly name = 'TokenMalformedError';
}

/** The header names an algorithm other than EdDSA: `none`, HMAC (key confusion), RSA, ... */
export class TokenAlgorithmError extends AgentTokenError {
  readonly code = 'token_algorithm';
  readonly status = 401;
  override readonly name = 'TokenAlgorithmError';
}

/** The header names no `kid`, or one the verifier does not trust. */
export class TokenKeyUnknownError extends AgentTokenError {
  readonly code = 'token_key_unknown';
  readonly status = 401;
  override readonly name = 'TokenKeyUnknownError';
}

/** The signature does not verify with the key the header names. */
export class TokenSignatureInvalidError extends AgentTokenError {
  readonly code = 'token_signature_invalid';
  readonly status = 401;
  override readonly name = 'TokenSignatureInvalidError';
}

/** `exp` has passed (beyond the allowed clock skew). */
export class TokenExpiredError extends AgentTokenError {
  readonly code = 'token_expired';
  readonly status = 401;
  override readonly name = 'TokenExpiredError';
}

/** `nbf` is in the future (beyond the allowed clock skew). */
export class TokenNotYetValidError extends AgentTokenError {
  readonly code = 'token_not_yet_valid';
  readonly status = 401;
  override readonly name = 'TokenNotYetValidError';
}

/** `aud` does not hold the verifier's audience. */
export class TokenAudienceError extends AgentTokenError {
  readonly code = 'token_audience';
  readonly status = 401;
  override readonly name = 'TokenAudienceError';
}

/** `iss` is not the expected issuer. */
export class TokenIssuerError extends AgentTokenError {
  readonly code = 'token_issuer';
  readonly status = 401;
  override readonly name = 'TokenIssuerError';
}

/** The token belongs to another tenant than the verifier's. */
export class TokenTenantError extends AgentTokenError {
  readonly code = 'token_tenant';
  readonly status = 403;
  override readonly name = 'TokenTenantError';
}

/** A required claim is missing or of the wrong shape. */
export class TokenClaimsInvalidError extends AgentTokenError {
  readonly code = 'token_claims_invalid';
  readonly status = 401;
  override readonly name = 'TokenClaimsInvalidError';
}

/** A one-time token whose `jti` was already used. */
export class TokenReplayedError extends AgentTokenError {
  readonly code = 'token_replayed';
  readonly status = 401;
  override readonly name = 'TokenReplayedError';
}

/** A one-time token reached a verifier without a replay cache, or one too full to remember it. */
export class TokenReplayUncheckedError extends AgentTokenError {
  readonly code = 'token_replay_unchecked';
  readonly status = 503;
  override readonly name = 'TokenReplayUncheckedError';
}

/** The `act` chain is deeper than the verifier (or the issuer) allows. */
export class DelegationTooDeepError extends AgentTokenError {
  readonly code = 'delegation_too_deep';
  readonly status = 403;
  override readonly name = 'DelegationTooDeepError';
}

/** An agent appears twice in one delegation chain: it would act for a chain it is already part of. */
export class SelfDelegationError extends AgentTokenError {
  readonly code = 'self_delegation';
  readonly status = 403;
  override readonly name = 'SelfDelegationError';
}

/** The request carries no ServiceAccount token. */
export class CredentialsMissingError extends IdentityError {
  readonly code = 'credentials_missing';
  readonly status = 401;
  override readonly name = 'CredentialsMissingError';
}

/** The request body is not the JSON object the endpoint takes. */
export class RequestInvalidError extends IdentityError {
  readonly code = 'request_invalid';
  readonly status = 400;
  override readonly name = 'RequestInvalidError';
}

/** The TokenReview says the ServiceAccount token is not valid (or not for our audience). */
export class ServiceAccountUnauthenticatedError extends IdentityError {
  readonly code = 'service_account_unauthenticated';
  readonly status = 401;
  override readonly name = 'ServiceAccountUnauthenticatedError';
}

/** The TokenReview itself failed: the API server is unreachable or refused the review. */
export class TokenReviewUnavailableError extends IdentityError {
  readonly code = 'token_review_unavailable';
  readonly status = 503;
  override readonly name = 'TokenReviewUnavailableError';
}

/** The reviewed token authenticates a user that is not a ServiceAccount. */
export class NotAServiceAccountError extends IdentityError {
  readonly code = 'not_a_service_account';
  readonly status = 403;
  override readonly name = 'NotAServiceAccountError';
}

/** The agent asked for is bound to another ServiceAccount than the caller's. */
export class ServiceAccountMismatchError extends IdentityError {
  readonly code = 'service_account_mismatch';
  readonly status = 403;
  override readonly name = 'ServiceAccountMismatchError';
}

/**
 * The ServiceAccount token is bound to no pod (`kubectl create token`, a Secret's token): only a
 * pod's projected token is exchanged, so an agent token always belongs to one running pod.
 */
export class PodUnboundError extends IdentityError {
  readonly code = 'pod_unbound';
  readonly status = 403;
  override readonly name = 'PodUnboundError';
}

/** The pod the ServiceAccount token is bound to no longer exists (gone, or replaced by another of its name). */
export class PodUnknownError extends IdentityError {
  readonly code = 'pod_unknown';
  readonly status = 403;
  override readonly name = 'PodUnknownError';
}

/** The token's pod exists but may not hold an agent token: another ServiceAccount, finished, being deleted, or not injected. */
export class PodIneligibleError extends IdentityError {
  readonly code = 'pod_ineligible';
  readonly status = 403;
  override readonly name = 'PodIneligibleError';
}

/** The pod could not be read: the API server is unreachable or refused the request. */
export class PodLookupUnavailableError extends IdentityError {
  readonly code = 'pod_lookup_unavailable';
  readonly status = 503;
  override readonly name = 'PodLookupUnavailableError';
}

/** No AgentIdentity binds the caller's ServiceAccount (or the one asked for does not exist). */
export class AgentUnknownError extends IdentityError {
  readonly code = 'agent_unknown';
  readonly status = 404;
  override readonly name = 'AgentUnknownError';
}

/** Several AgentIdentities bind the caller's ServiceAccount and the request named none. */
export class AgentAmbiguousError extends IdentityError {
  readonly code = 'agent_ambiguous';
  readonly status = 409;
  override readonly name = 'AgentAmbiguousError';
}

/** The agent's kill switch is on. */
export class AgentSuspendedError extends IdentityError {
  readonly code = 'agent_suspended';
  readonly status = 403;
  override readonly name = 'AgentSuspendedError';
}

/** The credential was issued before the agent's `revokedBefore`. */
export class AgentRevokedError extends IdentityError {
  readonly code = 'agent_revoked';
  readonly status = 403;
  override readonly name = 'AgentRevokedError';
}

/** The caller asked for tokens faster than its limit. */
export class RateLimitedError extends IdentityError {
  readonly code = 'rate_limited';
  readonly status = 429;
  override readonly name = 'RateLimitedError';
}
