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


  it("the unsigned end of a crashed chain rewritten and rehashed: the next chain was opened after another record", () => {
    const lines = logOf([{ ...SPEC, closed: false }, { ...SPEC, id: NEXT_CHAIN, decisions: 2 }]);
    const at = indexOfSeq(lines, 12, CHAIN);
    lines[at] = editLine(lines[at] ?? '', (entry) => (entry.decision = 'allow'), true);
    const report = verify(lines);
    expect(only(report, 'edited')).toEqual([expect.objectContaining({ seq: 12, line: at + 1, message: expect.stringMatching(/is not the one chain 22222222 .* was opened after/) as unknown })]);
  });
});

/** Another log, written by another run with the same key: every chain in it is genuine. */
const OTHER_LOG_CHAIN = '99999999-9999-4999-8999-999999999999';
const otherLog = (): string[] => logOf([{ ...SPEC, id: OTHER_LOG_CHAIN, decisions: 3 }]);

describe('verifyAuditLog joins chains only where their after links say so', () => {
  it('a genuine chain of another log spliced in before a chain: the chain after it names no entry it follows', () => {
    const lines = [...otherLog(), ...cleanLog()];
    const opening = indexOfSeq(lines, 0, CHAIN);
    const report = verify(lines);
    expect(report.verdict).toBe('tampered');
    expect(report.findings).toEqual([
      expect.objectContaining({ kind: 'spliced', chain: CHAIN, line: opening + 1, message: expect.stringMatching(/chain 11111111 names no entry it was opened after, yet follows record seq 4 of chain 99999999 .*joined to this one/) as unknown }),
    ]);
  });

  it('a genuine chain of another log spliced in inside a chain: where it opens, and the records of the chain that go on after it', () => {
    const lines = cleanLog();
    const at = indexOfSeq(lines, 7);
    lines.splice(at, 0, ...otherLog());
    const report = verify(lines);
    expect(report.verdict).toBe('tampered');
    expect(report.findings.map((f) => [f.kind, f.chain])).toEqual([
      ['spliced', OTHER_LOG_CHAIN],
      ['spliced', CHAIN],
    ]);
    expect(report.findings[0]?.message).toMatch(/chain 99999999 names no entry it was opened after, yet follows record seq 6 of chain 11111111/);
    expect(report.findings[1]?.message).toMatch(/records of chain 11111111 after chain 99999999 opened .*: a chain was put inside another/);
  });

  it('a genuine chain of another log appended after the last chain', () => {
    const report = verify([...cleanLog(), ...otherLog()]);
    expect(report.findings).toEqual([expect.objectContaining({ kind: 'spliced', chain: OTHER_LOG_CHAIN })]);
  });

  it('a genuine chain put between a chain and the one opened after it: the link skips it', () => {
    const lines = logOf([SPEC, { ...SPEC, id: NEXT_CHAIN, decisions: 2 }]);
    lines.splice(indexOfSeq(lines, 0, NEXT_CHAIN), 0, ...otherLog());
    const report = verify(lines);
    expect(report.findings.map((f) => [f.kind, f.chain])).toEqual([
      ['spliced', OTHER_LOG_CHAIN],
      ['spliced', NEXT_CHAIN],
    ]);
    expect(report.findings[1]?.message).toMatch(/chain 22222222 was opened right after record seq 13 .*, yet follows record seq 4 of chain 99999999 .*: entries were put between them/);
  });

  it('runs of a sidecar without a file, each on its own: verified one by one', () => {
    expect(verify(otherLog()).verdict).toBe('verified');
    expect(verify(cleanLog()).verdict).toBe('verified');
  });
});

