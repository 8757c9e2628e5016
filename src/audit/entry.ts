// The audit trail's record format: one entry per decision, and the entries
// that open a chain and sign it. Pure: building, hashing and reading entries.
//
// An audit line is a pino JSON line whose `audit` member is the entry; the
// rest of the line (level, time, msg) is the log envelope and is not hashed.
// Each entry names its chain, its place in it (seq) and the hash of the entry
// before it (prev); its own hash covers its canonical JSON without `hash` and
// `sig`, so changing any member, or the order, breaks the chain.
import { canonicalJson, sha256Hex } from '../compiler/index.ts';
import { parseStrictJson, StrictJsonError } from '../compiler/strict-json.ts';
import type { DecisionRecord } from '../sidecar/authorizer.ts';

/** The version of the entry format, in every entry as `v`. */
export const AUDIT_FORMAT_VERSION = 1;

/** The line member that holds the entry, and marks a line as an audit line. */
export const AUDIT_LINE_KEY = 'audit';

export type EntryType = 'open' | 'decision' | 'response' | 'checkpoint';

/** A point in a chain: an entry, by chain, seq and hash. */
export interface ChainRef {
  chain: string;
  seq: number;
  hash: string;
}

/** An Ed25519 public key as a JWK (RFC 8037). */
export interface PublicKeyJwk {
  kty: 'OKP';
  crv: 'Ed25519';
  x: string;
}

interface EntryBase {
  v: typeof AUDIT_FORMAT_VERSION;
  type: EntryType;
  /** A random id, new each time a writer starts. */
  chain: string;
  /** 0 for the entry that opens the chain, then one more for each entry. */
  seq: number;
  /** ISO 8601, UTC. */
  time: string;
  /** The hash of the entry before this one in the chain; null for the opening entry. */
  prev: string | null;
  /** SHA-256 (hex) of the canonical JSON of the entry without `hash` and `sig`. */
  hash: string;
}

/** The first entry of a chain: who writes it and the key its checkpoints are signed with. */
export interface OpenEntry extends EntryBase {
  type: 'open';
  tenant: string;
  namespace: string;
  agent: string;
  key: { kid: string; jwk: PublicKeyJwk; ephemeral: boolean };
  /** The last audit entry the file held when this chain began, so removing a whole chain shows. */
  after?: ChainRef;
}

/** What one decision records (DESIGN.md: audit, metrics, traces). */
export interface DecisionFields {
  decisionId: string;
  tenant: string;
  namespace: string;
  agent: string;
  /** The invoking user's id, from a verified token. */
  user: string | null;
  /** The agents that asked for the call, outermost first. */
  delegation: string[];
  /** The tool, or egress:HOST for an egress check; '' when the request could not be read. */
  tool: string;
  action: string | null;
  egress?: { host: string; port: number };
  /** "sha256:" and the SHA-256 (hex) of the canonical JSON of the call's params; null without params. */
  paramsDigest: string | null;
  decision: string;
  enforced: boolean;
  policy: string | null;
  rule: string;
  revision: string;
  reasons: string[];
  /** The approval key of an approval_needed decision. */
  approval?: string;
  /** sanitize: what was redacted from the params, as PATH:DETECTOR, never the text. */
  redacted?: string[];
  /** A limit's refusal: when the call may succeed (Retry-After), and when a budget resets. */
  retryAfterSeconds?: number;
  resetsAt?: string;
  /** A call let through unchecked (rule portcullis:fail-open): why the sidecar could not decide it. */
  failOpen?: string;
  /** How long the decision took; for a response entry, from the decision's start to the end of the answer. */
  latencyMs: number;
  transport: string;
  /** The W3C trace context the call came with, to find its trace. */
  traceparent?: string;
}

export interface DecisionEntry extends EntryBase, DecisionFields {
  type: 'decision';
}

/** What became of the answer of a decided call whose decision asked for it to be redacted (ext_proc). */
export interface ResponseOutcome {
  /** PATH:DETECTOR of what was redacted from the answer ('' as the path of a text answer), never the text. */
  redacted: string[];
  outcome: 'complete' | 'failed' | 'interrupted';
  reason?: string;
}

/** A second entry for a decision (same decisionId): its answer's redaction, once the answer has passed. */
export interface ResponseEntry extends EntryBase, DecisionFields {
  type: 'response';
  response: ResponseOutcome;
}

/** Signs the chain up to and including itself: `sig` is over its own hash. */
export interface CheckpointEntry extends EntryBase {
  type: 'checkpoint';
  /** The RFC 7638 thumbprint of the signing key. */
  kid: string;
  /** True for the checkpoint a writer writes when it closes: nothing follows it in the chain. */
  final: boolean;
  /** Ed25519 signature (base64url) of checkpointMessage(hash). */
  sig: string;
}

export type AuditEntry = OpenEntry | DecisionEntry | ResponseEntry | CheckpointEntry;

/** Members that the hash does not cover: the hash itself, and the signature made over it. */
const UNHASHED = new Set(['hash', 'sig']);

