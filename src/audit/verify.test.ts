import { sign } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { checkpointMessage } from './entry.ts';
import type { ChainSpec } from './test-support.ts';
import { chainEntries, editLine, entryOf, indexOfSeq, joined, lineOf, logOf, testKey } from './test-support.ts';
import type { Finding, VerifyReport } from './verify.ts';
import { verifyAuditLog } from './verify.ts';

const KEY = testKey();
const OTHER_KEY = testKey();
const CHAIN = '11111111-1111-4111-8111-111111111111';
const NEXT_CHAIN = '22222222-2222-4222-8222-222222222222';

/** One clean run: open, ten decisions with a checkpoint every four, the final checkpoint; seq 0–13. */
const SPEC: Omit<ChainSpec, 'after'> = { id: CHAIN, key: KEY, decisions: 10, checkpointEvery: 4, closed: true };

function cleanLog(): string[] {
  return logOf([SPEC], 3);
}

function verify(lines: string[], pinned = KEY.pinned): VerifyReport {
  return verifyAuditLog(joined(lines), { pinned });
}

const kinds = (report: VerifyReport): string[] => report.findings.map((f) => f.kind);
const only = (report: VerifyReport, kind: Finding['kind']): Finding[] => report.findings.filter((f) => f.kind === kind);

describe('verifyAuditLog on an untouched log', () => {
  it('verifies a closed chain amid ordinary log lines, with the pinned key', () => {
    const lines = cleanLog();
    const report = verify(lines);
    expect(report.findings).toEqual([]);
    expect(report.verdict).toBe('verified');
    expect(report.chains).toEqual([
      expect.objectContaining({ chain: CHAIN, tenant: 'finance', agent: 'finance-agent', entries: 14, decisions: 10, checkpoints: 3, lastSeq: 13, signedThrough: 13, closed: true, kid: KEY.signer.kid, ephemeral: false }),
    ]);
    expect(report.lines.other).toBeGreaterThan(0);
    expect(report.lines.audit).toBe(14);
    expect(report.notices).toEqual([]);
  });

  it('checks the chain against the key it names when no key is pinned, and says what that proves', () => {
    const report = verifyAuditLog(joined(cleanLog()));
    expect(report.verdict).toBe('verified');
    expect(report.notices.join('\n')).toMatch(/no key pinned/);
  });

  it('verifies chains of restarts in one file, each opened after the last entry before it', () => {
    const report = verify(logOf([SPEC, { ...SPEC, id: NEXT_CHAIN, decisions: 3 }]));
    expect(report.findings).toEqual([]);
    expect(report.chains.map((c) => [c.chain, c.closed])).toEqual([[CHAIN, true], [NEXT_CHAIN, true]]);
  });

  it('counts a crashed chain as signed through the entry the next chain was opened after', () => {
    const report = verify(logOf([{ ...SPEC, closed: false }, { ...SPEC, id: NEXT_CHAIN, decisions: 2 }]));
    expect(report.findings).toEqual([]);
    expect(report.chains[0]).toMatchObject({ closed: false, signedThrough: 12 });
    expect(report.notices.join('\n')).toMatch(/was not closed .* vouches for its records through seq 12/);
  });

  it('calls incomplete, not tampered, a file that begins after a chain kept in an older file', () => {
    const lines = logOf([SPEC, { ...SPEC, id: NEXT_CHAIN, decisions: 2 }]);
    const report = verify(lines.slice(indexOfSeq(lines, 0, NEXT_CHAIN)));
    expect(report.verdict).toBe('incomplete');
    expect(report.findings).toEqual([expect.objectContaining({ kind: 'head-missing', message: expect.stringMatching(/begins with chain 22222222, opened after seq 13 of chain 11111111/) as unknown })]);
  });

  it('calls incomplete a file that begins within a chain (rotated while the writer ran)', () => {
    const lines = cleanLog();
    const report = verify(lines.slice(indexOfSeq(lines, 6)));
    expect(report.verdict).toBe('incomplete');
    expect(report.findings).toEqual([expect.objectContaining({ kind: 'head-missing', message: expect.stringMatching(/begins at seq 6 of chain 11111111 .*records seq 0–5 are in an older file/) as unknown })]);
  });
});

