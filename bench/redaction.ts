// Answer redaction against a corpus of leak forms: each PII value of
// bench/fixtures/redaction/corpus.json written in every form an answer may
// carry it in (separators, escapes, encodings, split over stream events, in
// keys), and look-alikes that must pass. Reports recall per form and per
// detector, false positives per look-alike category, precision, and what
// stream redaction adds per event. Writes bench/results/redaction.json.
//   npm run bench -- redaction
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { PiiKind } from '../src/compiler/detectors.ts';
import { PII_KINDS } from '../src/compiler/detectors.ts';
import { EventStreamRedactor, redactJson, redactText } from '../src/sidecar/ext-proc-redaction.ts';
import type { Figure } from './lib.ts';
import { figure, percentile, report } from './lib.ts';

interface Corpus {
  leaks: Record<PiiKind, string[]>;
  benign: { category: string; text: string }[];
}

const corpus = JSON.parse(await readFile(join(import.meta.dirname, 'fixtures', 'redaction', 'corpus.json'), 'utf8')) as Corpus;
const ALL = PII_KINDS;
const encoder = new TextEncoder();

/** What the reader gets for an answer: a text answer, a JSON answer, or the joined deltas of a stream. */
type Carrier = (written: string) => string;

const inText: Carrier = (written) => redactText(`note: ${written} end`, ALL).text;
const inJsonString = (escaped: string): string => redactJson(`{"t": "note: ${escaped} end"}`, ALL)?.text ?? '';

/** The deltas of an SSE answer (OpenAI chat chunks) or NDJSON answer (Ollama), redacted, joined as a reader joins them. */
function streamed(pieces: readonly string[], framing: 'sse' | 'ndjson', rawPieces = false): string {
  const redactor = new EventStreamRedactor(ALL, framing);
  const event = (piece: string): string => {
    const content = rawPieces ? `"${piece}"` : JSON.stringify(piece);
    return framing === 'sse'
      ? `data: {"id":"chatcmpl-1","object":"chat.completion.chunk","model":"m","choices":[{"index":0,"delta":{"content":${content}}}]}\n\n`
      : `{"model":"m","message":{"role":"assistant","content":${content}},"done":false}\n`;
  };
  const all = ['note: ', ...pieces, ' end.'].map(event);
  let out = '';
  all.forEach((chunk, index) => {
    out += redactor.push(encoder.encode(chunk), index === all.length - 1);
  });
  const lines = framing === 'sse' ? out.split('\n\n').filter((e) => e.startsWith('data: ')).map((e) => e.slice(6)) : out.split('\n').filter(Boolean);
  return lines.map((line) => {
    const parsed = JSON.parse(line) as { choices?: { delta: { content: string } }[]; message?: { content: string } };
    return parsed.choices?.[0]?.delta.content ?? parsed.message?.content ?? '';
  }).join('');
}

const chunksOf = (text: string, size: number): string[] => text.match(new RegExp(`[\\s\\S]{1,${String(size)}}`, 'gu')) ?? [];
const compact = (value: string): string => value.replace(/[^0-9A-Za-z@._+-]/gu, '').replace(/-/gu, '');
const digitsOnly = (kind: PiiKind): boolean => kind === 'credit_card' || kind === 'ssn';

/** The value regrouped with a separator: cards in fours, SSNs 3-2-4, phones and IBANs at their spaces. */
function grouped(value: string, kind: PiiKind, separator: string): string {
  if (kind === 'credit_card') return (compact(value).match(/.{1,4}/gu) ?? []).join(separator);
  if (kind === 'ssn') {
    const digits = compact(value);
    return [digits.slice(0, 3), digits.slice(3, 5), digits.slice(5)].join(separator);
  }
  return value.replace(/[ -]/gu, separator);
}

const eachChar = (value: string, write: (char: string) => string, which: RegExp): string => value.replace(which, write);
const code = (char: string): number => char.codePointAt(0) ?? 0;
const escapable = (kind: PiiKind): RegExp => (kind === 'email' ? /[@.]/gu : /\d/gu);
const base64 = (text: string, url = false): string => Buffer.from(text, 'utf8').toString(url ? 'base64url' : 'base64');

interface Form {
  name: string;
  kinds: readonly PiiKind[];
  /** The values the form applies to, when not all: national phone numbers are recognised only in their usual written forms. */
  only?: (value: string, kind: PiiKind) => boolean;
  /** The value as the answer writes it, and what the reader gets once it is redacted. */
  write: (value: string, kind: PiiKind) => { written: string; read: string };
}

/** National phone numbers (`(415) 555-2671`) are found only as they are usually written; regrouped, they read as other numbers. */
const international = (value: string, kind: PiiKind): boolean => kind !== 'phone' || value.startsWith('+');