/** The hash an entry should carry: over its canonical JSON without `hash` and `sig`. */
export function entryHash(entry: Readonly<Record<string, unknown>>): string {
  const content: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(entry)) {
    if (!UNHASHED.has(key)) content[key] = value;
  }
  return sha256Hex(canonicalJson(content));
}

/** The bytes a checkpoint's signature is over: a fixed label (so the key signs nothing else by accident) and the hash. */
export function checkpointMessage(hash: string): Uint8Array {
  return new TextEncoder().encode(`portcullis audit checkpoint v${AUDIT_FORMAT_VERSION}\n${hash}`);
}

const TRACEPARENT = /^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$/;

function stringOr<T>(value: unknown, fallback: T): string | T {
  return typeof value === 'string' ? value : fallback;
}

function egressOf(call: Record<string, unknown>): { host: string; port: number } | undefined {
  const egress = call.egress as { host?: unknown; port?: unknown } | undefined;
  if (typeof egress?.host !== 'string' || typeof egress.port !== 'number') return undefined;
  return { host: egress.host, port: egress.port };
}

function delegationOf(call: Record<string, unknown>): string[] {
  return Array.isArray(call.delegation) ? call.delegation.filter((agent): agent is string => typeof agent === 'string') : [];
}

/** The parameter digest: params are recorded by digest only, never by value. */
export function paramsDigest(params: unknown): string | null {
  return params === undefined ? null : `sha256:${sha256Hex(canonicalJson(params))}`;
}

/**
 * What a decided call records. The time is when the decision started; for the
 * record of its answer (record.response), when the answer ended.
 */
export function decisionFields(record: DecisionRecord): { time: Date; fields: DecisionFields; response?: ResponseOutcome } {
  const { decision, call, context } = record;
  const user = call.user as { id?: unknown } | undefined;
  const egress = egressOf(call);
  const fields: DecisionFields = {
    decisionId: decision.decisionId,
    tenant: record.tenant,
    namespace: stringOr(call.namespace, ''),
    agent: stringOr(call.agent, ''),
    user: stringOr(user?.id, null),
    delegation: delegationOf(call),
    tool: record.tool,
    action: stringOr(call.action, null),
    ...(egress === undefined ? {} : { egress }),
    paramsDigest: paramsDigest(call.params),
    decision: decision.decision,
    enforced: decision.enforced,
    policy: decision.policy,
    rule: decision.rule,
    revision: decision.revision,
    reasons: decision.reasons,
    ...(decision.approval === undefined ? {} : { approval: decision.approval }),
    ...(decision.redacted === undefined ? {} : { redacted: decision.redacted }),
    ...(decision.retryAfterSeconds === undefined ? {} : { retryAfterSeconds: decision.retryAfterSeconds }),
    ...(decision.resetsAt === undefined ? {} : { resetsAt: decision.resetsAt }),
    ...(decision.failOpen === undefined ? {} : { failOpen: decision.failOpen }),
    // Microsecond resolution: finer digits are noise, and they would only lengthen every line.
    latencyMs: Math.round(record.latencySeconds * 1e6) / 1e3,
    transport: context.transport,
    ...(context.traceparent !== undefined && TRACEPARENT.test(context.traceparent) ? { traceparent: context.traceparent } : {}),
  };
  const { response } = record;
  if (response === undefined) return { time: record.startedAt, fields };
  return {
    time: new Date(record.startedAt.getTime() + record.latencySeconds * 1000),
    fields,
    response: { redacted: response.redacted, outcome: response.outcome, ...(response.reason === undefined ? {} : { reason: response.reason }) },
  };
}

/** What one line of a log is to the audit trail. */
export type AuditLine =
  | { kind: 'entry'; entry: AuditEntry }
  /** An audit line whose entry lacks what every entry of its type has, or that two JSON readers could read differently. */
  | { kind: 'malformed'; reason: string; chain?: string; seq?: number }
  /** Not JSON, but it holds an audit member: a torn or edited audit line. */
  | { kind: 'unreadable' }
  /** A log line of the sidecar: audit entries share its standard output with them. */
  | { kind: 'log' }
  /** Anything else: neither an audit entry nor a log line. */
  | { kind: 'foreign'; reason: string };

const HEX64 = /^[0-9a-f]{64}$/;

function isObject(value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}

/** The first thing missing or wrong in the members every entry has. */
function commonProblem(entry: Record<string, unknown>): string | undefined {
  if (entry.v !== AUDIT_FORMAT_VERSION) return `format version ${JSON.stringify(entry.v)} is not ${AUDIT_FORMAT_VERSION}`;
  if (typeof entry.chain !== 'string' || entry.chain === '') return 'no chain id';
  if (typeof entry.seq !== 'number' || !Number.isSafeInteger(entry.seq) || entry.seq < 0) return 'seq is not a whole number';
  if (typeof entry.hash !== 'string' || !HEX64.test(entry.hash)) return 'hash is not 64 hex digits';
  if (entry.prev !== null && (typeof entry.prev !== 'string' || !HEX64.test(entry.prev))) return 'prev is neither null nor 64 hex digits';
  if (typeof entry.time !== 'string') return 'no time';
  return undefined;
}

