// The tamper-evident audit trail: hash-chained decision entries with signed
// checkpoints (audit-log.ts writes them, verify.ts checks them).
export { AuditLog, AuditLogClosedError, DEFAULT_CHECKPOINT_INTERVAL_MS, DEFAULT_CHECKPOINT_RECORDS } from './audit-log.ts';
export type { AuditLogOptions, AuditStream } from './audit-log.ts';
export type { ChainSigner } from './chain.ts';
export { AUDIT_FORMAT_VERSION, AUDIT_LINE_KEY } from './entry.ts';
export type { AuditEntry, ChainRef, CheckpointEntry, DecisionEntry, DecisionFields, OpenEntry, ResponseEntry, ResponseOutcome } from './entry.ts';
export { AuditKeyError, ephemeralSigner, generateAuditKey, loadPublicKeys, loadSigner } from './keys.ts';
export { AuditVerifier, INCOMPLETE_KINDS, verifyAuditLog } from './verify.ts';
export type { ChainSummary, Finding, FindingKind, Verdict, VerifyOptions, VerifyReport } from './verify.ts';
