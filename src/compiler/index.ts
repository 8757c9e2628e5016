// The compiler's public surface: manifests → tenant → compiled WASM and data,
// and the decision core that evaluates calls against them.
export { canonicalJson, sha256Hex } from './canonical.ts';
export type { CompiledTenant, GeneratedTenant } from './compile.ts';
export { compileTenant, generateTenant } from './compile.ts';
export type { CompileErrorCode, ErrorLocation } from './errors.ts';
export { COMPILE_ERROR_CODES, CompileError, CompileErrors, InputError } from './errors.ts';
export type { AgentStanding, AuthorizationDecision, DecisionHooks, EvaluatorOptions, Obligations, PolicyArtifact } from './evaluate.ts';
export { approvalKey, BUILTIN_RULES, DEFAULT_HOOKS, PolicyEvaluator } from './evaluate.ts';
export type { AuthorizationInput, CallCounters, NormalizedCall } from './input.ts';
export { normalizeInput } from './input.ts';
export type { ConditionData, FailOpenCause, LimitData, McpActionData, RuleData, TenantData, ToolActionData, ToolData, UserTokenData } from './ir.ts';
export type { Loaded, ManifestSet, SourceRef, TenantResources } from './manifests.ts';
export { parseManifests, readManifestPaths, TENANT_LABEL, tenantOf, tenantResources, tenantsOf } from './manifests.ts';
export { checkStrict, opaBinary } from './opa.ts';
export { ENTRYPOINT, PROGRAM } from './program.ts';