describe('verifyAuditLog finds each kind of tampering', () => {
  it('an edited field: the record whose content no longer matches its hash, by seq and line', () => {
    const lines = cleanLog();
    const at = indexOfSeq(lines, 3);
    lines[at] = editLine(lines[at] ?? '', (entry) => (entry.decision = 'allow'));
    const report = verify(lines);
    expect(report.verdict).toBe('tampered');
    expect(report.findings).toEqual([expect.objectContaining({ kind: 'edited', seq: 3, line: at + 1 })]);
    expect(report.findings[0]?.message).toMatch(new RegExp(`^line ${at + 1}: record seq 3 .* was changed`));
  });

  it('an edited field with the hash recomputed: the next record was chained to another one', () => {
    const lines = cleanLog();
    const at = indexOfSeq(lines, 3);
    lines[at] = editLine(lines[at] ?? '', (entry) => (entry.reasons = ['within limits']), true);
    const report = verify(lines);
    expect(report.findings).toEqual([expect.objectContaining({ kind: 'edited', seq: 3, line: at + 1 })]);
    expect(report.findings[0]?.message).toMatch(/is not the record seq 4 .* was chained to/);
  });

  it('a dropped record: the missing seq, between which lines', () => {
    const lines = cleanLog();
    const at = indexOfSeq(lines, 7);
    lines.splice(at, 1);
    const report = verify(lines);
    expect(report.findings).toEqual([expect.objectContaining({ kind: 'dropped', seq: 7 })]);
    expect(report.findings[0]?.message).toMatch(/record seq 7 of chain 11111111 is missing \(between line \d+ and line \d+\): dropped/);
  });

  it('several dropped records: one range', () => {
    const lines = cleanLog().filter((line) => ![6, 7, 8].includes(Number(line.includes('"audit"') ? entryOf(line).seq : -1)));
    expect(verify(lines).findings).toEqual([expect.objectContaining({ kind: 'dropped', seq: 6, message: expect.stringMatching(/records seq 6–8 /) as unknown })]);
  });

  it('an inserted record: a forged second record for a seq, rehashed, is named by its line', () => {
    const lines = cleanLog();
    const at = indexOfSeq(lines, 2);
    const forged = editLine(lines[at] ?? '', (entry) => (entry.decision = 'allow'), true);
    lines.splice(at + 1, 0, forged);
    const report = verify(lines);
    expect(report.findings).toEqual([expect.objectContaining({ kind: 'inserted', seq: 2, line: at + 2 })]);
  });

  it('an inserted copy of a record: named as a repeat of the original line', () => {
    const lines = cleanLog();
    const at = indexOfSeq(lines, 2);
    lines.push(lines[at] ?? '');
    const report = verify(lines);
    expect(report.findings).toEqual([expect.objectContaining({ kind: 'duplicated', seq: 2, line: lines.length, message: expect.stringMatching(new RegExp(`repeats line ${at + 1}`)) as unknown })]);
  });

  it('two records swapped: the one that comes after a greater seq', () => {
    const lines = cleanLog();
    const first = indexOfSeq(lines, 6);
    const second = indexOfSeq(lines, 7);
    [lines[first], lines[second]] = [lines[second] ?? '', lines[first] ?? ''];
    const report = verify(lines);
    expect(report.findings).toEqual([expect.objectContaining({ kind: 'reordered', seq: 6, line: second + 1 })]);
    expect(report.findings[0]?.message).toMatch(/record seq 6 .* comes after seq 7/);
  });

  it('a truncated log: the unsigned records and the missing closing checkpoint, as incomplete', () => {
    const lines = cleanLog();
    const report = verify(lines.slice(0, indexOfSeq(lines, 12) + 1));
    expect(kinds(report)).toEqual(['unsigned', 'unclosed']);
    expect(only(report, 'unsigned')[0]?.message).toMatch(/records seq 11–12 of chain 11111111 are not signed/);
    expect(report.verdict).toBe('incomplete');
  });

  it('a log cut mid-line: the torn last line', () => {
    const lines = cleanLog();
    const last = lines.length - 1;
    const line = lines[last] ?? '';
    lines[last] = line.slice(0, line.indexOf('"audit"') + 40);
    const report = verify(lines);
    expect(kinds(report)).toContain('torn');
    expect(report.verdict).toBe('incomplete');
  });

  it('a forged checkpoint: the signature does not verify', () => {
    const lines = cleanLog();
    const at = indexOfSeq(lines, 10);
    lines[at] = editLine(lines[at] ?? '', (entry) => (entry.sig = Buffer.from(sign(null, checkpointMessage(String(entry.hash)), OTHER_KEY.privateKey)).toString('base64url')));
    const report = verify(lines);
    expect(report.findings).toEqual([expect.objectContaining({ kind: 'bad-signature', seq: 10, line: at + 1 })]);
  });

  it('a checkpoint forged over rewritten records, signed with another key: that key is not pinned', () => {
    const lines = cleanLog();
    const end = indexOfSeq(lines, 12);
    const forged = chainEntries({ id: 'forged', key: OTHER_KEY, decisions: 1, checkpointEvery: 1, closed: true });
    const report = verify([...lines.slice(0, end + 1), ...forged.map(lineOf)]);
    expect(kinds(report)).toContain('untrusted-key');
  });

  it('the wrong key pinned: every chain signed with another key is untrusted', () => {
    const report = verify(cleanLog(), OTHER_KEY.pinned);
    expect(report.verdict).toBe('tampered');
    expect(only(report, 'untrusted-key')).toEqual([expect.objectContaining({ chain: CHAIN, message: expect.stringMatching(new RegExp(`signed with key ${KEY.signer.kid}, which is not a pinned key`)) as unknown })]);
  });

  it('a chain signed with an ephemeral key: untrusted once a key is pinned, and said to be ephemeral', () => {
    const report = verify(logOf([{ ...SPEC, key: testKey(true) }]));
    expect(only(report, 'untrusted-key')[0]?.message).toMatch(/an ephemeral key/);
  });

  it('records appended after the closing checkpoint', () => {
    const lines = cleanLog();
    const extra = chainEntries({ ...SPEC, decisions: 12 }).filter((entry) => entry.seq > 13 && entry.chain === CHAIN);
    const report = verify([...lines, ...extra.map(lineOf)]);
    expect(kinds(report)).toContain('inserted');
    expect(only(report, 'inserted')[0]?.message).toMatch(/after its closing checkpoint .*: added/);
  });

  it('a whole chain removed from between two others', () => {
    const lines = logOf([SPEC, { ...SPEC, id: NEXT_CHAIN, decisions: 2 }, { ...SPEC, id: '33333333-3333-4333-8333-333333333333', decisions: 2 }]);
    const middle = lines.filter((line) => !line.includes('"audit"') || entryOf(line).chain !== NEXT_CHAIN);
    const report = verify(middle);
    expect(report.findings).toEqual([expect.objectContaining({ kind: 'dropped', message: expect.stringMatching(/opened after seq \d+ of chain 22222222, which is not in the input: a whole chain was removed/) as unknown })]);
  });

  it("the end of a crashed chain removed: the next chain names the records that are gone", () => {
    const lines = logOf([{ ...SPEC, closed: false }, { ...SPEC, id: NEXT_CHAIN, decisions: 2 }]);
    const cut = lines.filter((line) => !(line.includes(CHAIN) && [11, 12].includes(Number(entryOf(line).seq))));
    const report = verify(cut);
    expect(only(report, 'dropped')[0]?.message).toMatch(/chain 11111111 ends at seq 10, but chain 22222222 .* was opened after its seq 12: records seq 11–12 are missing/);
  });

  it('an audit line that is no longer JSON, amid the log', () => {
    const lines = cleanLog();
    const at = indexOfSeq(lines, 4);
    lines[at] = (lines[at] ?? '').replace('"decision":', '"decision"');
    const report = verify(lines);
    expect(kinds(report)).toEqual(['unreadable', 'dropped']);
  });

  it('an entry whose shape is wrong', () => {
    const lines = cleanLog();
    const at = indexOfSeq(lines, 4);
    lines[at] = editLine(lines[at] ?? '', (entry) => (entry.hash = 'not a hash'));
    expect(verify(lines).findings).toEqual([expect.objectContaining({ kind: 'malformed', seq: 4, line: at + 1, message: expect.stringMatching(/hash is not 64 hex digits/) as unknown })]);
  });

  it('input without audit entries', () => {
    const report = verify(['{"level":30,"msg":"sidecar started"}', 'plain text']);
    expect(report.verdict).toBe('tampered');
    expect(kinds(report)).toEqual(['no-records']);
  });

  it("the unsigned end of a crashed chain rewritten and rehashed: the next chain was opened after another record", () => {
    const lines = logOf([{ ...SPEC, closed: false }, { ...SPEC, id: NEXT_CHAIN, decisions: 2 }]);
    const at = indexOfSeq(lines, 12, CHAIN);
    lines[at] = editLine(lines[at] ?? '', (entry) => (entry.decision = 'allow'), true);
    const report = verify(lines);
    expect(only(report, 'edited')).toEqual([expect.objectContaining({ seq: 12, line: at + 1, message: expect.stringMatching(/is not the one chain 22222222 .* was opened after/) as unknown })]);
  });
});
