// The Portcullis API: resource types (generated from crds.ts) and constants.
export * from './types.generated.ts';
export { API_VERSION, CATEGORY, DECISIONS, GROUP, MODES, REDACTION_DETECTORS, THREATS, VERSION, WEEKDAYS } from './crds.ts';
export type { CrdSource } from './crds.ts';
