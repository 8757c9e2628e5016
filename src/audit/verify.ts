// Verification of an audit log: reads it line by line (ordinary log lines
// are skipped), and finds every entry changed, dropped, inserted or
// reordered, every checkpoint whose signature does not verify, and what no
// checkpoint signs. Pure: lines in, a report out.
import type { KeyObject } from 'node:crypto';
import type { ChainRef, EntryType, OpenEntry } from './entry.ts';
import { AUDIT_LINE_KEY, checkpointMessage, entryHash, readAuditLine } from './entry.ts';
import { jwkThumbprint, publicKeyOfJwk, verifyCheckpointSignature } from './keys.ts';

export type FindingKind =
  /** An entry's content does not match its hash, or the next entry was chained to another one. */
  | 'edited'
  /** Entries missing from a chain, or a whole chain that a later one names. */
  | 'dropped'
  /** A second, different entry for a seq; a second opening entry; entries after the closing checkpoint. */
  | 'inserted'
  /** An entry repeated word for word. */
  | 'duplicated'
  /** An entry after one with a greater seq. */
  | 'reordered'
  /** Chains joined where no `after` link says so: a chain written to another log, put before, inside or after another. */
  | 'spliced'
  /** A checkpoint whose signature does not verify, or that names another key than its chain. */
  | 'bad-signature'
  /** A chain signed with a key the verifier did not pin. */
  | 'untrusted-key'
  /** An audit entry without what its type needs, or that two JSON readers would read differently (a key twice). */
  | 'malformed'
  /** An audit line that is not JSON, amid the log. */
  | 'unreadable'
  /** A line that is neither an audit entry nor a log line of the sidecar. */
  | 'foreign'
  /** Nothing to verify: no audit entry in the input. */
  | 'no-records'
  /** Entries no valid checkpoint signs. */
  | 'unsigned'
  /** A chain without its closing checkpoint. */
  | 'unclosed'
  /** An unreadable last line, or one just before a chain opens: what a crash mid-write leaves. */
  | 'torn'
  /** The input begins after the start of its first chain, or after a chain it does not hold: rotated, or cut at the front. */
  | 'head-missing';

/** Findings that say the log is not complete to its end, not that something in it was changed. */
export const INCOMPLETE_KINDS: ReadonlySet<FindingKind> = new Set<FindingKind>(['unsigned', 'unclosed', 'torn', 'head-missing']);

export interface Finding {
  kind: FindingKind;
  message: string;
  /** 1-based line of the input the finding is about. */
  line?: number;
  chain?: string;
  seq?: number;
}

export interface ChainSummary {
  chain: string;
  tenant?: string;
  namespace?: string;
  agent?: string;
  firstLine: number;
  lastLine: number;
  entries: number;
  decisions: number;
  checkpoints: number;
  /** The first seq the input holds: 0 unless it begins within the chain. */
  firstSeq: number;
  lastSeq: number;
  /** The last seq a valid checkpoint (or a later chain opened after it) signs; -1 for none. */
  signedThrough: number;
  closed: boolean;
  kid?: string;
  ephemeral?: boolean;
}

export type Verdict = 'verified' | 'tampered' | 'incomplete' | 'empty';

export interface VerifyReport {
  /** verified: no finding; incomplete: only findings of INCOMPLETE_KINDS; empty: no audit entry and nothing else wrong; tampered: any other. */
  verdict: Verdict;
  chains: ChainSummary[];
  findings: Finding[];
  notices: string[];
  /** other: log lines and foreign lines. */
  lines: { total: number; audit: number; other: number };
}

export interface VerifyOptions {
  /** The public keys checkpoints must be signed with, by thumbprint. Without them, each chain is checked against the key it names. */
  pinned?: ReadonlyMap<string, KeyObject>;
}

/** What the verifier keeps of one entry. */
interface Seen {
  seq: number;
  line: number;
  type: EntryType;
  hash: string;
  prev: string | null;
  /** The hash matches the content. */
  intact: boolean;
  kid?: string;
  sig?: string;
  final?: boolean;
  open?: Pick<OpenEntry, 'tenant' | 'namespace' | 'agent' | 'key' | 'after'>;
}

interface ChainState {
  id: string;
  seen: Seen[];
  malformedSeqs: Set<number>;
}

