// Redaction of a tool's answer with the compiler's PII detectors, for the
// ext_proc filter: JSON answers value by value (bytes outside the redacted
// values unchanged), text and text/event-stream answers as a stream of text
// redacted chunk by chunk with a bounded tail held back, so a value split
// across two chunks is still found. Pure: no transport, no clock.
import type { PiiKind, PiiMatch } from '../compiler/detectors.ts';
import { childPath, findPii, PII_KINDS } from '../compiler/detectors.ts';
import type { ResponseRedactSpec } from '../compiler/ir.ts';
import { MAX_REDACTION_DEPTH, REDACTED_TOO_DEEP, redactionMarker } from '../compiler/redact.ts';

/** An answer that cannot be redacted as the policy asks: it is ended with an error, never passed on. */
export class RedactionError extends Error {
  override readonly name = 'RedactionError';
}

/** The PII kinds a redactResponse list stands for (`pii` is all five). */
export function piiKindsOf(spec: readonly ResponseRedactSpec[]): PiiKind[] {
  const kinds = new Set<PiiKind>();
  for (const entry of spec) {
    if (entry === 'pii') PII_KINDS.forEach((kind) => kinds.add(kind));
    else kinds.add(entry);
  }
  return PII_KINDS.filter((kind) => kinds.has(kind));
}

/** How an answer is read for redaction, from its content-type and content-encoding. */
export type ResponseKind = { kind: 'json' | 'text' | 'event-stream' } | { kind: 'uninspectable'; reason: string };

const TEXT_TYPES = new Set(['application/xml', 'application/javascript', 'application/x-ndjson', 'application/x-www-form-urlencoded']);

export function responseKindOf(contentType: string | undefined, contentEncoding: string | undefined): ResponseKind {
  const encoding = (contentEncoding ?? '').trim().toLowerCase();
  if (encoding !== '' && encoding !== 'identity') return { kind: 'uninspectable', reason: `an answer with content-encoding ${JSON.stringify(contentEncoding)} cannot be inspected` };
  const [media = '', ...parameters] = (contentType ?? '').split(';');
  const type = media.trim().toLowerCase();
  const charset = parameters.map((p) => p.trim().toLowerCase()).find((p) => p.startsWith('charset='))?.slice('charset='.length).replace(/^"|"$/g, '');
  if (charset !== undefined && charset !== 'utf-8' && charset !== 'utf8' && charset !== 'us-ascii') {
    return { kind: 'uninspectable', reason: `an answer in charset ${charset} cannot be inspected (UTF-8 only)` };
  }
  if (type === 'text/event-stream') return { kind: 'event-stream' };
  if (type === 'application/json' || type.endsWith('+json')) return { kind: 'json' };
  // No content type: read as text; bytes that are not UTF-8 then fail closed.
  if (type === '' || type.startsWith('text/') || type.endsWith('+xml') || TEXT_TYPES.has(type)) return { kind: 'text' };
  return { kind: 'uninspectable', reason: `an answer of content type ${JSON.stringify(contentType)} cannot be inspected` };
}

/** A text with its matches replaced by markers; each redaction noted as `PATH:KIND`. */
function markMatches(text: string, matches: readonly PiiMatch[], path: string, noted: Set<string>): string {
  let out = '';
  let copied = 0;
  for (const match of matches) {
    out += text.slice(copied, match.start) + redactionMarker(match.kind);
    copied = match.end;
    noted.add(`${path}:${match.kind}`);
  }
  return out + text.slice(copied);
}

export interface Redacted {
  /** The answer as passed on. */
  text: string;
  /** `PATH:KIND`, sorted: a JSON path into the answer, or '' for a text answer as a whole. Never the text. */
  redacted: string[];
}

const WHITESPACE = /[ \t\n\r]*/y;
// eslint-disable-next-line no-control-regex -- a JSON string may not hold raw control characters
const STRING = /"(?:[^"\\\u0000-\u001f]|\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4}))*"/y;
const NUMBER = /-?(?:0|[1-9]\d*)(\.\d+)?(?:[eE][+-]?\d+)?/y;
const LITERAL = /true|false|null/y;

interface Frame {
  kind: 'object' | 'array';
  /** Object: the key of the member being read; array: the index of the item. */
  at: string;
  index: number;
}

class NotJson extends Error {}

/** Reads JSON text token by token and splices redacted values in, so bytes outside them stay as they were. */
class JsonRedactor {
  private readonly text: string;
  private readonly kinds: readonly PiiKind[];
  private readonly frames: Frame[] = [];
  private readonly parts: string[] = [];
  readonly noted = new Set<string>();
  private position = 0;
  private copied = 0;

