// User tokens at the sidecar: the token of the user an agent acts for, which the
// agent's application forwards with a call in x-portcullis-user-token. It is a
// JWT from the issuer the agent's AgentIdentity names (spec.userTokens, carried
// in the bundle); verified here with jose against the issuer's keys (pinned
// asymmetric algorithms, issuer, audience, exp and nbf), its claims become the
// call's `user`. A token that does not verify refuses the call: it is never
// ignored, or the call would be decided as if no user had asked.
import type { JWTPayload, JWTVerifyGetKey } from 'jose';
import { createLocalJWKSet, createRemoteJWKSet, customFetch, errors, jwtVerify } from 'jose';
import type { UserTokenData } from '../compiler/index.ts';
import type { VerifiedFacts } from './authorizer.ts';

/** The header that carries the user's token, on /v1/authorize and on proxied requests alike. */
export const USER_TOKEN_HEADER = 'x-portcullis-user-token';
/** How far the sidecar's clock may be from the issuer's, for exp and nbf. */
export const USER_TOKEN_CLOCK_SKEW_S = 30;

export type UserTokenErrorCode =
  | 'user_token_not_accepted'
  | 'user_token_malformed'
  | 'user_token_algorithm'
  | 'user_token_key_unknown'
  | 'user_token_signature_invalid'
  | 'user_token_expired'
  | 'user_token_not_yet_valid'
  | 'user_token_issuer'
  | 'user_token_audience'
  | 'user_token_claims_invalid'
  | 'user_token_keys_unavailable';

/** Why a user token was refused; the code names the check that failed. */
export class UserTokenError extends Error {
  readonly code: UserTokenErrorCode;
  override readonly name = 'UserTokenError';

  constructor(code: UserTokenErrorCode, message: string, options?: ErrorOptions) {
    super(message, options);
    this.code = code;
  }
}

export type VerifiedUser = NonNullable<VerifiedFacts['user']>;

/** The claim a JWT claim-set error names, as jose reports it. */
function claimErrorCode(error: errors.JWTClaimValidationFailed): UserTokenErrorCode {
  switch (error.claim) {
    case 'iss':
      return 'user_token_issuer';
    case 'aud':
      return 'user_token_audience';
    case 'nbf':
      return 'user_token_not_yet_valid';
    default:
      return 'user_token_claims_invalid';
  }
}

/** jose's failure as one of ours, keeping jose's words and the cause. */
function refusalOf(error: unknown): UserTokenError {
  const message = error instanceof Error ? error.message : String(error);
  const as = (code: UserTokenErrorCode): UserTokenError => new UserTokenError(code, message, { cause: error });
  if (error instanceof UserTokenError) return error;
  if (error instanceof errors.JWTExpired) return as('user_token_expired');
  if (error instanceof errors.JWTClaimValidationFailed) return as(claimErrorCode(error));
  if (error instanceof errors.JOSEAlgNotAllowed || error instanceof errors.JOSENotSupported) return as('user_token_algorithm');
  if (error instanceof errors.JWKSNoMatchingKey) return as('user_token_key_unknown');
  if (error instanceof errors.JWSSignatureVerificationFailed) return as('user_token_signature_invalid');
  if (error instanceof errors.JWSInvalid || error instanceof errors.JWTInvalid) return as('user_token_malformed');
  if (error instanceof errors.JWKSTimeout || error instanceof errors.JWKSInvalid || error instanceof errors.JOSEError) return as('user_token_keys_unavailable');
  // fetch's own failures (refused connection, TLS): the keys cannot be had.
  return as('user_token_keys_unavailable');
}

function isScalar(value: unknown): value is string | number | boolean {
  return typeof value === 'string' || typeof value === 'boolean' || (typeof value === 'number' && Number.isFinite(value));
}

/**
 * The user a verified claim set names: user.id from the id claim (a non-empty
 * string), each attribute from its top-level claim. A mapped claim that is not
 * a string, number or boolean is refused rather than read one way or another.
 */
export function userOf(claims: JWTPayload, mapping: UserTokenData['claims']): VerifiedUser {
  const id = Object.hasOwn(claims, mapping.id) ? claims[mapping.id] : undefined;
  if (typeof id !== 'string' || id === '') throw new UserTokenError('user_token_claims_invalid', `the ${mapping.id} claim, the user id, is missing or not a non-empty string`);
  const attributes: [string, string | number | boolean][] = [];
  for (const [attribute, claim] of Object.entries(mapping.attributes)) {
    if (!Object.hasOwn(claims, claim)) continue;
    const value = claims[claim];
    if (!isScalar(value)) throw new UserTokenError('user_token_claims_invalid', `the ${claim} claim (user attribute ${attribute}) is ${Array.isArray(value) ? 'a list' : typeof value}, not a string, number or boolean`);
    attributes.push([attribute, value]);
  }
  return { id, attributes: Object.fromEntries(attributes) };
}