interface Analysis {
  state: ChainState;
  canonical: Map<number, Seen>;
  lastSeq: number;
  signedThrough: number;
  /** Vouched for by a later chain opened after this seq, whose own checkpoint is valid. */
  vouchedThrough: number;
  finalValid?: Seen;
  finalSeen: boolean;
  open?: Seen;
}

/** "record seq 7", "is" or "records seq 7–9", "are". */
const records = (from: number, to: number): [string, string] => (from === to ? [`record seq ${from}`, 'is'] : [`records seq ${from}–${to}`, 'are']);
const lineSpan = (from: number, to: number): string => (from === to ? `line ${from}` : `lines ${from}–${to}`);
const missingRecords = (from: number, to: number, chain: string): string => {
  const [what, are] = records(from, to);
  return `${what} of chain ${short(chain)} ${are} missing`;
};
const unsignedRecords = (from: number, to: number, chain: string): string => {
  const [what, are] = records(from, to);
  return `${what} of chain ${short(chain)} ${are} not signed by a valid checkpoint`;
};
const short = (id: string): string => id.slice(0, 8);

function seenOf(entry: ReturnType<typeof readAuditLine> & { kind: 'entry' }, line: number): Seen {
  const e = entry.entry;
  const seen: Seen = { seq: e.seq, line, type: e.type, hash: e.hash, prev: e.prev, intact: entryHash(e as unknown as Record<string, unknown>) === e.hash };
  if (e.type === 'checkpoint') Object.assign(seen, { kid: e.kid, sig: e.sig, final: e.final });
  if (e.type === 'open') seen.open = { tenant: e.tenant, namespace: e.namespace, agent: e.agent, key: e.key, ...(e.after === undefined ? {} : { after: e.after }) };
  return seen;
}

const strictUtf8 = new TextDecoder('utf-8', { fatal: true });
const AUDIT_MEMBER_BYTES = Buffer.from(`"${AUDIT_LINE_KEY}"`);

export class AuditVerifier {
  private readonly options: VerifyOptions;
  private readonly chains = new Map<string, ChainState>();
  private readonly findings: Finding[] = [];
  private lineNumber = 0;
  private auditLines = 0;
  /** An unreadable line not yet judged: torn if the log ends or a chain opens next. */
  private pendingUnreadable: number | undefined;

  constructor(options: VerifyOptions = {}) {
    this.options = options;
  }

  push(text: string): void {
    const line = ++this.lineNumber;
    const read = readAuditLine(text);
    if (read.kind === 'log') return;
    if (read.kind === 'foreign') {
      this.findings.push({ kind: 'foreign', line, message: `line ${line}: not an audit entry, nor a log line of the sidecar: ${read.reason}` });
      return;
    }
    this.auditLines++;
    this.judgePendingUnreadable(read.kind === 'entry' && read.entry.type === 'open');
    if (read.kind === 'unreadable') {
      this.pendingUnreadable = line;
    } else if (read.kind === 'malformed') {
      this.findings.push({ kind: 'malformed', line, message: `line ${line}: audit entry is malformed: ${read.reason}`, ...(read.chain === undefined ? {} : { chain: read.chain }), ...(read.seq === undefined ? {} : { seq: read.seq }) });
      if (read.chain !== undefined && read.seq !== undefined) this.chainState(read.chain).malformedSeqs.add(read.seq);
    } else {
      this.chainState(read.entry.chain).seen.push(seenOf(read, line));
    }
  }

