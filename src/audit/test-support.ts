// Fixture builders for the audit tests: signing keys, decision records, and
// whole logs (chains written as the audit log writes them, amid ordinary log
// lines), plus the edits a tamperer would make to them.
import type { KeyObject } from 'node:crypto';
import { createPublicKey, generateKeyPairSync } from 'node:crypto';
import type { DecisionRecord } from '../sidecar/authorizer.ts';
import type { ChainSigner } from './chain.ts';
import { AuditChain } from './chain.ts';
import type { AuditEntry, ChainRef, DecisionFields } from './entry.ts';
import { AUDIT_LINE_KEY, entryHash } from './entry.ts';
import { jwkThumbprint, publicJwkOf, signerOf } from './keys.ts';

export interface TestKey {
  signer: ChainSigner;
  publicKey: KeyObject;
  /** The public key pinned, as a verifier gets it from --key. */
  pinned: Map<string, KeyObject>;
  privateKey: KeyObject;
}

export function testKey(ephemeral = false): TestKey {
  const { privateKey } = generateKeyPairSync('ed25519');
  const publicKey = createPublicKey(privateKey);
  return { signer: signerOf(privateKey, ephemeral), publicKey, pinned: new Map([[jwkThumbprint(publicJwkOf(publicKey)), publicKey]]), privateKey };
}

const DECISIONS = ['allow', 'deny', 'approval_needed', 'sanitize'] as const;

/** The fields of the i-th decision of a fixture log: each one different. */
export function decisionOf(i: number): DecisionFields {
  return {
    decisionId: `d-${i}`,
    tenant: 'finance',
    namespace: 'finance',
    agent: 'finance-agent',
    user: i % 2 === 0 ? 'alice' : null,
    delegation: i % 3 === 0 ? ['planner-agent'] : [],
    tool: 'stripe-payments',
    action: 'create_payment',
    paramsDigest: `sha256:${String(i).padStart(64, '0')}`,
    decision: DECISIONS[i % DECISIONS.length] ?? 'deny',
    enforced: true,
    policy: 'payments',
    rule: 'small-payments',
    revision: '7-aaaaaaaaaaaaaaaa',
    reasons: i % 2 === 0 ? [] : [`params.amount ${i * 1000} > max 5000`],
    latencyMs: 0.05 + i / 1000,
    transport: 'grpc',
  };
}

/** A decided call as the Authorizer hands it to observers. */
export function decisionRecord(overrides: Partial<DecisionRecord> = {}): DecisionRecord {
  return {
    decision: { decision: 'allow', enforced: true, policy: 'payments', rule: 'small-payments', revision: '7-aaaaaaaaaaaaaaaa', reasons: [], decisionId: 'decision-1' },
    call: { tool: 'stripe-payments', action: 'create_payment', params: { amount: 4200, currency: 'USD', account: '1234567890' }, namespace: 'finance', agent: 'finance-agent', user: { id: 'alice', attributes: { region: 'eu' } } },
    tenant: 'finance',
    context: { transport: 'grpc', traceparent: '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01' },
    tool: 'stripe-payments',
    startedAt: new Date('2026-11-23T14:00:00.000Z'),
    latencySeconds: 0.000_123_4,
    ...overrides,
  };
}

/** A log line as pino writes it, with the entry under `audit`. */
export function lineOf(entry: AuditEntry): string {
  return JSON.stringify({ level: 30, time: Date.parse(entry.time), component: 'audit', [AUDIT_LINE_KEY]: entry, msg: `audit ${entry.type}` });
}

export interface ChainSpec {
  id: string;
  key: TestKey;
  decisions: number;
  /** A checkpoint after this many decisions. */
  checkpointEvery: number;
  /** Ends with the final checkpoint, as a clean stop does. */
  closed: boolean;
  after?: ChainRef;
}

/** The entries of one chain as a writer makes them. */
export function chainEntries(spec: ChainSpec): AuditEntry[] {
  const chain = new AuditChain(spec.id, spec.key.signer);
  const clock = (i: number): Date => new Date(Date.UTC(2026, 10, 23, 14, 0, i));
  const entries: AuditEntry[] = [chain.open({ tenant: 'finance', namespace: 'finance', agent: 'finance-agent', ...(spec.after === undefined ? {} : { after: spec.after }) }, clock(0))];
  for (let i = 0; i < spec.decisions; i++) {
    entries.push(chain.decision(decisionOf(i), clock(i + 1)));
    if ((i + 1) % spec.checkpointEvery === 0) entries.push(chain.checkpoint(clock(i + 1), false));
  }
  if (spec.closed) entries.push(chain.checkpoint(clock(spec.decisions + 1), true));
  return entries;
}

export function refOf(entry: AuditEntry): ChainRef {
  return { chain: entry.chain, seq: entry.seq, hash: entry.hash };
}

/** Lines of chains written one after the other to one file, each naming the last entry before it. */
export function logOf(specs: Omit<ChainSpec, 'after'>[], ordinaryEvery = 0): string[] {
  const lines: string[] = [];
  let after: ChainRef | undefined;
  for (const spec of specs) {
    const entries = chainEntries({ ...spec, ...(after === undefined ? {} : { after }) });
    entries.forEach((entry, i) => {
      lines.push(lineOf(entry));
      if (ordinaryEvery > 0 && i % ordinaryEvery === 0) lines.push(JSON.stringify({ level: 30, time: 0, component: 'sidecar', msg: 'bundle loaded' }));
    });
    const last = entries.at(-1);
    if (last !== undefined) after = refOf(last);
  }
  return lines;
}

/** The entry of a line (a copy). */
export function entryOf(line: string): Record<string, unknown> {
  return (JSON.parse(line) as Record<string, Record<string, unknown>>)[AUDIT_LINE_KEY] ?? {};
}

/** The line with its entry changed by `edit`; rehashed when asked, as a tamperer who knows the format would. */
export function editLine(line: string, edit: (entry: Record<string, unknown>) => void, rehash = false): string {
  const parsed = JSON.parse(line) as Record<string, Record<string, unknown>>;
  const entry = parsed[AUDIT_LINE_KEY] ?? {};
  edit(entry);
  if (rehash) entry.hash = entryHash(entry);
  return JSON.stringify(parsed);
}

/** The index (in lines) of the audit line holding a given chain's seq. */
export function indexOfSeq(lines: string[], seq: number, chain?: string): number {
  return lines.findIndex((line) => {
    const entry = line.includes(`"${AUDIT_LINE_KEY}"`) ? entryOf(line) : undefined;
    return entry?.seq === seq && (chain === undefined || entry.chain === chain);
  });
}

export const joined = (lines: string[]): string => `${lines.join('\n')}\n`;
