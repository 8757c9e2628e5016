// The Portcullis API: resource types (generated from crds.ts) and constants.
export * from './types.generated.ts';
export { API_VERSION, CATEGORY, CONDITION_KINDS, DECISIONS, FAIL_OPEN_CAUSES, PARAM_OPERATORS, GROUP, MODES, REDACTION_DETECTORS, THREATS, USER_TOKEN_ALGORITHMS, VERSION, WEEKDAYS } from './crds.ts';
export type { CrdSource } from './crds.ts';
export { INJECT_ANNOTATION, INJECTED_ANNOTATION, INJECTION_LABEL, TENANT_LABEL } from './labels.ts';
