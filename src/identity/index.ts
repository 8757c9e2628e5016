// Agent identity: agent tokens (mint, verify, delegation, one-time use), the token signing
// keyring, the operator's token service (POST /v1/token, JWKS, discovery), and what a sidecar
// needs to hold a token (AgentTokenSource) and to verify others' (JwksSource + verifyAgentToken).
export * from './errors.ts';
export { JwksSource, keyIdOfToken } from './jwks-source.ts';
export type { JwksSourceOptions } from './jwks-source.ts';
export { JWKS_MAX_AGE_S, rotateTokenKeyring, TOKEN_KEYS_SECRET } from './keyring.ts';
export type { RotateOptions } from './keyring.ts';
export { ReplayCache } from './replay-cache.ts';
export type { ReplayVerdict } from './replay-cache.ts';
export { startTokenService, TOKEN_SERVICE_NAME, TOKEN_SERVICE_PORT, tokenServiceDnsNames, tokenServiceUrl } from './server.ts';
export type { RunningTokenService, ServingTls, TokenServiceServerOptions } from './server.ts';
export { parseCaBundle, TokenServiceClient, TokenServiceConfigError, tokenServiceEndpoint } from './token-service-client.ts';
export type { TokenServiceAnswer, TokenServiceConfigProblem, TokenServiceEndpoint, TokenServiceEndpointOptions } from './token-service-client.ts';
export { AgentTokenSource, refreshDelayMs, retryDelayMs, tokenServiceFetcher } from './token-source.ts';
export type { AgentTokenSourceOptions, FetchedToken } from './token-source.ts';
export { AGENT_TOKEN_AUDIENCE, SERVICE_ACCOUNT_TOKEN_AUDIENCE, TokenService } from './token-service.ts';
export type { AgentDirectory, AgentRecord, ReviewToken, ServiceAccountReview, TokenExchangeRequest, TokenExchangeResponse } from './token-service.ts';
export {
  AGENT_TOKEN_ALGORITHM,
  agentSubject,
  DEFAULT_CLOCK_SKEW_S,
  DEFAULT_MAX_DELEGATION_DEPTH,
  DEFAULT_TOKEN_TTL_MS,
  delegationChain,
  MAX_TOKEN_TTL_MS,
  mintAgentToken,
  parseAgentSubject,
  verifyAgentToken,
} from './tokens.ts';
export type { Actor, AgentTokenClaims, MintRequest, VerifiedAgentToken, VerifyOptions } from './tokens.ts';