/**
 * Verifies a user token against an agent's userTokens: the header's algorithm
 * among the pinned ones (checked before any key is looked up, so neither none
 * nor HMAC with a public key gets that far), a signature by a key of the
 * issuer, iss exactly, aud naming an audience, exp present and not passed, nbf
 * reached (with USER_TOKEN_CLOCK_SKEW_S of leeway). Throws UserTokenError.
 */
export async function verifyUserToken(token: string, config: UserTokenData, keys: JWTVerifyGetKey, now: Date): Promise<VerifiedUser> {
  let claims: JWTPayload;
  try {
    ({ payload: claims } = await jwtVerify(token, keys, {
      algorithms: config.algorithms,
      issuer: config.issuer,
      audience: config.audiences,
      requiredClaims: ['exp'],
      clockTolerance: USER_TOKEN_CLOCK_SKEW_S,
      currentDate: now,
    }));
  } catch (error) {
    throw refusalOf(error);
  }
  return userOf(claims, config.claims);
}

/** How long a JWKS fetch may take: a call waits for it when no keys are cached yet. */
const JWKS_TIMEOUT_MS = 2_000;
/** Distinct key sets kept; a new bundle may name another, and the old ones are dropped past this. */
const MAX_KEY_SETS = 16;

export interface UserTokensOptions {
  /** The agent's userTokens in the loaded bundle, read at every call; undefined when it declares none (or no bundle is loaded). */
  config: () => UserTokenData | undefined;
  /** Fetches a remote JWKS (global fetch unless a test swaps it). */
  fetch?: (url: string) => Promise<Response>;
  now?: () => Date;
}

/**
 * The sidecar's user token verifier: the key sets of the configurations it has
 * seen (a remote JWKS cached by jose for 10 minutes, fetched again for a key id
 * it does not hold, at most every 30 s), and the verdict on a call's headers.
 */
export class UserTokens {
  private readonly options: UserTokensOptions;
  private readonly keySets = new Map<string, JWTVerifyGetKey>();

  constructor(options: UserTokensOptions) {
    this.options = options;
  }

  /**
   * The user a call's token names; {} without a token (a call with no user);
   * a refusal, naming why, for a token that does not verify or that the agent
   * accepts none of.
   */
  async verify(headers: ReadonlyMap<string, string>): Promise<VerifiedFacts | { refuse: string }> {
    const token = headers.get(USER_TOKEN_HEADER);
    if (token === undefined) return {};
    try {
      if (token === '') throw new UserTokenError('user_token_malformed', `${USER_TOKEN_HEADER} is empty`);
      const config = this.options.config();
      if (config === undefined) throw new UserTokenError('user_token_not_accepted', 'the agent accepts no user tokens (its AgentIdentity has no spec.userTokens, or no bundle is loaded)');
      return { user: await verifyUserToken(token, config, this.keysOf(config), this.options.now?.() ?? new Date()) };
    } catch (error) {
      const refusal = refusalOf(error);
      return { refuse: `the user token is refused (${refusal.code}): ${refusal.message}` };
    }
  }

  private keysOf(config: UserTokenData): JWTVerifyGetKey {
    const key = config.jwksURL ?? JSON.stringify(config.jwks);
    let keys = this.keySets.get(key);
    if (keys === undefined) {
      keys = keySetOf(config, this.options.fetch);
      if (this.keySets.size >= MAX_KEY_SETS) this.keySets.clear();
      this.keySets.set(key, keys);
    }
    return keys;
  }
}

function keySetOf(config: UserTokenData, fetchJwks: ((url: string) => Promise<Response>) | undefined): JWTVerifyGetKey {
  if (config.jwks !== undefined) {
    // The compiler checked each key is a public JWK; jose checks the rest when it imports one.
    return createLocalJWKSet(config.jwks);
  }
  if (config.jwksURL === undefined) throw new UserTokenError('user_token_keys_unavailable', 'userTokens names neither jwksURL nor jwks');
  const url = new URL(config.jwksURL);
  // The compiler allows only https; a bundle is still read as outside input.
  if (url.protocol !== 'https:') throw new UserTokenError('user_token_keys_unavailable', `the JWKS URL ${config.jwksURL} is not https`);
  return createRemoteJWKSet(url, {
    timeoutDuration: JWKS_TIMEOUT_MS,
    ...(fetchJwks === undefined ? {} : { [customFetch]: fetchJwks }),
  });
}

export type TokenCheck = (headers: ReadonlyMap<string, string>) => Promise<VerifiedFacts | { refuse: string }>;

/**
 * What a call's forwarded tokens say together: each check in turn (the agent
 * token's delegation, the user token's user); the first refusal refuses the call.
 */
export async function verifyForwardedTokens(headers: ReadonlyMap<string, string>, checks: readonly TokenCheck[]): Promise<VerifiedFacts | { refuse: string }> {
  let facts: VerifiedFacts = {};
  for (const check of checks) {
    const verdict = await check(headers);
    if ('refuse' in verdict) return verdict;
    facts = { ...facts, ...verdict };
  }
  return facts;
}