  /** One line as bytes: a line that is not UTF-8 is not read some other way (a replacement character in place of its bytes). */
  pushBytes(bytes: Uint8Array): void {
    let text: string;
    try {
      text = strictUtf8.decode(bytes);
    } catch {
      const line = ++this.lineNumber;
      if (Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).includes(AUDIT_MEMBER_BYTES)) {
        this.auditLines++;
        this.judgePendingUnreadable(false);
        this.pendingUnreadable = line;
      } else {
        this.findings.push({ kind: 'foreign', line, message: `line ${line}: not an audit entry, nor a log line of the sidecar: text that is not UTF-8` });
      }
      return;
    }
    this.push(text);
  }

  finish(): VerifyReport {
    this.judgePendingUnreadable(true);
    const findings = [...this.findings];
    const notices: string[] = [];
    const analyses = [...this.chains.values()].filter((state) => state.seen.length > 0).map((state, i) => analyzeChain(state, i === 0, this.options.pinned, findings, notices));
    if (analyses.length === 0) findings.push({ kind: 'no-records', message: this.lineNumber === 0 ? 'the input is empty: it proves nothing' : `the input holds no audit entry (${this.lineNumber} other line${this.lineNumber === 1 ? '' : 's'}): it proves nothing` });
    reportSplices(analyses, linkChains(analyses, findings), findings);
    for (const analysis of analyses) judgeTail(analysis, findings, notices);
    if (this.options.pinned === undefined) {
      notices.push('no key pinned: each chain was checked against the key it names itself, which proves it was not changed after signing, not who signed it; pass --key to pin the key');
      for (const { state, open } of analyses) {
        if (open?.open?.key.ephemeral === true) notices.push(`chain ${short(state.id)} is signed with an ephemeral key (${open.open.key.kid}), made when its writer started and kept nowhere`);
      }
    }
    findings.sort((a, b) => (a.line ?? Infinity) - (b.line ?? Infinity));
    return {
      verdict: verdictOf(findings),
      chains: analyses.map(summaryOf),
      findings,
      notices,
      lines: { total: this.lineNumber, audit: this.auditLines, other: this.lineNumber - this.auditLines },
    };
  }

  private judgePendingUnreadable(torn: boolean): void {
    const line = this.pendingUnreadable;
    if (line === undefined) return;
    this.pendingUnreadable = undefined;
    this.findings.push(
      torn
        ? { kind: 'torn', line, message: `line ${line}: an audit line cut short, as a crash mid-write leaves it` }
        : { kind: 'unreadable', line, message: `line ${line}: an audit line that is not valid JSON: it was changed or cut` },
    );
  }

  private chainState(id: string): ChainState {
    let state = this.chains.get(id);
    if (state === undefined) {
      state = { id, seen: [], malformedSeqs: new Set() };
      this.chains.set(id, state);
    }
    return state;
  }
}

function verdictOf(findings: readonly Finding[]): Verdict {
  if (findings.some((finding) => finding.kind !== 'no-records' && !INCOMPLETE_KINDS.has(finding.kind))) return 'tampered';
  if (findings.some((finding) => finding.kind === 'no-records')) return 'empty';
  return findings.length > 0 ? 'incomplete' : 'verified';
}

/** Verifies a whole log held in memory. */
export function verifyAuditLog(text: string, options: VerifyOptions = {}): VerifyReport {
  const verifier = new AuditVerifier(options);
  const lines = text.split('\n');
  // A final newline ends the last line; it does not start another.
  if (lines.at(-1) === '') lines.pop();
  for (const line of lines) verifier.push(line);
  return verifier.finish();
}

function finding(kind: FindingKind, state: ChainState, at: Seen | undefined, message: string): Finding {
  return { kind, chain: state.id, ...(at === undefined ? {} : { line: at.line, seq: at.seq }), message };
}

/**
 * Of several entries with one seq, the one the chain holds: intact first, then
 * the one the next entry was chained to, then the one in its place between its
 * neighbours; the first in the log when nothing tells them apart.
 */
function mostLikelyGenuine(list: Seen[], before: Seen[], after: Seen[]): Seen {
  const score = (e: Seen): number =>
    (e.intact ? 4 : 0) + (after.some((n) => n.prev === e.hash) ? 2 : 0) + (before.some((p) => p.line < e.line) && after.some((n) => n.line > e.line) ? 1 : 0);
  return list.reduce((best, e) => (score(e) > score(best) ? e : best));
}

/** The first and last line of some entries. */
function spanOf(entries: Iterable<Seen>, keep: (e: Seen) => boolean): { first: Seen; last: Seen } | undefined {
  let first: Seen | undefined;
  let last: Seen | undefined;
  for (const e of entries) {
    if (!keep(e)) continue;
    if (first === undefined || e.line < first.line) first = e;
    if (last === undefined || e.line > last.line) last = e;
  }
  return first === undefined || last === undefined ? undefined : { first, last };
}