describe('verifyAuditLog reads lines strictly', () => {
  /** The audit line of seq 2, a deny, with a first "decision" member saying allow: JSON.parse keeps the last, other readers the first. */
  const withDuplicateDecision = (): { lines: string[]; at: number } => {
    const lines = cleanLog();
    const at = indexOfSeq(lines, 2);
    expect(entryOf(lines[at] ?? '').decision).toBe('deny');
    lines[at] = (lines[at] ?? '').replace('"decision":"deny"', '"decision":"allow","decision":"deny"');
    return { lines, at };
  };

  it('an entry with a duplicated decision key, the first saying allow: malformed, whatever its hash says', () => {
    const { lines, at } = withDuplicateDecision();
    const report = verify(lines);
    expect(report.verdict).toBe('tampered');
    expect(report.findings).toEqual([expect.objectContaining({ kind: 'malformed', line: at + 1, seq: 2, message: expect.stringMatching(/not strict JSON \(duplicate key "decision" at position \d+\): JSON readers differ/) as unknown })]);
  });

  it('a line with two audit members: malformed', () => {
    const lines = cleanLog();
    const at = indexOfSeq(lines, 2);
    const decoy = JSON.stringify({ ...entryOf(lines[at] ?? ''), decision: 'allow' });
    lines[at] = (lines[at] ?? '').replace('{"level":30,', `{"level":30,"audit":${decoy},`);
    expect(verify(lines).findings).toEqual([expect.objectContaining({ kind: 'malformed', line: at + 1, message: expect.stringMatching(/duplicate key "audit"/) as unknown })]);
  });

  it.each([
    ['a junk top-level object', '{"junk":true}', /a JSON object that is neither an audit entry .* nor a log line/],
    ['an entry without its audit member, as a bare object', JSON.stringify({ v: 1, type: 'decision', decision: 'allow' }), /neither an audit entry/],
    ['a JSON array', '[{"audit":{}}]', /JSON that is not an object/],
    ['a JSON string', '"audit"', /JSON that is not an object/],
    ['plain text', 'approved by the CISO', /text that is not JSON: "approved by the CISO"/],
    ['an empty line', '', /an empty line/],
  ])('%s amid the log: foreign', (_name, junk, message) => {
    const lines = cleanLog();
    const at = indexOfSeq(lines, 5);
    lines.splice(at, 0, junk);
    const report = verify(lines);
    expect(report.verdict).toBe('tampered');
    expect(report.findings).toEqual([expect.objectContaining({ kind: 'foreign', line: at + 1, message: expect.stringMatching(message) as unknown })]);
  });

  it('an audit member that is not an object: malformed', () => {
    const lines = cleanLog();
    lines.push('{"level":30,"time":1,"audit":"allow"}');
    expect(verify(lines).findings).toEqual([expect.objectContaining({ kind: 'malformed', line: lines.length, message: expect.stringMatching(/audit member is not an object/) as unknown })]);
  });

  it('log lines with a key twice, as pino writes a call that repeats a base field: log lines still', () => {
    const lines = cleanLog();
    lines.splice(3, 0, '{"level":30,"time":1,"component":"sidecar","tenant":"finance","tenant":"finance","msg":"bundle loaded"}');
    expect(verify(lines).findings).toEqual([]);
  });
});

describe('verifyAuditLog on input without entries', () => {
  it('an empty input: empty, and it proves nothing', () => {
    const report = verifyAuditLog('', { pinned: KEY.pinned });
    expect(report.verdict).toBe('empty');
    expect(report.findings).toEqual([expect.objectContaining({ kind: 'no-records', message: 'the input is empty: it proves nothing' })]);
  });

  it('log lines only: empty', () => {
    const report = verify(['{"level":30,"time":1,"msg":"sidecar started"}']);
    expect(report.verdict).toBe('empty');
    expect(report.findings).toEqual([expect.objectContaining({ kind: 'no-records', message: expect.stringMatching(/no audit entry \(1 other line\)/) as unknown })]);
  });

  it('junk only: tampered', () => {
    const report = verify(['{"junk":true}']);
    expect(report.verdict).toBe('tampered');
    expect(kinds(report)).toEqual(['foreign', 'no-records']);
  });
});