const text = (write: (value: string, kind: PiiKind) => string): Form['write'] => (value, kind) => {
  const written = write(value, kind);
  return { written, read: inText(written) };
};

const FORMS: Form[] = [
  { name: 'as written', kinds: ALL, write: text((v) => v) },
  { name: 'without separators', kinds: ['credit_card', 'phone', 'iban'], only: international, write: text((v) => v.replace(/[ ()-]/gu, '')) },
  { name: 'grouped by dashes', kinds: ['credit_card', 'ssn', 'phone'], only: international, write: text((v, k) => grouped(v, k, '-')) },
  { name: 'grouped by dots', kinds: ['credit_card', 'ssn', 'phone'], only: international, write: text((v, k) => grouped(v, k, '.')) },
  { name: 'grouped by slashes', kinds: ['credit_card', 'ssn'], write: text((v, k) => grouped(v, k, '/')) },
  { name: 'grouped by NBSP', kinds: ['credit_card', 'ssn', 'phone', 'iban'], write: text((v, k) => grouped(v, k, '\u00a0')) },
  { name: 'grouped by narrow NBSP', kinds: ['credit_card', 'ssn', 'phone', 'iban'], write: text((v, k) => grouped(v, k, '\u202f')) },
  { name: 'grouped by thin spaces', kinds: ['credit_card', 'ssn', 'phone', 'iban'], write: text((v, k) => grouped(v, k, '\u2009')) },
  { name: 'grouped by Unicode hyphens', kinds: ['credit_card', 'ssn', 'phone'], only: international, write: text((v, k) => grouped(v, k, '\u2011')) },
  { name: 'zero-width spaces between groups', kinds: ['credit_card', 'phone', 'iban'], only: international, write: text((v, k) => grouped(v, k, '\u200b')) },
  { name: 'zero-width characters between every character', kinds: ALL, write: text((v) => v.replace(/(?<=.)(?=.)/gu, '\u200c')) },
  { name: 'full-width digits and @', kinds: ALL, write: text((v) => v.replace(/[0-9@]/gu, (c) => String.fromCodePoint(code(c) + 0xfee0))) },
  { name: 'HTML decimal references', kinds: ALL, write: text((v, k) => eachChar(v, (c) => `&#${String(code(c))};`, escapable(k))) },
  { name: 'HTML hex references', kinds: ALL, write: text((v, k) => eachChar(v, (c) => `&#x${code(c).toString(16)};`, escapable(k))) },
  { name: 'HTML named references', kinds: ['email'], write: text((v) => v.replace('@', '&commat;').replace(/\./gu, '&period;')) },
  { name: 'percent-encoded', kinds: ALL, write: text((v, k) => eachChar(v, (c) => `%${code(c).toString(16).toUpperCase()}`, escapable(k))) },
  { name: 'percent-encoded twice', kinds: ['email'], write: text((v) => v.replace('@', '%2540')) },
  { name: 'JSON escapes in text', kinds: ALL, write: text((v, k) => eachChar(v, (c) => `\\u${code(c).toString(16).padStart(4, '0')}`, escapable(k))) },
  { name: '[at] and [dot]', kinds: ['email'], write: text((v) => v.replace('@', ' [at] ').replace(/\./gu, ' [dot] ')) },
  { name: 'base64', kinds: ALL, write: text((v) => base64(v)) },
  { name: 'base64url of a sentence', kinds: ALL, write: text((v) => base64(`the value on file is ${v}, as asked`, true)) },
  { name: 'bare, after a label', kinds: ['ssn'], write: text((v) => `SSN on file: ${compact(v)}`) },
  { name: 'bare, nothing naming it', kinds: ['ssn'], write: text((v) => compact(v)) },
  {
    name: 'bare, in a field named ssn',
    kinds: ['ssn'],
    write: (v) => ({ written: compact(v), read: redactJson(JSON.stringify({ patient: { ssn: compact(v) } }), ALL)?.text ?? '' }),
  },
  { name: 'in a JSON key', kinds: ALL, write: (v) => ({ written: v, read: redactJson(JSON.stringify({ byValue: { [v]: true } }), ALL)?.text ?? '' }) },
  { name: 'as a JSON integer', kinds: ['credit_card'], write: (v) => ({ written: v, read: redactJson(`{"n": ${v}}`, ALL)?.text ?? '' }) },
  {
    name: 'JSON escapes in a JSON answer',
    kinds: ALL,
    write: (v, k) => ({ written: v, read: inJsonString(eachChar(v, (c) => `\\u${code(c).toString(16).padStart(4, '0')}`, escapable(k))) }),
  },
  { name: 'split over SSE events, 4 characters each', kinds: ALL, write: (v) => ({ written: v, read: streamed(chunksOf(v, 4), 'sse') }) },
  { name: 'split over SSE events, 1 character each', kinds: ALL, write: (v) => ({ written: v, read: streamed(chunksOf(v, 1), 'sse') }) },
  { name: 'split over NDJSON lines, 3 characters each', kinds: ALL, write: (v) => ({ written: v, read: streamed(chunksOf(v, 3), 'ndjson') }) },
  {
    name: 'split over SSE events with JSON escapes',
    kinds: ALL,
    write: (v, k) => ({ written: v, read: streamed(chunksOf(v, 4).map((piece) => eachChar(piece, (c) => `\\u${code(c).toString(16).padStart(4, '0')}`, escapable(k))), 'sse', true) }),
  },
  {
    name: 'split over SSE events, grouped by NBSP',
    kinds: ['credit_card', 'ssn', 'iban'],
    write: (v, k) => ({ written: grouped(v, k, '\u00a0'), read: streamed(chunksOf(grouped(v, k, '\u00a0'), 5), 'sse') }),
  },
];