/** One entry per seq (see mostLikelyGenuine); the others are reported as inserted or duplicated. */
function canonicalEntries(state: ChainState, findings: Finding[]): Map<number, Seen> {
  const bySeq = new Map<number, Seen[]>();
  for (const seen of state.seen) {
    const list = bySeq.get(seen.seq);
    if (list === undefined) bySeq.set(seen.seq, [seen]);
    else list.push(seen);
  }
  const canonical = new Map<number, Seen>();
  for (const [seq, list] of bySeq) {
    const genuine = mostLikelyGenuine(list, bySeq.get(seq - 1) ?? [], bySeq.get(seq + 1) ?? []);
    canonical.set(seq, genuine);
    for (const other of list) {
      if (other === genuine) continue;
      if (other.hash === genuine.hash && other.intact === genuine.intact) {
        findings.push(finding('duplicated', state, other, `line ${other.line}: record seq ${seq} of chain ${short(state.id)} repeats line ${genuine.line}: it was inserted again`));
      } else {
        findings.push(finding('inserted', state, other, `line ${other.line}: a second record seq ${seq} of chain ${short(state.id)}, other than line ${genuine.line} that the chain continues from: it was inserted`));
      }
    }
  }
  return canonical;
}

function reportEditsAndOrder(state: ChainState, canonical: Map<number, Seen>, findings: Finding[]): void {
  let greatest: Seen | undefined;
  for (const seen of state.seen) {
    if (canonical.get(seen.seq) !== seen) continue;
    if (!seen.intact) {
      findings.push(finding('edited', state, seen, `line ${seen.line}: record seq ${seen.seq} of chain ${short(state.id)} was changed: its content does not match its hash`));
    }
    if (seen.type === 'open' && seen.seq > 0) {
      findings.push(finding('inserted', state, seen, `line ${seen.line}: an opening entry at seq ${seen.seq} of chain ${short(state.id)}: only seq 0 opens a chain`));
    }
    if (seen.seq === 0 && seen.type !== 'open') {
      findings.push(finding('malformed', state, seen, `line ${seen.line}: chain ${short(state.id)} starts with a ${seen.type} entry, not an opening entry`));
    }
    if (greatest !== undefined && seen.seq < greatest.seq) {
      findings.push(finding('reordered', state, seen, `line ${seen.line}: record seq ${seen.seq} of chain ${short(state.id)} comes after seq ${greatest.seq} (line ${greatest.line}): records were reordered`));
    } else {
      greatest = seen;
    }
  }
}

function reportLinks(state: ChainState, canonical: Map<number, Seen>, findings: Finding[]): void {
  for (const [seq, seen] of canonical) {
    const before = canonical.get(seq - 1);
    if (before === undefined || !seen.intact || !before.intact || seen.prev === before.hash) continue;
    findings.push(
      finding('edited', state, before, `line ${before.line}: record seq ${before.seq} of chain ${short(state.id)} is not the record seq ${seq} (line ${seen.line}) was chained to: it was changed and its hash recomputed, or replaced`),
    );
  }
}

/** Gaps in the seqs of a chain. The first chain of the input may begin late: the input may start where an older file ends. */
function reportGaps(state: ChainState, canonical: Map<number, Seen>, lastSeq: number, firstInInput: boolean, findings: Finding[]): void {
  let gapStart: number | undefined;
  for (let seq = 0; seq <= lastSeq + 1; seq++) {
    const missing = seq <= lastSeq && !canonical.has(seq) && !state.malformedSeqs.has(seq);
    if (missing) {
      gapStart ??= seq;
      continue;
    }
    if (gapStart === undefined) continue;
    const before = canonical.get(gapStart - 1);
    const after = canonical.get(seq);
    const where = before === undefined ? `before line ${after?.line ?? '?'}` : `between line ${before.line} and line ${after?.line ?? '?'}`;
    if (gapStart === 0 && firstInInput) {
      findings.push({ kind: 'head-missing', chain: state.id, seq: 0, ...(after === undefined ? {} : { line: after.line }), message: `the input begins at seq ${seq} of chain ${short(state.id)} (line ${after?.line ?? '?'}): its ${records(0, seq - 1).join(' ')} in an older file, or removed` });
      gapStart = undefined;
      continue;
    }
    findings.push({ kind: 'dropped', chain: state.id, seq: gapStart, ...(after === undefined ? {} : { line: after.line }), message: `${missingRecords(gapStart, seq - 1, state.id)} (${where}): dropped` });
    gapStart = undefined;
  }
}