  constructor(text: string, kinds: readonly PiiKind[]) {
    this.text = text;
    this.kinds = kinds;
  }

  run(): string {
    this.value();
    for (;;) {
      this.skipWhitespace();
      const frame = this.frames.at(-1);
      if (frame === undefined) break;
      const next = this.text.charAt(this.position++);
      if (next === ',') {
        if (frame.kind === 'object') this.member(frame);
        else this.item(frame, frame.index + 1);
      } else if (next === (frame.kind === 'object' ? '}' : ']')) {
        this.frames.pop();
      } else {
        throw new NotJson();
      }
    }
    if (this.position !== this.text.length) throw new NotJson();
    return this.parts.join('') + this.text.slice(this.copied);
  }

  private get path(): string {
    return this.frames.reduce((path, frame) => childPath(path, frame.at), '');
  }

  private skipWhitespace(): void {
    WHITESPACE.lastIndex = this.position;
    WHITESPACE.exec(this.text);
    this.position = WHITESPACE.lastIndex;
  }

  private token(pattern: RegExp): string {
    pattern.lastIndex = this.position;
    const match = pattern.exec(this.text);
    if (match === null) throw new NotJson();
    this.position = pattern.lastIndex;
    return match[0];
  }

  private splice(start: number, replacement: string): void {
    this.parts.push(this.text.slice(this.copied, start), replacement);
    this.copied = this.position;
  }

  private member(frame: Frame): void {
    this.skipWhitespace();
    // Keys are names, not values: kept as written, like the request's redaction.
    frame.at = JSON.parse(this.token(STRING)) as string;
    this.skipWhitespace();
    if (this.text.charAt(this.position++) !== ':') throw new NotJson();
    this.value();
  }

  private item(frame: Frame, index: number): void {
    frame.index = index;
    frame.at = String(index);
    this.value();
  }

  /** One value; a container pushes its frame and the loop in run() reads the rest. */
  private value(): void {
    this.skipWhitespace();
    const start = this.position;
    const first = this.text.charAt(start);
    if (first === '{' || first === '[') {
      if (this.frames.length >= MAX_REDACTION_DEPTH) {
        this.skipContainer();
        this.noted.add(`${this.path}:too_deep`);
        this.splice(start, JSON.stringify(REDACTED_TOO_DEEP));
        return;
      }
      this.position++;
      const frame: Frame = { kind: first === '{' ? 'object' : 'array', at: '', index: 0 };
      this.frames.push(frame);
      this.skipWhitespace();
      if (this.text.charAt(this.position) === (first === '{' ? '}' : ']')) {
        this.position++;
        this.frames.pop();
      } else if (first === '{') {
        this.member(frame);
      } else {
        this.item(frame, 0);
      }
      return;
    }
    if (first === '"') {
      const written = this.token(STRING);
      const value = JSON.parse(written) as string;
      const matches = findPii(value, this.kinds);
      if (matches.length > 0) this.splice(start, JSON.stringify(markMatches(value, matches, this.path, this.noted)));
      return;
    }
    if (first === 't' || first === 'f' || first === 'n') {
      this.token(LITERAL);
      return;
    }
    const written = this.token(NUMBER);
    if (/[.eE]/.test(written)) return;
    // An integer can carry a card number; one beyond 2^53 is read as written.
    const number = Number(written);
    const digits = Number.isSafeInteger(number) ? String(number) : written;
    const matches = findPii(digits, this.kinds);
    if (matches.length > 0) this.splice(start, JSON.stringify(markMatches(digits, matches, this.path, this.noted)));
  }

  /** Skips a container nested too deep to inspect, checking only that its brackets and strings balance. */
  private skipContainer(): void {
    let depth = 0;
    while (this.position < this.text.length) {
      const char = this.text.charAt(this.position);
      if (char === '"') {
        this.token(STRING);
        continue;
      }
      this.position++;
      if (char === '{' || char === '[') depth++;
      else if (char === '}' || char === ']') depth--;
      if (depth === 0) return;
    }
    throw new NotJson();
  }
}

/**
 * Redacts a JSON answer value by value, as the request's `redact` does: every
 * string (not keys) and every integer holding a match of the kinds gets the
 * match replaced by its marker, containers nested deeper than
 * MAX_REDACTION_DEPTH are replaced whole. Everything else is passed byte for
 * byte. Undefined when the text is not JSON (the caller redacts it as text).
 */
