// Redaction of a tool's answer with the compiler's PII detectors, for the
// ext_proc filter. A JSON answer is redacted whole, value by value and key by
// key (bytes outside them unchanged); a text answer whole. An event stream
// (text/event-stream, NDJSON) is redacted event by event as it flows, each
// event's JSON read as JSON, and the pieces of one field across events (the
// deltas an LLM streams) read joined, as the reader who concatenates them
// sees them. Pure: no transport, no clock.
import type { PiiKind, PiiMatch } from '../compiler/detectors.ts';
import { childPath, findPii, PII_KINDS, piiReading, readingStart } from '../compiler/detectors.ts';
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
export type ResponseKind = { kind: 'json' | 'text' | 'event-stream' | 'ndjson' } | { kind: 'uninspectable'; reason: string };

const TEXT_TYPES = new Set(['application/xml', 'application/javascript', 'application/x-www-form-urlencoded']);
const NDJSON_TYPES = new Set(['application/x-ndjson', 'application/ndjson', 'application/jsonl', 'application/x-jsonlines', 'application/jsonlines', 'application/json-lines']);

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
  if (NDJSON_TYPES.has(type)) return { kind: 'ndjson' };
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

/** One value or key judged on its own: the text with its matches replaced. */
function redactAlone(text: string, kinds: readonly PiiKind[], path: string, field: string | undefined, noted: Set<string>): string {
  const matches = findPii(text, kinds, field === undefined ? {} : { field });
  return matches.length === 0 ? text : markMatches(text, matches, path, noted);
}

export interface Redacted {
  /** The answer as passed on. */
  text: string;
  /** `PATH:KIND`, sorted: a JSON path into the answer (its keys as passed on), or '' for text. Never the text. */
  redacted: string[];
}

// ---------------------------------------------------------------------------------------------
// JSON, read token by token
// ---------------------------------------------------------------------------------------------

const WHITESPACE = /[ \t\n\r]*/y;
// eslint-disable-next-line no-control-regex -- a JSON string may not hold raw control characters
const STRING = /"(?:[^"\\\u0000-\u001f]|\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4}))*"/y;
const NUMBER = /-?(?:0|[1-9]\d*)(\.\d+)?(?:[eE][+-]?\d+)?/y;
const LITERAL = /true|false|null/y;

interface Frame {
  kind: 'object' | 'array';
  /** Object: the key of the member being read, as passed on; array: the index of the item. */
  at: string;
  index: number;
  /** Object: the keys read so far as written, and as passed on. */
  written: Set<string>;
  shown: Set<string>;
}

/** A string value of a JSON text, for the caller to judge: `text.slice(start, end)` is its token. */
export interface JsonString {
  start: number;
  end: number;
  value: string;
  /** Its dotted path (keys as passed on) and the key it is the value of. */
  path: string;
  field: string | undefined;
}

class NotJson extends Error {}

/**
 * Reads JSON text token by token. Keys, integers and containers nested too
 * deep are judged on the spot (a key's matches replaced; two keys that
 * redact alike get `#2`, `#3` appended so the object keeps its members);
 * string values are handed to `onString`, which answers their replacement
 * now (a whole answer) or later (a stream: undefined, the caller splices).
 */
class JsonReader {
  private readonly text: string;
  private readonly kinds: readonly PiiKind[];
  private readonly onString: (string: JsonString) => string | undefined;
  private readonly frames: Frame[] = [];
  /** Replacements of tokens, in order: [start, end, text]. */
  readonly splices: [number, number, string][] = [];
  readonly noted = new Set<string>();
  duplicate = false;
  private position = 0;

  constructor(text: string, kinds: readonly PiiKind[], onString: (string: JsonString) => string | undefined) {
    this.text = text;
    this.kinds = kinds;
    this.onString = onString;
  }

  run(): void {
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
  }

  private get path(): string {
    return this.frames.reduce((path, frame) => childPath(path, frame.at), '');
  }