/** The key the chain was opened with, if its opening entry is intact and names its key truly. */
function chainKey(state: ChainState, open: Seen | undefined, findings: Finding[]): { kid: string; key: KeyObject } | undefined {
  const named = open?.intact === true ? open.open?.key : undefined;
  if (open === undefined || named === undefined) return undefined;
  const key = publicKeyOfJwk(named.jwk);
  if (key === undefined || jwkThumbprint(named.jwk) !== named.kid) {
    findings.push(finding('malformed', state, open, `line ${open.line}: chain ${short(state.id)} names key ${named.kid}, which is not the thumbprint of the key it holds`));
    return undefined;
  }
  return { kid: named.kid, key };
}

/** The key a checkpoint must verify with: a pinned key, or without pins the key its chain was opened with. Reports why there is none. */
function checkpointKey(analysis: Analysis, checkpoint: Seen, keys: { pinned: ReadonlyMap<string, KeyObject> | undefined; own: { kid: string; key: KeyObject } | undefined; untrusted: Set<string> }, findings: Finding[]): KeyObject | undefined {
  const { state, open } = analysis;
  const kid = checkpoint.kid ?? '';
  if (keys.pinned === undefined) {
    if (keys.own?.kid === kid) return keys.own.key;
    findings.push(finding('bad-signature', state, checkpoint, `line ${checkpoint.line}: checkpoint seq ${checkpoint.seq} of chain ${short(state.id)} names key ${kid}, not the key the chain was opened with (${keys.own?.kid ?? 'unknown'})`));
    return undefined;
  }
  const key = keys.pinned.get(kid);
  if (key === undefined && !keys.untrusted.has(kid)) {
    keys.untrusted.add(kid);
    const ephemeral = open?.open?.key.kid === kid && open.open.key.ephemeral ? ' (an ephemeral key, made when its writer started)' : '';
    findings.push(finding('untrusted-key', state, checkpoint, `line ${checkpoint.line}: chain ${short(state.id)} is signed with key ${kid}${ephemeral}, which is not a pinned key`));
  }
  return key;
}

function verifyCheckpoints(analysis: Analysis, pinned: ReadonlyMap<string, KeyObject> | undefined, findings: Finding[], notices: string[]): void {
  const { state, canonical, open } = analysis;
  const own = chainKey(state, open, findings);
  if (pinned === undefined && own === undefined) {
    notices.push(`chain ${short(state.id)}: without its opening entry its checkpoints cannot be checked; pass --key to check them`);
    return;
  }
  const keys = { pinned, own, untrusted: new Set<string>() };
  const checkpoints = [...canonical.values()].filter((e) => e.type === 'checkpoint' && e.intact).sort((a, b) => a.seq - b.seq);
  for (const checkpoint of checkpoints) {
    analysis.finalSeen ||= checkpoint.final === true;
    const key = checkpointKey(analysis, checkpoint, keys, findings);
    if (key === undefined) continue;
    if (!verifyCheckpointSignature(key, checkpointMessage(checkpoint.hash), checkpoint.sig ?? '')) {
      findings.push(finding('bad-signature', state, checkpoint, `line ${checkpoint.line}: checkpoint seq ${checkpoint.seq} of chain ${short(state.id)}: the signature does not verify with key ${checkpoint.kid ?? ''}: it was forged or changed`));
      continue;
    }
    analysis.signedThrough = checkpoint.seq;
    if (checkpoint.final === true) analysis.finalValid ??= checkpoint;
  }
}

/** The first or last seq of a chain, by a loop: a chain of millions of entries is too long to spread into Math.max. */
function extremeSeq(canonical: ReadonlyMap<number, Seen>, which: 'first' | 'last'): number {
  let extreme = which === 'first' ? Infinity : -Infinity;
  for (const seq of canonical.keys()) extreme = which === 'first' ? Math.min(extreme, seq) : Math.max(extreme, seq);
  return extreme;
}

function analyzeChain(state: ChainState, firstInInput: boolean, pinned: ReadonlyMap<string, KeyObject> | undefined, findings: Finding[], notices: string[]): Analysis {
  const canonical = canonicalEntries(state, findings);
  const lastSeq = extremeSeq(canonical, 'last');
  reportEditsAndOrder(state, canonical, findings);
  reportLinks(state, canonical, findings);
  reportGaps(state, canonical, lastSeq, firstInInput, findings);
  const first = canonical.get(0);
  const analysis: Analysis = { state, canonical, lastSeq, signedThrough: -1, vouchedThrough: -1, finalSeen: false, ...(first?.type === 'open' ? { open: first } : {}) };
  verifyCheckpoints(analysis, pinned, findings, notices);
  const { finalValid } = analysis;
  const after = finalValid === undefined ? undefined : spanOf(canonical.values(), (e) => e.seq > finalValid.seq);
  if (finalValid !== undefined && after !== undefined) {
    findings.push(finding('inserted', state, after.first, `${lineSpan(after.first.line, after.last.line)}: ${records(finalValid.seq + 1, lastSeq)[0]} of chain ${short(state.id)} after its closing checkpoint (line ${finalValid.line}): added`));
  }
  return analysis;
}