export function redactJson(text: string, kinds: readonly PiiKind[]): Redacted | undefined {
  const redactor = new JsonRedactor(text, kinds);
  try {
    return { text: redactor.run(), redacted: [...redactor.noted].sort() };
  } catch (error) {
    if (error instanceof NotJson) return undefined;
    throw error;
  }
}

/**
 * Characters a PII value of any kind may hold (letters, digits, the separators
 * of cards, phones, SSNs and IBANs, and what e-mail addresses are made of).
 * Text that ends in a run of them may still grow into a match; any other
 * character ends every value.
 */
const VALUE_CHARACTER = /[A-Za-z0-9._%+\-@() ]/;
/**
 * The longest PII value held back whole: an e-mail address is at most 254
 * characters (RFC 5321); every other kind is shorter (an IBAN with spaces 64, an
 * international phone number 114). Two more for the detectors' look-ahead.
 */
export const MAX_VALUE_LENGTH = 256;
/** Text already passed on that the detectors still see, for what they read before a value (an `SSN:` label, 26 characters). */
export const LEFT_CONTEXT = 32;
/**
 * The most text held back at once. A tail grows past MAX_VALUE_LENGTH only
 * while a match straddles the cut (at most 2 × 256); past this bound the
 * stream cannot be redacted in bounded memory and fails closed.
 */
export const MAX_HELD = 1024;

/**
 * Redacts a text stream chunk by chunk. Each push passes on the text that can
 * no longer be part of a match (with its matches replaced by markers) and
 * holds back the rest: the trailing run of characters a value may hold, at
 * most MAX_VALUE_LENGTH, moved back to the start of a match the cut would
 * split. A value up to MAX_VALUE_LENGTH characters is therefore redacted
 * whatever the chunk boundaries, exactly as in the whole text. The end of the
 * stream passes on everything.
 */
export class StreamRedactor {
  private readonly kinds: readonly PiiKind[];
  private readonly decoder = new TextDecoder('utf-8', { fatal: true });
  private context = '';
  private held = '';
  private readonly noted = new Set<string>();

  constructor(kinds: readonly PiiKind[]) {
    this.kinds = kinds;
  }

  /** What was redacted so far, as `:KIND` (the path of a text answer is the whole text). */
  get redacted(): string[] {
    return [...this.noted].sort();
  }

  /** The characters held back now. */
  get heldLength(): number {
    return this.held.length;
  }

  /** The text of a chunk to pass on in its place. Throws RedactionError for bytes that are not UTF-8 or a tail past MAX_HELD. */
  push(chunk: Uint8Array, end: boolean): string {
    try {
      this.held += this.decoder.decode(chunk, { stream: !end });
    } catch {
      throw new RedactionError('the answer is not UTF-8 text');
    }
    const text = this.context + this.held;
    const base = this.context.length;
    const matches = findPii(text, this.kinds).filter((match) => match.end > base);
    let cut = end ? text.length : holdPoint(text, base);
    for (const match of matches) {
      if (match.start < cut && match.end > cut) cut = Math.max(base, match.start);
    }
    if (text.length - cut > MAX_HELD) throw new RedactionError(`more than ${MAX_HELD} characters would have to be held back to redact the answer`);
    let out = '';
    let copied = base;
    for (const match of matches) {
      // Sorted and apart: once one reaches past the cut, so do the rest.
      if (match.end > cut) break;
      out += text.slice(copied, Math.max(base, match.start)) + redactionMarker(match.kind);
      copied = match.end;
      this.noted.add(`:${match.kind}`);
    }
    out += text.slice(copied, cut);
    this.context = text.slice(Math.max(0, cut - LEFT_CONTEXT), cut);
    this.held = text.slice(cut);
    return out;
  }
}

/** Where the text that may still grow into a match begins: the trailing run of value characters, at most MAX_VALUE_LENGTH long. */
function holdPoint(text: string, base: number): number {
  const floor = Math.max(base, text.length - MAX_VALUE_LENGTH);
  let point = text.length;
  while (point > floor && VALUE_CHARACTER.test(text.charAt(point - 1))) point--;
  return point;
}

/** Redacts a whole text answer. */
export function redactText(text: string, kinds: readonly PiiKind[]): Redacted {
  const redactor = new StreamRedactor(kinds);
  return { text: redactor.push(new TextEncoder().encode(text), true), redacted: redactor.redacted };
}