  /** The key the value being read belongs to, if it is an object's member. */
  private get field(): string | undefined {
    const frame = this.frames.at(-1);
    return frame?.kind === 'object' ? frame.at : undefined;
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

  private member(frame: Frame): void {
    this.skipWhitespace();
    const start = this.position;
    const key = JSON.parse(this.token(STRING)) as string;
    if (frame.written.has(key)) this.duplicate = true;
    frame.written.add(key);
    const matches = findPii(key, this.kinds);
    let shown = key;
    if (matches.length > 0) {
      const marked = markMatches(key, matches, '', new Set());
      shown = marked;
      for (let n = 2; frame.shown.has(shown); n++) shown = `${marked}#${String(n)}`;
      this.splices.push([start, this.position, JSON.stringify(shown)]);
      const path = childPath(this.frames.slice(0, -1).reduce((parent, outer) => childPath(parent, outer.at), ''), shown);
      for (const match of matches) this.noted.add(`${path}:${match.kind}`);
    }
    frame.shown.add(shown);
    frame.at = shown;
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
      this.container(start, first);
      return;
    }
    if (first === '"') {
      const written = this.token(STRING);
      const replacement = this.onString({ start, end: this.position, value: JSON.parse(written) as string, path: this.path, field: this.field });
      if (replacement !== undefined) this.splices.push([start, this.position, replacement]);
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
    const redacted = redactAlone(digits, this.kinds, this.path, this.field, this.noted);
    if (redacted !== digits) this.splices.push([start, this.position, JSON.stringify(redacted)]);
  }

  private container(start: number, first: '{' | '['): void {
    if (this.frames.length >= MAX_REDACTION_DEPTH) {
      this.skipContainer();
      this.noted.add(`${this.path}:too_deep`);
      this.splices.push([start, this.position, JSON.stringify(REDACTED_TOO_DEEP)]);
      return;
    }
    this.position++;
    const frame: Frame = { kind: first === '{' ? 'object' : 'array', at: '', index: 0, written: new Set(), shown: new Set() };
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

/** The text with the [start, end, replacement] splices (in order, apart) applied. */
function applySplices(text: string, splices: readonly [number, number, string][]): string {
  let out = '';
  let copied = 0;
  for (const [start, end, replacement] of [...splices].sort((a, b) => a[0] - b[0])) {
    out += text.slice(copied, start) + replacement;
    copied = end;
  }
  return out + text.slice(copied);
}

/**
 * Redacts a JSON answer value by value, as the request's `redact` does: every
 * string and every integer holding a match of the kinds gets the match
 * replaced by its marker (a key names the field: `{"ssn": "078051120"}` is an
 * SSN), every key holding a match gets it replaced too (a key that redacts
 * like an earlier one of its object gets `#2`, `#3`), containers nested deeper
 * than MAX_REDACTION_DEPTH are replaced whole. Everything else is passed byte
 * for byte. Undefined when the text is not JSON (the caller redacts it as text).
 */
export function redactJson(text: string, kinds: readonly PiiKind[]): Redacted | undefined {
  const noted = new Set<string>();
  const reader = new JsonReader(text, kinds, (string) => {
    const redacted = redactAlone(string.value, kinds, string.path, string.field, noted);
    return redacted === string.value ? undefined : JSON.stringify(redacted);
  });
  try {
    reader.run();
  } catch (error) {
    if (error instanceof NotJson) return undefined;
    throw error;
  }
  reader.noted.forEach((entry) => noted.add(entry));
  return { text: applySplices(text, reader.splices), redacted: [...noted].sort() };
}

/** Redacts a whole text answer. */
export function redactText(text: string, kinds: readonly PiiKind[]): Redacted {
  const noted = new Set<string>();
  return { text: markMatches(text, findPii(text, kinds), '', noted), redacted: [...noted].sort() };
}

// ---------------------------------------------------------------------------------------------
// Event streams
// ---------------------------------------------------------------------------------------------

/** The bounds of stream redaction; see docs/sidecar.md, "Envoy ext_proc: redaction in the path". */
export interface StreamLimits {
  /** Characters of a field's joined text already judged that the detectors still see before new text (an `SSN:` label). */
  leftContext: number;
  /** The longest trailing run held back while it may grow into a value: plain (digits, words), … */
  plainRun: number;
  /** … with an `@` in it (an address: 64 + 1 + 255), … */
  addressRun: number;
  /** … or written with escapes (`&#64;`, `%40`, `\u0040`) or base64. */
  encodedRun: number;
  /** The most of one field's text held back at once (a run that keeps growing, or a value the cut would split): past it the answer fails. */
  maxHeld: number;
  /** Events that may pass before a field that got no new piece has its held tail judged as final. */
  horizonEvents: number;
  /** Characters of events held back and of an event not yet complete: past it the answer fails (no more than a buffered answer). */
  maxPending: number;
  /** Fields with text still held, at most: past it the answer fails. */
  maxChannels: number;
}

export const DEFAULT_STREAM_LIMITS: Readonly<StreamLimits> = {
  leftContext: 40,
  plainRun: 96,
  addressRun: 320,
  encodedRun: 2048,
  maxHeld: 4096,
  horizonEvents: 8,
  maxPending: 1024 * 1024,
  maxChannels: 10_000,
};

/**
 * Fields whose values name or classify an event (ids, types, roles, models,
 * status): a reader takes each whole, never joins them across events. Each is
 * judged on its own; every other string field is joined.
 */
const NAMING_FIELDS = new Set(['id', 'object', 'type', 'role', 'model', 'name', 'event', 'jsonrpc', 'method', 'status', 'finish_reason', 'stop_reason', 'system_fingerprint', 'service_tier']);
export function isNamingField(field: string | undefined): boolean {
  return field !== undefined && (NAMING_FIELDS.has(field) || /(?:_id|Id|_ID)$/u.test(field));
}

/** Characters a value may be written with: letters, digits, marks, spaces, invisible characters, the separators of cards and phones, and what escapes and addresses are made of. */
const VALUE_CHARACTER = /[\p{L}\p{N}\p{M}\p{Zs}\p{Cf}\p{Pd}._%+@()/&#;\\=[\]{}]/u;
/** The same without spaces: what an address, an escape or base64 is one word of. */
const WORD_CHARACTER = /[\p{L}\p{N}\p{M}\p{Cf}\p{Pd}._%+@()/&#;\\=[\]{}]/u;
/** What a card, SSN or phone number is written with, once read (escapes decoded, spaces and dashes ASCII). */
const NUMBER_CHARACTER = /[0-9 ./()+-]/u;
/** The start of an IBAN at the end of a text: country, check digits, and what followed so far. */
const IBAN_START = /[A-Za-z]{2}\d{2}(?: ?[A-Za-z0-9]){0,30} ?$/u;
/** An escape cut off by the end of what came so far (`&#5`, `%3`, `\u00`). */
const PARTIAL_ESCAPE = /(?:&#?[A-Za-z0-9]{0,8}|%[0-9A-Fa-f]?|\\(?:u\{?[0-9A-Fa-f]{0,5}|x[0-9A-Fa-f]?)?)$/u;
/** An `[at]`, `(dot)` near the end: the value may span words. */
const BRACKET = /[[({]/u;
const ENCODED_RUN = /[&%\\]|[A-Za-z0-9+/=_-]{16,}$/u;
const ADDRESS_RUN = /@|[[({] ?at ?[\])}]/iu;

/** The length of the trailing run of characters of `set`, looking back at most `limit`. */
function trailing(text: string, set: RegExp, limit = text.length): number {
  let start = text.length;
  while (start > 0 && text.length - start < limit && set.test(text.charAt(start - 1))) start--;
  return text.length - start;
}

/**
 * How much of the end of a field's text is held back: what may still grow into a value. In the
 * text as the detectors read it, the last word (an address, an escape, base64), the trailing run
 * of what numbers are written with (with an escape cut off at the end put aside), and an IBAN
 * begun; near an `[at]`, the whole trailing run of value characters. At most the run bound for
 * what it holds.
 */
function heldRun(window: string, limits: StreamLimits): number {
  const tail = window.slice(-limits.encodedRun);
  let held: number;
  if (BRACKET.test(tail.slice(-limits.plainRun))) {
    held = trailing(tail, VALUE_CHARACTER);
  } else {
    const reading = piiReading(tail);
    const text = reading.text;
    const whole = text.replace(PARTIAL_ESCAPE, '');
    const start = Math.min(text.length - trailing(text, WORD_CHARACTER), whole.length - trailing(whole, NUMBER_CHARACTER), IBAN_START.exec(whole)?.index ?? text.length);
    held = start >= text.length ? 0 : tail.length - readingStart(reading, start);
  }
  const run = tail.slice(tail.length - held);
  const bound = ENCODED_RUN.test(run) ? limits.encodedRun : ADDRESS_RUN.test(run) ? limits.addressRun : limits.plainRun;
  return Math.min(held, bound);
}

/**
 * One field's text joined across events: where it is judged up to (`cut`), where it was passed on up
 * to (`released`), and the matches judged and not yet passed. Offsets count from the field's first piece.
 */
interface Channel {
  key: string;
  field: string | undefined;
  /** The text from `origin` on (what is held, and the left context before it). */
  text: string;
  origin: number;
  cut: number;
  released: number;
  matches: PiiMatch[];
  /** Events since its last piece. */
  idle: number;
}

const channelEnd = (channel: Channel): number => channel.origin + channel.text.length;

/** A string of an event that is one piece of a channel's text: released when the channel's cut has passed it. */
interface Piece {
  channel: Channel;
  start: number;
  end: number;
  value: string;
  /** Where in the event's payload it is written, and whether as a JSON string token or as raw text. */
  at: [number, number];
  json: boolean;
}

/** An SSE line: `data: x`, `event: x`, `: comment`, with its terminator. */
interface Line {
  field: string;
  prefix: string;
  value: string;
  terminator: string;
}

interface PendingEvent {
  /** The event as received, passed on as it is when nothing in it changes. */
  raw: string;
  /** SSE: its lines; NDJSON: one line. */
  lines: Line[];
  /** The data (SSE: data lines joined with \n; NDJSON: the line) and the replacements judged on the spot. */
  payload: string;
  splices: [number, number, string][];
  pieces: Piece[];
  /** Lines other than data, as passed on. */
  others: Map<number, string>;
}

export type Framing = 'sse' | 'ndjson';

/**
 * Redacts an event stream (text/event-stream or NDJSON) event by event as it
 * flows. An event is read whole (SSE: up to its blank line; NDJSON: its line).
 * A data payload that is JSON is read as JSON: escapes decoded, keys and
 * integers judged on the spot, and each string value a piece of its field's
 * text (its JSON path), joined with the same field's pieces in the events
 * before: `{"delta":"4111"}`, `{"delta":" 1111"}`, … read as
 * "4111 1111 …". A payload that is not JSON is a piece of the stream's text
 * (path ''). Naming fields (isNamingField) and lines other than data are
 * judged on their own.
 *
 * Events pass in order, each as soon as every piece in it is judged: a
 * field's trailing run that may still grow into a value is held back (at most
 * a run bound), and with it its event and those after. It is judged as final
 * when the field gets its next piece, when `horizonEvents` events passed
 * without one, or at the end. A match is redacted in the pieces it spans: the
 * first gets the marker, the others lose their part. Fails closed
 * (RedactionError) on bytes that are not UTF-8, a JSON event with a key twice,
 * a value found to continue text already passed on (its pieces further apart
 * than the horizon), or past maxHeld, maxPending or maxChannels.
 */
export class EventStreamRedactor {
  private readonly kinds: readonly PiiKind[];
  private readonly framing: Framing;
  private readonly limits: StreamLimits;
  private readonly decoder = new TextDecoder('utf-8', { fatal: true });
  private readonly channels = new Map<string, Channel>();
  /** The channels with text past their cut. */
  private readonly holding = new Set<Channel>();
  private readonly queue: PendingEvent[] = [];
  private readonly noted = new Set<string>();
  private buffer = '';
  private queued = 0;

  constructor(kinds: readonly PiiKind[], framing: Framing, limits: Partial<StreamLimits> = {}) {
    this.kinds = kinds;
    this.framing = framing;
    this.limits = { ...DEFAULT_STREAM_LIMITS, ...limits };
  }

  /** What was redacted so far, as `PATH:KIND` (PATH a JSON path into an event's data, '' for text). */
  get redacted(): string[] {
    return [...this.noted].sort();
  }

  /** The characters held back now: events waiting, and an event not yet complete. */
  get heldLength(): number {
    return this.queued + this.buffer.length;
  }

  /** The text to pass on in place of a chunk. Throws RedactionError when the answer cannot be redacted. */
  push(chunk: Uint8Array, end: boolean): string {
    try {
      this.buffer += this.decoder.decode(chunk, { stream: !end });
    } catch {
      throw new RedactionError('the answer is not UTF-8 text');
    }
    for (let event = this.nextEvent(end); event !== undefined; event = this.nextEvent(end)) this.accept(event);
    if (end) for (const channel of this.holding) this.judge(channel, true);
    const out = this.release();
    if (this.heldLength > this.limits.maxPending) throw new RedactionError(`more than ${String(this.limits.maxPending)} characters of the answer would have to be held back to redact it`);
    return out;
  }

  /** The next complete event's text, taken from the buffer (at the end, whatever is left). */
  private nextEvent(end: boolean): string | undefined {
    if (this.buffer === '') return undefined;
    const terminator = this.framing === 'ndjson' ? /\n/u : SSE_EVENT_END;
    const found = terminator.exec(this.buffer);
    let length: number | undefined = found === null ? undefined : found.index + found[0].length;
    if (length === undefined && end) length = this.buffer.length;
    if (length === undefined) return undefined;
    const event = this.buffer.slice(0, length);
    this.buffer = this.buffer.slice(length);
    return event;
  }

  private accept(raw: string): void {
    const event = this.framing === 'ndjson' ? ndjsonEvent(raw) : sseEvent(raw);
    const touched = new Set<Channel>();
    event.lines.forEach((line, index) => {
      if (this.framing === 'sse' && line.field !== 'data') {
        const value = redactAlone(line.value, this.kinds, '', undefined, this.noted);
        if (value !== line.value) event.others.set(index, value);
      }
    });
    this.readPayload(event, touched);
    this.queue.push(event);
    this.queued += raw.length;
    for (const channel of touched) this.judge(channel, false);
    for (const channel of this.holding) {
      if (!touched.has(channel) && ++channel.idle >= this.limits.horizonEvents) this.judge(channel, true);
    }
  }

  /** The data of an event: JSON read as JSON, anything else a piece of the stream's text. */
  private readPayload(event: PendingEvent, touched: Set<Channel>): void {
    if (event.payload === '' && !event.lines.some((line) => line.field === 'data')) return;
    const reader = new JsonReader(event.payload, this.kinds, (string) => {
      if (isNamingField(string.field)) {
        const redacted = redactAlone(string.value, this.kinds, string.path, string.field, this.noted);
        return redacted === string.value ? undefined : JSON.stringify(redacted);
      }
      event.pieces.push(this.piece(string.path, string.field, string.value, [string.start, string.end], true, touched));
      return undefined;
    });
    try {
      reader.run();
    } catch (error) {
      if (!(error instanceof NotJson)) throw error;
      event.pieces = [this.piece('', undefined, event.payload, [0, event.payload.length], false, touched)];
      return;
    }
    if (reader.duplicate) throw new RedactionError('an event of the answer has a JSON object with a key twice: readers may take either value');
    event.splices = reader.splices;
    reader.noted.forEach((entry) => this.noted.add(entry));
  }

  private piece(key: string, field: string | undefined, value: string, at: [number, number], json: boolean, touched: Set<Channel>): Piece {
    let channel = this.channels.get(key);
    if (channel === undefined) {
      this.dropSettledChannels();
      channel = { key, field, text: '', origin: 0, cut: 0, released: 0, matches: [], idle: 0 };
      this.channels.set(key, channel);
    }
    const start = channelEnd(channel);
    channel.text += value;
    channel.idle = 0;
    touched.add(channel);
    return { channel, start, end: start + value.length, value, at, json };
  }

  /** Forgets fields with nothing held or waiting once there are too many; fails when too many still hold text. */
  private dropSettledChannels(): void {
    if (this.channels.size < this.limits.maxChannels) return;
    for (const [key, channel] of this.channels) {
      if (channel.cut >= channelEnd(channel) && channel.released >= channel.cut) this.channels.delete(key);
    }
    if (this.channels.size >= this.limits.maxChannels) throw new RedactionError(`more than ${String(this.limits.maxChannels)} fields of the answer would have to be held back to redact it`);
  }

  /** Judges a channel's text past its cut: finds the matches, moves the cut up to what can no longer grow into one (everything when final). */
  private judge(channel: Channel, final: boolean): void {
    const end = channelEnd(channel);
    if (channel.cut >= end) return;
    const windowStart = Math.max(channel.origin, channel.cut - this.limits.leftContext);
    const window = channel.text.slice(windowStart - channel.origin);
    const found = findPii(window, this.kinds, channel.field === undefined ? {} : { field: channel.field })
      .map((match) => ({ kind: match.kind, start: match.start + windowStart, end: match.end + windowStart }))
      .filter((match) => match.end > channel.cut);
    let cut = final ? end : end - heldRun(window, this.limits);
    for (const match of found) {
      if (match.start < cut && match.end > cut) cut = Math.max(channel.cut, match.start);
    }
    cut = Math.max(cut, channel.cut);
    if (cut < end) this.holding.add(channel);
    else this.holding.delete(channel);
    if (end - cut > this.limits.maxHeld) throw new RedactionError(`more than ${String(this.limits.maxHeld)} characters of a field would have to be held back to redact the answer`);
    for (const match of found) {
      if (match.end > cut) break;
      if (match.start < channel.released) throw new RedactionError('a value in the answer continues text already passed on: its pieces are further apart than the redaction window');
      const previous = channel.matches.at(-1);
      channel.matches.push({ ...match, start: Math.max(match.start, previous?.end ?? 0) });
    }
    channel.cut = cut;
    const keep = Math.max(channel.origin, cut - this.limits.leftContext);
    channel.text = channel.text.slice(keep - channel.origin);
    channel.origin = keep;
  }

  /** Passes on the events at the head of the queue whose pieces are all judged. */
  private release(): string {
    let out = '';
    const judged = (event: PendingEvent | undefined): event is PendingEvent => event?.pieces.every((piece) => piece.end <= piece.channel.cut) === true;
    for (let event = this.queue[0]; judged(event); event = this.queue[0]) {
      this.queue.shift();
      this.queued -= event.raw.length;
      out += this.rebuild(event);
    }
    return out;
  }

  /** The event as it is passed on: as received when nothing in it changed. */
  private rebuild(event: PendingEvent): string {
    const splices = [...event.splices];
    for (const piece of event.pieces) {
      const value = this.redactPiece(piece);
      if (value !== piece.value) splices.push([piece.at[0], piece.at[1], piece.json ? JSON.stringify(value) : value]);
    }
    if (splices.length === 0 && event.others.size === 0) return event.raw;
    const payload = applySplices(event.payload, splices);
    if (this.framing === 'ndjson') return payload + (event.lines[0]?.terminator ?? '');
    const dataLines = payload.split('\n');
    let written = false;
    let out = '';
    event.lines.forEach((line, index) => {
      if (line.field !== 'data') {
        out += line.prefix + (event.others.get(index) ?? line.value) + line.terminator;
      } else if (!written) {
        written = true;
        out += dataLines.map((data) => line.prefix + data + line.terminator).join('');
      }
    });
    return out + event.raw.slice(event.lines.reduce((length, line) => length + line.prefix.length + line.value.length + line.terminator.length, 0));
  }

  /** A piece's value as passed on: the part of each match in it replaced, the marker in the piece where the match begins. */
  private redactPiece(piece: Piece): string {
    const { channel } = piece;
    let out = '';
    let copied = piece.start;
    for (const match of channel.matches) {
      if (match.end <= piece.start || match.start >= piece.end) continue;
      const from = Math.max(match.start, piece.start);
      out += piece.value.slice(copied - piece.start, from - piece.start);
      if (match.start >= piece.start) {
        out += redactionMarker(match.kind);
        this.noted.add(`${channel.key}:${match.kind}`);
      }
      copied = Math.min(match.end, piece.end);
    }
    out += piece.value.slice(copied - piece.start);
    channel.released = Math.max(channel.released, piece.end);
    channel.matches = channel.matches.filter((match) => match.end > channel.released);
    return out;
  }
}

/** An SSE event ends at a blank line (a lone \r at the end of what came so far may be the start of \r\n). */
const SSE_EVENT_END = /^(?:\r\n|\r(?![\n]|$)|\n)|(?:\r\n|\r(?![\n]|$)|\n)(?:\r\n|\r(?![\n]|$)|\n)/u;

const LINE = /([^\r\n]*)(\r\n|\r|\n|$)/gu;

/** An SSE event's lines and its data (data lines joined with \n). */
function sseEvent(raw: string): PendingEvent {
  const lines: Line[] = [];
  for (const match of raw.matchAll(LINE)) {
    const [, text = '', terminator = ''] = match;
    if (text === '' && terminator === '') break;
    if (text === '') {
      lines.push({ field: '', prefix: '', value: '', terminator });
      continue;
    }
    const colon = text.indexOf(':');
    const field = colon === -1 ? text : text.slice(0, colon);
    const valueAt = colon === -1 ? text.length : colon + (text.charAt(colon + 1) === ' ' ? 2 : 1);
    // A comment (`: …`) has the empty field name: judged on its own like any line that is not data.
    lines.push({ field: field === '' ? ':' : field, prefix: text.slice(0, valueAt), value: text.slice(valueAt), terminator });
  }
  const payload = lines.filter((line) => line.field === 'data').map((line) => line.value).join('\n');
  return { raw, lines: lines.filter((line) => line.field !== ''), payload, splices: [], pieces: [], others: new Map() };
}

/** An NDJSON line and its terminator. */
function ndjsonEvent(raw: string): PendingEvent {
  const terminator = /\r?\n$/u.exec(raw)?.[0] ?? '';
  const payload = raw.slice(0, raw.length - terminator.length);
  return { raw, lines: [{ field: 'data', prefix: '', value: payload, terminator }], payload, splices: [], pieces: [], others: new Map() };
}