/**
 * A chain opened in a file that held entries names the last of them: that entry must be there, unchanged.
 * Returns the links that hold: chain id to the entry it was opened after.
 */
function linkChains(analyses: Analysis[], findings: Finding[]): Map<string, Seen> {
  const links = new Map<string, Seen>();
  const byId = new Map(analyses.map((analysis) => [analysis.state.id, analysis]));
  const ordered = [...analyses].sort((a, b) => (a.state.seen[0]?.line ?? 0) - (b.state.seen[0]?.line ?? 0));
  // From the last chain back, so a chain vouched for by the next can vouch for the one before it.
  [...ordered.entries()].reverse().forEach(([index, analysis]) => {
    const { open, state } = analysis;
    const after: ChainRef | undefined = open?.intact === true ? open.open?.after : undefined;
    if (open === undefined || after === undefined) return;
    const before = byId.get(after.chain);
    if (before === undefined) {
      if (index === 0) findings.push(finding('head-missing', state, open, `line ${open.line}: the input begins with chain ${short(state.id)}, opened after seq ${after.seq} of chain ${short(after.chain)}: that chain is in an older file, or was removed`));
      else findings.push(finding('dropped', state, open, `line ${open.line}: chain ${short(state.id)} was opened after seq ${after.seq} of chain ${short(after.chain)}, which is not in the input: a whole chain was removed`));
      return;
    }
    const named = before.canonical.get(after.seq);
    if (named === undefined) {
      if (before.lastSeq < after.seq) {
        findings.push(finding('dropped', before.state, open, `chain ${short(before.state.id)} ends at seq ${before.lastSeq}, but chain ${short(state.id)} (line ${open.line}) was opened after its seq ${after.seq}: ${records(before.lastSeq + 1, after.seq).join(' ')} missing`));
      }
      return;
    }
    if (named.hash !== after.hash) {
      if (named.intact) findings.push(finding('edited', before.state, named, `line ${named.line}: record seq ${named.seq} of chain ${short(before.state.id)} is not the one chain ${short(state.id)} (line ${open.line}) was opened after: it was changed and rehashed, or replaced`));
      return;
    }
    if (named.line > open.line) {
      findings.push(finding('reordered', state, open, `line ${open.line}: chain ${short(state.id)} opens before record seq ${named.seq} of chain ${short(before.state.id)} (line ${named.line}), which it was opened after: records were reordered`));
      return;
    }
    links.set(state.id, named);
    if (Math.max(analysis.signedThrough, analysis.vouchedThrough) >= 0) before.vouchedThrough = Math.max(before.vouchedThrough, after.seq);
  });
  return links;
}

/** Where each entry is: the canonical entries of every chain, in the order of the input. */
function entriesInOrder(analyses: Analysis[]): { chain: string; entry: Seen }[] {
  return analyses.flatMap(({ state, canonical }) => [...canonical.values()].map((entry) => ({ chain: state.id, entry }))).sort((a, b) => a.entry.line - b.entry.line);
}

/** For each chain opening, the last entry of another chain before it in the input: one pass over the entries in order. */
function entriesBeforeOpenings(analyses: Analysis[]): Map<Seen, { chain: string; entry: Seen }> {
  const openings = new Set(analyses.flatMap(({ open }) => (open === undefined ? [] : [open])));
  const before = new Map<Seen, { chain: string; entry: Seen }>();
  let last: { chain: string; entry: Seen } | undefined;
  // The last entry of another chain than `last`'s: what precedes an opening of the chain `last` is in.
  let lastOfAnother: { chain: string; entry: Seen } | undefined;
  for (const current of entriesInOrder(analyses)) {
    if (openings.has(current.entry)) {
      const found = last?.chain === current.chain ? lastOfAnother : last;
      if (found !== undefined) before.set(current.entry, found);
    }
    if (last !== undefined && last.chain !== current.chain) lastOfAnother = last;
    last = current;
  }
  return before;
}

