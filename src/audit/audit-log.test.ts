import { appendFile, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { canonicalJson, sha256Hex } from '../compiler/index.ts';
import { Authorizer } from '../sidecar/authorizer.ts';
import { createSidecarMetrics } from '../sidecar/metrics.ts';
import type { AuditLogOptions } from './audit-log.ts';
import { AuditLog, AuditLogClosedError } from './audit-log.ts';
import type { AuditEntry, DecisionEntry, OpenEntry, ResponseEntry } from './entry.ts';
import { decisionRecord, testKey } from './test-support.ts';
import { verifyAuditLog } from './verify.ts';

const KEY = testKey();

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'portcullis-audit-'));
});
afterEach(async () => {
  vi.useRealTimers();
  await rm(dir, { recursive: true, force: true });
});

/** The lines a stream received, and whether it was flushed. */
function memoryStream(): { lines: string[]; flushed: number; write(line: string): void; flushSync(): void } {
  return {
    lines: [],
    flushed: 0,
    write(line) {
      this.lines.push(...line.split('\n').filter((l) => l !== ''));
    },
    flushSync() {
      this.flushed++;
    },
  };
}

function memoryLog(): { log: AuditLogOptions['log']; lines: string[] } {
  const lines: string[] = [];
  return { log: pino({ level: 'info' }, { write: (line: string) => lines.push(line) }), lines };
}

let ids = 0;
function options(overrides: Partial<AuditLogOptions> = {}): AuditLogOptions {
  return { tenant: 'finance', namespace: 'finance', agent: 'finance-agent', signer: KEY.signer, stream: memoryStream(), log: memoryLog().log, newChainId: () => `chain-${++ids}`, ...overrides };
}

const entriesOf = (lines: string[]): AuditEntry[] => lines.map((line) => (JSON.parse(line) as { audit: AuditEntry }).audit);