/** Caught: the reader gets the marker and nothing of the value as written, nor (for numbers) its digits. */
function caught(value: string, kind: PiiKind, written: string, read: string): boolean {
  if (!read.includes('[REDACTED:') || read.includes(written) || read.includes(value)) return false;
  if (digitsOnly(kind)) return !read.replace(/\D/gu, '').includes(compact(value).replace(/\D/gu, ''));
  return !read.toLowerCase().includes(value.toLowerCase());
}

const percent = (part: number, whole: number): number => (whole === 0 ? 100 : (100 * part) / whole);
const figures: Figure[] = [];
const notes: string[] = [];

// Recall, per form and per detector.
const byKind = new Map<PiiKind, { caught: number; total: number }>();
let leaksCaught = 0;
let leaksTotal = 0;
for (const form of FORMS) {
  let formCaught = 0;
  let formTotal = 0;
  const missed: string[] = [];
  for (const kind of form.kinds) {
    for (const value of corpus.leaks[kind].filter((candidate) => form.only?.(candidate, kind) ?? true)) {
      const { written, read } = form.write(value, kind);
      const ok = caught(value, kind, written, read);
      formTotal++;
      if (ok) formCaught++;
      else missed.push(`${kind} ${value}`);
      const tally = byKind.get(kind) ?? { caught: 0, total: 0 };
      byKind.set(kind, { caught: tally.caught + (ok ? 1 : 0), total: tally.total + 1 });
    }
  }
  leaksCaught += formCaught;
  leaksTotal += formTotal;
  const known = form.name === 'bare, nothing naming it';
  const value = percent(formCaught, formTotal);
  figures.push(figure(`recall, ${form.name} (${String(formTotal)} leaks)`, value, '%', known ? undefined : { text: '100%', met: value === 100 }));
  if (missed.length > 0) notes.push(`${form.name}: missed ${missed.join(', ')}`);
}
for (const [kind, tally] of byKind) figures.push(figure(`recall, ${kind}, all forms (${String(tally.total)} leaks)`, percent(tally.caught, tally.total), '%'));
notes.push('Nine bare digits with nothing naming them as an SSN are not redacted by design: see the bare-SSN figures below.');

// False positives on look-alikes, as text and as an SSE stream split in 3-character deltas.
const byCategory = new Map<string, { flagged: number; total: number }>();
let benignFlagged = 0;
for (const { category, text: benign } of corpus.benign) {
  const asText = redactText(benign, ALL).text !== benign;
  const asStream = streamed(chunksOf(benign, 3), 'sse') !== `note: ${benign} end.`;
  const flagged = asText || asStream;
  if (flagged) {
    benignFlagged++;
    notes.push(`look-alike flagged (${category}): ${benign}`);
  }
  const tally = byCategory.get(category) ?? { flagged: 0, total: 0 };
  byCategory.set(category, { flagged: tally.flagged + (flagged ? 1 : 0), total: tally.total + 1 });
}
for (const [category, tally] of byCategory) figures.push(figure(`false positives, ${category} look-alikes (${String(tally.total)})`, percent(tally.flagged, tally.total), '%'));
figures.push(figure(`precision over the corpus (${String(leaksTotal)} leaks, ${String(corpus.benign.length)} look-alikes)`, percent(leaksCaught, leaksCaught + benignFlagged), '%'));
figures.push(figure('recall over the corpus, every form', percent(leaksCaught, leaksTotal), '%'));