/**
 * Chains are joined only where an `after` link says so: a chain that opens after
 * entries of the input must name the one right before it, and once a chain has
 * opened, no chain before it goes on. A writer opens its chain after the last
 * entry of its file, and writes nothing more to the chain before.
 */
function reportSplices(analyses: Analysis[], links: ReadonlyMap<string, Seen>, findings: Finding[]): void {
  const preceding = entriesBeforeOpenings(analyses);
  for (const { state, open } of analyses) {
    const before = open === undefined ? undefined : preceding.get(open);
    if (open?.intact !== true || before === undefined) continue;
    const where = `record seq ${before.entry.seq} of chain ${short(before.chain)} (line ${before.entry.line})`;
    const named = links.get(state.id);
    if (open.open?.after === undefined) {
      findings.push(finding('spliced', state, open, `line ${open.line}: chain ${short(state.id)} names no entry it was opened after, yet follows ${where}: it was written to another log and joined to this one`));
    } else if (named !== undefined && named !== before.entry) {
      findings.push(finding('spliced', state, open, `line ${open.line}: chain ${short(state.id)} was opened right after record seq ${named.seq} (line ${named.line}), yet follows ${where}: entries were put between them`));
    }
  }
  const openings = analyses.flatMap(({ state, open }) => (open === undefined ? [] : [{ chain: state.id, line: open.line }])).sort((a, b) => a.line - b.line);
  for (const { state, canonical } of analyses) {
    const first = spanOf(canonical.values(), () => true)?.first.line ?? Infinity;
    // The first chain opened after this one began: nothing of this one may follow that opening.
    const next = openings.find((opening) => opening.chain !== state.id && opening.line > first);
    const later = next === undefined ? undefined : spanOf(canonical.values(), (e) => e.line > next.line);
    if (next === undefined || later === undefined) continue;
    findings.push(finding('spliced', state, later.first, `${lineSpan(later.first.line, later.last.line)}: records of chain ${short(state.id)} after chain ${short(next.chain)} opened (line ${next.line}): a chain was put inside another`));
  }
}

function judgeTail(analysis: Analysis, findings: Finding[], notices: string[]): void {
  const { state, canonical, lastSeq, finalValid } = analysis;
  const covered = Math.max(analysis.signedThrough, analysis.vouchedThrough);
  const unsigned = finalValid === undefined ? spanOf(canonical.values(), (e) => e.seq > covered) : undefined;
  if (unsigned !== undefined) {
    findings.push(finding('unsigned', state, unsigned.first, `${lineSpan(unsigned.first.line, unsigned.last.line)}: ${unsignedRecords(covered + 1, lastSeq, state.id)}`));
  }
  if (analysis.finalSeen) return;
  const last = canonical.get(lastSeq);
  if (analysis.vouchedThrough >= 0) {
    notices.push(`chain ${short(state.id)} was not closed (its writer was killed or crashed); the chain opened after it vouches for its records through seq ${analysis.vouchedThrough}`);
  } else {
    findings.push(finding('unclosed', state, last, `chain ${short(state.id)} ends at seq ${lastSeq} (line ${last?.line ?? '?'}) without a closing checkpoint: its writer was killed or crashed, is still writing, or the log was truncated`));
  }
}

function summaryOf(analysis: Analysis): ChainSummary {
  const { state, canonical, open } = analysis;
  const entries = [...canonical.values()];
  const key = open?.open?.key;
  return {
    chain: state.id,
    ...(open?.open === undefined ? {} : { tenant: open.open.tenant, namespace: open.open.namespace, agent: open.open.agent }),
    firstLine: state.seen[0]?.line ?? 0,
    lastLine: state.seen.at(-1)?.line ?? 0,
    entries: entries.length,
    decisions: entries.filter((e) => e.type === 'decision').length,
    checkpoints: entries.filter((e) => e.type === 'checkpoint').length,
    firstSeq: extremeSeq(canonical, 'first'),
    lastSeq: analysis.lastSeq,
    signedThrough: Math.max(analysis.signedThrough, analysis.vouchedThrough),
    closed: analysis.finalValid !== undefined,
    ...(key === undefined ? {} : { kid: key.kid, ephemeral: key.ephemeral }),
  };
}