/** What a decision and a response entry both need: which decision, and its answer. */
function decisionProblem(entry: Record<string, unknown>): string | undefined {
  return typeof entry.decisionId === 'string' && typeof entry.decision === 'string' && typeof entry.enforced === 'boolean' ? undefined : `the ${String(entry.type)} entry lacks decisionId, decision or enforced`;
}

/** The first thing missing or wrong in a parsed entry, or undefined when it has the shape of its type. */
function shapeProblem(entry: Record<string, unknown>): string | undefined {
  const common = commonProblem(entry);
  if (common !== undefined) return common;
  switch (entry.type) {
    case 'open': {
      const key = entry.key as { kid?: unknown; jwk?: { x?: unknown } } | undefined;
      return typeof key?.kid === 'string' && typeof key.jwk?.x === 'string' ? undefined : 'the opening entry names no key (key.kid, key.jwk)';
    }
    case 'checkpoint':
      return typeof entry.kid === 'string' && typeof entry.sig === 'string' && typeof entry.final === 'boolean' ? undefined : 'the checkpoint lacks kid, sig or final';
    case 'decision':
      return decisionProblem(entry);
    case 'response':
      return typeof (entry.response as { outcome?: unknown } | undefined)?.outcome === 'string' ? decisionProblem(entry) : 'the response entry has no response.outcome';
    default:
      return `type ${JSON.stringify(entry.type)} is not open, decision, response or checkpoint`;
  }
}

/** A log line of the sidecar, as pino writes it: an object with a numeric level and time. */
function isLogLine(line: Record<string, unknown>): boolean {
  return typeof line.level === 'number' && typeof line.time === 'number';
}

/** The start of a line, quoted, to show which line a finding is about. */
function excerpt(line: string): string {
  return JSON.stringify(line.length > 60 ? `${line.slice(0, 60)}…` : line);
}

/** A line that JSON.parse cannot read: a torn or edited audit line when it names an audit member, else foreign text. */
function notJson(line: string): AuditLine {
  if (line.includes(`"${AUDIT_LINE_KEY}"`)) return { kind: 'unreadable' };
  return { kind: 'foreign', reason: line.trim() === '' ? 'an empty line' : `text that is not JSON: ${excerpt(line)}` };
}

/** The entry of an audit line, if it has the shape of its type. */
function entryOf(entry: unknown, strictProblem: string | undefined): AuditLine {
  const located = isObject(entry) ? { ...(typeof entry.chain === 'string' ? { chain: entry.chain } : {}), ...(typeof entry.seq === 'number' ? { seq: entry.seq } : {}) } : {};
  // Audit lines are read as strictly as request bodies: a line that two JSON readers read differently (a key twice) says two things.
  if (strictProblem !== undefined) return { kind: 'malformed', reason: `the line is not strict JSON (${strictProblem}): JSON readers differ on what it says`, ...located };
  if (!isObject(entry)) return { kind: 'malformed', reason: `its ${AUDIT_LINE_KEY} member is not an object` };
  const problem = shapeProblem(entry);
  if (problem === undefined) return { kind: 'entry', entry: entry as unknown as AuditEntry };
  return { kind: 'malformed', reason: problem, ...located };
}

/**
 * Reads one line of a log. An audit line is a JSON object with an `audit`
 * member; a log line is one with a numeric level and time and no `audit`
 * member (pino itself repeats a key when a call names a base field again, so
 * log lines are not held to strict JSON: by any reading they are no audit
 * line). Anything else is foreign.
 */
export function readAuditLine(line: string): AuditLine {
  let parsed: unknown;
  let strictProblem: string | undefined;
  try {
    parsed = parseStrictJson(line);
  } catch (error) {
    if (!(error instanceof StrictJsonError)) throw error;
    strictProblem = error.message;
    try {
      parsed = JSON.parse(line);
    } catch {
      return notJson(line);
    }
  }
  if (!isObject(parsed)) return { kind: 'foreign', reason: `JSON that is not an object: ${excerpt(line)}` };
  // Any member named audit, the first or the last of several, makes the line an audit line.
  if (Object.hasOwn(parsed, AUDIT_LINE_KEY)) return entryOf(parsed[AUDIT_LINE_KEY], strictProblem);
  if (isLogLine(parsed)) return { kind: 'log' };
  return { kind: 'foreign', reason: `a JSON object that is neither an audit entry (no ${AUDIT_LINE_KEY} member) nor a log line (no numeric level and time): ${excerpt(line)}` };
}

/** The last well-formed audit entry of a text, as a reference: where a new chain in the same file begins. */
export function lastEntryRef(text: string): ChainRef | undefined {
  const lines = text.split('\n');
  for (let i = lines.length - 1; i >= 0; i--) {
    const read = readAuditLine(lines[i] ?? '');
    if (read.kind === 'entry') return { chain: read.entry.chain, seq: read.entry.seq, hash: read.entry.hash };
  }
  return undefined;
}