// The bare-SSN rule: what flagging every issuable nine-digit number would cost on the look-alikes.
const issuable = (digits: string): boolean => !/^(?:000|666|9)/u.test(digits) && digits.slice(3, 5) !== '00' && digits.slice(5) !== '0000';
const nineDigits = corpus.benign.filter(({ text: benign }) => [...benign.replace(/[^\d]+/gu, ' ').matchAll(/\b\d{9}\b/gu)].some((m) => issuable(m[0])));
const nineFlagged = nineDigits.filter(({ text: benign }) => redactText(benign, ['ssn']).text !== benign);
figures.push(figure(`bare-SSN rule "any issuable nine digits": look-alikes flagged (of ${String(corpus.benign.length)})`, nineDigits.length, 'examples'));
figures.push(figure('bare-SSN rule as built (a label or a field names it): look-alikes flagged', nineFlagged.length, 'examples'));

// What stream redaction adds per event: an LLM answer of OpenAI chat chunks, 1–6 characters each.
const prose = Array.from({ length: 40 }, (_unused, i) => `Sentence ${String(i)} talks about the weather, the order ORD-${String(1000 + i)} and a meeting at 10:${String(10 + (i % 50))}. ${i % 10 === 3 ? 'Write to dana.ruiz@example.com or call +1 415 555 2671; the card 4111 1111 1111 1111 is on file. ' : ''}`).join('');
const deltas: string[] = [];
for (let at = 0, n = 0; at < prose.length; n++) {
  const size = 1 + (n % 6);
  deltas.push(prose.slice(at, at + size));
  at += size;
}
const events = deltas.map((piece) => encoder.encode(`data: ${JSON.stringify({ id: 'chatcmpl-1', object: 'chat.completion.chunk', created: 1733400000, model: 'gpt-4o-mini', choices: [{ index: 0, delta: { content: piece }, finish_reason: null }] })}\n\n`));
const decoder = new TextDecoder();
const RUNS = 20;
const pushTimes: number[] = [];
const parseTimes: number[] = [];
const delays: number[] = [];
for (let run = 0; run < RUNS; run++) {
  const redactor = new EventStreamRedactor(ALL, 'sse');
  let released = 0;
  events.forEach((event, index) => {
    let t = process.hrtime.bigint();
    const out = redactor.push(event, index === events.length - 1);
    pushTimes.push(Number(process.hrtime.bigint() - t) / 1000);
    t = process.hrtime.bigint();
    JSON.parse(decoder.decode(event).slice(6));
    parseTimes.push(Number(process.hrtime.bigint() - t) / 1000);
    if (run === RUNS - 1) {
      const passed = out.split('\n\n').length - 1;
      for (let k = 0; k < passed; k++) delays.push(index - (released + k));
      released += passed;
    }
  });
}
const sorted = (values: number[]): number[] => [...values].sort((a, b) => a - b);
const push = sorted(pushTimes.slice(pushTimes.length / 2));
const parse = sorted(parseTimes.slice(parseTimes.length / 2));
const delay = sorted(delays);
const peer = { name: 'JSON.parse of the same event' };
figures.push(figure(`stream redaction per event (${String(events.length)} OpenAI chunks), p50`, percentile(push, 50), 'µs', undefined, { ...peer, value: percentile(parse, 50) }));
figures.push(figure('stream redaction per event, p99', percentile(push, 99), 'µs', undefined, { ...peer, value: percentile(parse, 99) }));
figures.push(figure('events an LLM delta waits before it passes, p50', percentile(delay, 50), 'events'));
figures.push(figure('events an LLM delta waits before it passes, p99', percentile(delay, 99), 'events'));
figures.push(figure('events an LLM delta waits before it passes, max', delay.at(-1) ?? 0, 'events'));

// A 4 KiB JSON answer redacted whole, for comparison.
const answer = JSON.stringify({ rows: Array.from({ length: 40 }, (_unused, i) => ({ id: i, note: `row ${String(i)} for dana${String(i)}@example.com`, amount: 12.5 * i })) }).slice(0, 4096).replace(/,[^,]*$/u, ']}');
const jsonTimes: number[] = [];
for (let i = 0; i < 2000; i++) {
  const t = process.hrtime.bigint();
  redactJson(answer, ALL);
  jsonTimes.push(Number(process.hrtime.bigint() - t) / 1000);
}
const json = sorted(jsonTimes.slice(1000));
figures.push(figure(`JSON answer of ${String(answer.length)} bytes redacted whole, p50`, percentile(json, 50), 'µs'));
figures.push(figure('JSON answer redacted whole, p99', percentile(json, 99), 'µs'));

await report('redaction', figures, notes);