describe('AuditLog', () => {
  it('writes the opening entry, one entry per decision and a checkpoint every N, as pino lines on the stream and in the file', async () => {
    const stream = memoryStream();
    const file = join(dir, 'logs', 'audit.log');
    const audit = await AuditLog.open(options({ stream, file, checkpointRecords: 2 }));
    for (let i = 0; i < 5; i++) audit.record(decisionRecord({ decision: { ...decisionRecord().decision, decisionId: `d-${i}` } }));
    await audit.close();
    // The opening entry counts among the first N; the final checkpoint closes the chain.
    expect(entriesOf(stream.lines).map((e) => e.type)).toEqual(['open', 'decision', 'checkpoint', 'decision', 'decision', 'checkpoint', 'decision', 'decision', 'checkpoint', 'checkpoint']);
    expect(entriesOf(stream.lines).map((e) => e.seq)).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    expect(entriesOf(stream.lines).map((e) => e.type === 'checkpoint' && e.final)).toEqual([false, false, false, false, false, false, false, false, false, true]);
    const written = (await readFile(file, 'utf8')).split('\n').filter((l) => l !== '');
    expect(written).toEqual(stream.lines);
    expect(JSON.parse(stream.lines[1] ?? '')).toMatchObject({ level: 30, component: 'audit', msg: 'audit decision' });
    expect(stream.flushed).toBe(1);
    const report = verifyAuditLog(await readFile(file, 'utf8'), { pinned: KEY.pinned });
    expect(report.findings).toEqual([]);
    expect(report.chains[0]).toMatchObject({ closed: true, decisions: 5, checkpoints: 4 });
  });

  it('records the DESIGN.md fields of a decision, the params by digest only', async () => {
    const stream = memoryStream();
    const audit = await AuditLog.open(options({ stream }));
    const record = decisionRecord();
    audit.record(record);
    await audit.close();
    const entry = entriesOf(stream.lines)[1] as DecisionEntry;
    expect(entry).toMatchObject({
      type: 'decision',
      time: '2026-11-23T14:00:00.000Z',
      tenant: 'finance',
      namespace: 'finance',
      agent: 'finance-agent',
      user: 'alice',
      delegation: [],
      tool: 'stripe-payments',
      action: 'create_payment',
      paramsDigest: `sha256:${sha256Hex(canonicalJson({ account: '1234567890', amount: 4200, currency: 'USD' }))}`,
      decision: 'allow',
      enforced: true,
      policy: 'payments',
      rule: 'small-payments',
      revision: '7-aaaaaaaaaaaaaaaa',
      reasons: [],
      latencyMs: 0.123,
      decisionId: 'decision-1',
      transport: 'grpc',
      traceparent: '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01',
    });
    expect(stream.lines[1]).not.toContain('1234567890');
  });

  it('records what sanitize redacted and when a refused call may retry, by path and detector, never the text', async () => {
    const stream = memoryStream();
    const audit = await AuditLog.open(options({ stream }));
    const base = decisionRecord();
    audit.record({ ...base, decision: { ...base.decision, decision: 'sanitize', redacted: ['patient.ssn:ssn'], params: { patient: { ssn: '[REDACTED]' } } } });
    audit.record({ ...base, decision: { ...base.decision, decision: 'deny', rule: 'budgets[0]', retryAfterSeconds: 3600, resetsAt: '2026-11-24T00:00:00-05:00' } });
    await audit.close();
    const [sanitized, refused] = entriesOf(stream.lines).slice(1, 3) as DecisionEntry[];
    expect(sanitized).toMatchObject({ decision: 'sanitize', redacted: ['patient.ssn:ssn'] });
    expect(sanitized).not.toHaveProperty('params');
    expect(refused).toMatchObject({ retryAfterSeconds: 3600, resetsAt: '2026-11-24T00:00:00-05:00' });
  });

  it("records what became of a redacted answer as a response entry of the same decision, timed at the answer's end", async () => {
    const stream = memoryStream();
    const audit = await AuditLog.open(options({ stream }));
    const record = decisionRecord({ latencySeconds: 2.5 });
    audit.record(decisionRecord());
    audit.record({ ...record, response: { redacted: ['record.ssn:ssn'], outcome: 'complete' } });
    await audit.close();
    const response = entriesOf(stream.lines)[2] as ResponseEntry;
    expect(response).toMatchObject({ type: 'response', decisionId: 'decision-1', time: '2026-11-23T14:00:02.500Z', response: { redacted: ['record.ssn:ssn'], outcome: 'complete' } });
    expect(JSON.parse(stream.lines[2] ?? '')).toMatchObject({ msg: 'audit response' });
    const report = verifyAuditLog(stream.lines.join('\n'), { pinned: KEY.pinned });
    expect(report.findings).toEqual([]);
    expect(report.chains[0]?.decisions).toBe(1);
  });

  it('signs what is unsigned every T, and nothing when nothing is', async () => {
    vi.useFakeTimers({ toFake: ['setInterval', 'clearInterval'] });
    const stream = memoryStream();
    const audit = await AuditLog.open(options({ stream, checkpointRecords: 1000, checkpointIntervalMs: 5000 }));
    audit.record(decisionRecord());
    vi.advanceTimersByTime(5000);
    expect(entriesOf(stream.lines).map((e) => e.type)).toEqual(['open', 'decision', 'checkpoint']);
    vi.advanceTimersByTime(15_000);
    expect(stream.lines).toHaveLength(3);
    await audit.close();
  });

  it('opens a new chain after the last entry of the file it appends to', async () => {
    const file = join(dir, 'audit.log');
    const first = await AuditLog.open(options({ file }));
    first.record(decisionRecord());
    await first.close();
    const second = await AuditLog.open(options({ file }));
    second.record(decisionRecord());
    await second.close();
    const entries = entriesOf((await readFile(file, 'utf8')).split('\n').filter((l) => l !== ''));
    const opening = entries.find((e) => e.chain === second.chainId && e.type === 'open') as OpenEntry;
    const last = entries.filter((e) => e.chain === first.chainId).at(-1);
    expect(opening.after).toEqual({ chain: first.chainId, seq: last?.seq, hash: last?.hash });
    expect(verifyAuditLog(await readFile(file, 'utf8'), { pinned: KEY.pinned }).findings).toEqual([]);
  });

  it('starts on a line of its own after a line cut short by a crash, which verify calls torn', async () => {
    const file = join(dir, 'audit.log');
    const first = await AuditLog.open(options({ file }));
    await first.close();
    await appendFile(file, '{"level":30,"time":1,"component":"audit","audit":{"v":1,"type":"deci');
    const second = await AuditLog.open(options({ file }));
    await second.close();
    const report = verifyAuditLog(await readFile(file, 'utf8'), { pinned: KEY.pinned });
    expect(report.findings.map((f) => f.kind)).toEqual(['torn']);
    expect(report.chains.map((c) => c.closed)).toEqual([true, true]);
  });

  it('without a key, signs with an ephemeral one, named in the opening entry, and warns', async () => {
    const stream = memoryStream();
    const { log, lines } = memoryLog();
    const audit = await AuditLog.open(options({ stream, log, signer: undefined }));
    await audit.close();
    const opening = entriesOf(stream.lines)[0] as OpenEntry;
    expect(opening.key).toMatchObject({ ephemeral: true, jwk: { kty: 'OKP', crv: 'Ed25519' } });
    expect(lines.join('')).toMatch(/ephemeral key/);
    expect(verifyAuditLog(stream.lines.join('\n')).verdict).toBe('verified');
  });

  it('refuses a decision after close: it could not be recorded', async () => {
    const audit = await AuditLog.open(options());
    await audit.close();
    expect(() => { audit.record(decisionRecord()); }).toThrow(AuditLogClosedError);
  });

  it('refuses checkpoint settings that make no sense', async () => {
    await expect(AuditLog.open(options({ checkpointRecords: 0 }))).rejects.toThrow(/checkpointRecords must be a whole number/);
    await expect(AuditLog.open(options({ checkpointIntervalMs: -1 }))).rejects.toThrow(/checkpointIntervalMs must be a positive number/);
  });

  it("records every decision of the Authorizer it observes, refusals included", async () => {
    const stream = memoryStream();
    const audit = await AuditLog.open(options({ stream }));
    const authorizer = new Authorizer({ identity: { namespace: 'finance', agent: 'finance-agent' }, tenant: 'finance', policy: () => undefined, metrics: createSidecarMetrics(), observers: [audit.observer] });
    const denied = await authorizer.authorize({ tool: 'stripe-payments', action: 'create_payment', params: { amount: 1 } }, { transport: 'http' });
    const refused = authorizer.refuse('the body is not JSON', { transport: 'grpc' });
    await audit.close();
    const decisions = entriesOf(stream.lines).filter((e): e is DecisionEntry => e.type === 'decision');
    expect(decisions.map((e) => [e.decisionId, e.rule, e.tool])).toEqual([
      [denied.decisionId, 'portcullis:no-bundle', 'stripe-payments'],
      [refused.decisionId, 'portcullis:uninspectable-request', ''],
    ]);
    expect(decisions[1]?.paramsDigest).toBeNull();
  });
});
