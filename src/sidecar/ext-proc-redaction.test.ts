import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { PiiKind } from '../compiler/detectors.ts';
import { findPii, PII_KINDS } from '../compiler/detectors.ts';
import { MAX_REDACTION_DEPTH, redact, redactionMarker } from '../compiler/redact.ts';
import type { Framing, StreamLimits } from './ext-proc-redaction.ts';
import { DEFAULT_STREAM_LIMITS, EventStreamRedactor, piiKindsOf, RedactionError, redactJson, redactText, responseKindOf } from './ext-proc-redaction.ts';

const ALL: readonly PiiKind[] = PII_KINDS;
const SAMPLES = ['dana@example.com', '123-45-6789', '4111 1111 1111 1111', '+1 415 555 2671', 'DE89 3704 0044 0532 0130 00', 'SSN: 078051120'];
const encode = (text: string): Uint8Array => new TextEncoder().encode(text);

/** The whole text with every match of the detectors replaced by its marker: what streaming must equal. */
function oracle(text: string, kinds: readonly PiiKind[] = ALL): string {
  let out = '';
  let copied = 0;
  for (const match of findPii(text, kinds)) {
    out += text.slice(copied, match.start) + redactionMarker(match.kind);
    copied = match.end;
  }
  return out + text.slice(copied);
}

describe('piiKindsOf', () => {
  it('expands pii to the five kinds and keeps the detectors order', () => {
    expect(piiKindsOf(['email', 'ssn'])).toEqual(['ssn', 'email']);
    expect(piiKindsOf(['pii', 'email'])).toEqual([...PII_KINDS]);
  });
});

describe('responseKindOf', () => {
  it.each([
    ['application/json', undefined, 'json'],
    ['application/problem+json; charset=utf-8', 'identity', 'json'],
    ['text/event-stream', undefined, 'event-stream'],
    ['application/x-ndjson', undefined, 'ndjson'],
    ['application/jsonl; charset=utf-8', undefined, 'ndjson'],
    ['text/event-stream', 'br', 'uninspectable'],
    ['text/plain; charset="UTF-8"', undefined, 'text'],
    ['application/xml', undefined, 'text'],
    [undefined, undefined, 'text'],
    ['application/json', 'gzip', 'uninspectable'],
    ['application/octet-stream', undefined, 'uninspectable'],
    ['text/plain; charset=iso-8859-1', undefined, 'uninspectable'],
    ['application/grpc', undefined, 'uninspectable'],
  ])('reads %s with encoding %s as %s', (type, encoding, kind) => {
    expect(responseKindOf(type, encoding).kind).toBe(kind);
  });
});

describe('redactJson', () => {
  it('replaces matches inside string values and keeps every other byte as written', () => {
    const text = '{ "patient" : {"ssn":"123-45-6789", "note": "mail dana@example.com today"},\n  "n": 1.50, "ok": true }';
    expect(redactJson(text, ALL)).toEqual({
      text: '{ "patient" : {"ssn":"[REDACTED:ssn]", "note": "mail [REDACTED:email] today"},\n  "n": 1.50, "ok": true }',
      redacted: ['patient.note:email', 'patient.ssn:ssn'],
    });
  });

  it('redacts integers holding a card number (beyond 2^53 too) as marker strings, and leaves fractions', () => {
    const text = '{"n": 4111111111111111, "long": 6011000990139424124, "f": 4111111111111111.5}';
    const result = redactJson(text, ALL);
    expect(result?.text).toBe('{"n": "[REDACTED:credit_card]", "long": "[REDACTED:credit_card]", "f": 4111111111111111.5}');
    expect(result?.redacted).toEqual(['long:credit_card', 'n:credit_card']);
  });

  it('redacts PII in keys, numbering keys of one object that redact alike, and names paths by the keys as passed on', () => {
    const text = '{"users": {"dana@example.com": {"card": "4111 1111 1111 1111"}, "lee@example.com": 2}, "ok": 1}';
    expect(redactJson(text, ALL)).toEqual({
      text: '{"users": {"[REDACTED:email]": {"card": "[REDACTED:credit_card]"}, "[REDACTED:email]#2": 2}, "ok": 1}',
      redacted: ['users.[REDACTED:email]#2:email', 'users.[REDACTED:email].card:credit_card', 'users.[REDACTED:email]:email'],
    });
  });

  it.each([
    ['nine bare digits under a key named for SSNs', '{"patient": {"ssn": "078051120"}}', '{"patient": {"ssn": "[REDACTED:ssn]"}}'],
    ['a card grouped by non-breaking spaces', '{"t": "4111\u00a01111\u00a01111\u00a01111"}', '{"t": "[REDACTED:credit_card]"}'],
    ['an e-mail written with an HTML reference', '{"t": "dana&#64;example.com"}', '{"t": "[REDACTED:email]"}'],
    ['an e-mail written with a JSON escape', '{"t": "dana\\u0040example.com"}', '{"t": "[REDACTED:email]"}'],
  ])('redacts %s', (_name, text, redacted) => {
    expect(redactJson(text, ALL)?.text).toBe(redacted);
  });

  it('redacts only the kinds asked for', () => {
    expect(redactJson('["dana@example.com", "123-45-6789"]', ['ssn'])?.text).toBe('["dana@example.com", "[REDACTED:ssn]"]');
  });

  it('replaces a container nested deeper than the redaction depth whole', () => {
    const deep = `${'['.repeat(MAX_REDACTION_DEPTH + 2)}"dana@example.com"${']'.repeat(MAX_REDACTION_DEPTH + 2)}`;
    const result = redactJson(deep, ALL);
    expect(result?.text).not.toContain('dana');
    expect(result?.redacted).toEqual([`${Array.from({ length: MAX_REDACTION_DEPTH }, () => '0').join('.')}:too_deep`]);
  });

  it.each(['{"a": 1,}', '[1 2]', '{"a" 1}', 'nul', '"unterminated', '{"a": 01}', '[] []', ''])('says %j is not JSON', (text) => {
    expect(redactJson(text, ALL)).toBeUndefined();
  });

  it('parses to what the request redaction makes of the same value (property)', () => {
    const leaf = fc.oneof(fc.constantFrom(...SAMPLES), fc.string(), fc.integer(), fc.constant(4111111111111111), fc.double({ noNaN: true, noDefaultInfinity: true }), fc.boolean(), fc.constant(null));
    const { value } = fc.letrec<{ value: unknown }>((tie) => ({
      value: fc.oneof({ depthSize: 'small' }, leaf, fc.array(tie('value'), { maxLength: 4 }), fc.dictionary(fc.stringMatching(/^[a-z_]{0,8}$/).filter((k) => k !== '__proto__'), tie('value'), { maxKeys: 4 })),
    }));
    fc.assert(
      fc.property(value, fc.subarray([...ALL], { minLength: 1 }), (json, kinds) => {
        const text = JSON.stringify(json);
        const result = redactJson(text, kinds);
        const expected = redact(JSON.parse(text), kinds);
        expect(result).toBeDefined();
        expect(JSON.parse(result?.text ?? 'null')).toEqual(expected.params);
        expect(result?.redacted).toEqual(expected.redacted);
      }),
      { numRuns: 300 },
    );
  });
});


/** Pushes each chunk (the last one ends the answer); returns what was passed on after each. */
function drive(framing: Framing, chunks: readonly string[], limits: Partial<StreamLimits> = {}): { outputs: string[]; redactor: EventStreamRedactor } {
  const redactor = new EventStreamRedactor(ALL, framing, limits);
  const outputs = chunks.map((chunk, index) => redactor.push(encode(chunk), index === chunks.length - 1));
  return { outputs, redactor };
}

const sse = (payload: unknown): string => `data: ${JSON.stringify(payload)}\n\n`;
/** An OpenAI chat completion chunk carrying `content` as its delta. */
const openAiChunk = (content: string): string =>
  sse({ id: 'chatcmpl-9', object: 'chat.completion.chunk', created: 1733400000, model: 'gpt-4o-mini', choices: [{ index: 0, delta: { content }, finish_reason: null }] });
/** An Anthropic content_block_delta event carrying `text`. */
const anthropicDelta = (text: string): string => `event: content_block_delta\n${sse({ type: 'content_block_delta', index: 0, delta: { type: 'text_delta', text } })}`;

/** The events of an SSE text, their data parsed as JSON. */
function events(text: string): unknown[] {
  const data = text.split('\n\n').filter((event) => event.includes('data: ') && !event.includes('[DONE]'));
  return data.map((event) => JSON.parse(event.slice(event.indexOf('data: ') + 6)) as unknown);
}

/** The text a reader joining the deltas at `path` sees. */
function joined(text: string, path: (event: unknown) => unknown): string {
  return events(text).map((event) => path(event)).filter((piece): piece is string => typeof piece === 'string').join('');
}

const openAiContent = (event: unknown): unknown => (event as { choices?: { delta?: { content?: unknown } }[] }).choices?.[0]?.delta?.content;
const delta = (event: unknown): unknown => (event as { delta?: unknown }).delta;

describe('EventStreamRedactor', () => {
  it('redacts a card streamed as deltas over four events: the marker in the first, nothing of the card in any', () => {
    const chunks = ['4111', ' 1111', ' 1111', ' 1111', ' thanks.'].map((piece) => sse({ delta: piece }));
    const { outputs, redactor } = drive('sse', chunks);
    const passed = outputs.join('');
    expect(passed).not.toMatch(/1111/);
    expect(events(passed)).toEqual([{ delta: '[REDACTED:credit_card]' }, { delta: '' }, { delta: '' }, { delta: '' }, { delta: ' thanks.' }]);
    expect(redactor.redacted).toEqual(['delta:credit_card']);
  });

  it('redacts an e-mail streamed in three events', () => {
    const { outputs } = drive('sse', ['write to dana', '@exam', 'ple.com today'].map((piece) => sse({ delta: piece })));
    expect(joined(outputs.join(''), delta)).toBe('write to [REDACTED:email] today');
  });

  it('passes nothing of a card that is still coming, and each event as soon as what it holds can no longer grow into a value', () => {
    const { outputs } = drive('sse', [...['Your card is', ' 4111', ' 1111', ' 1111', ' 1111', '. Bye'].map(openAiChunk), 'data: [DONE]\n\n']);
    expect(outputs[0]).toBe('');
    expect(outputs[1]).toBe(openAiChunk('Your card is'));
    expect(outputs.slice(2, 5)).toEqual(['', '', '']);
    expect(joined(outputs.join(''), openAiContent)).toBe('Your card is [REDACTED:credit_card]. Bye');
    // The ids, models and types of the chunks pass as they came.
    expect(outputs.join('')).toContain('"id":"chatcmpl-9","object":"chat.completion.chunk","created":1733400000,"model":"gpt-4o-mini"');
  });

  it("joins an Anthropic stream's text deltas across a ping", () => {
    const chunks = [anthropicDelta('SSN '), anthropicDelta('078-05-'), 'event: ping\ndata: {"type": "ping"}\n\n', anthropicDelta('1120.'), 'event: message_stop\ndata: {"type":"message_stop"}\n\n'];
    const passed = drive('sse', chunks).outputs.join('');
    expect(passed).not.toMatch(/078|1120/);
    expect(passed).toContain('"text":"[REDACTED:ssn]"');
  });

  it.each([
    ['an e-mail written with \\u0040 in an event', sse({ t: 'x' }).replace('"x"', '"mail dana\\u0040example.com"'), 'mail [REDACTED:email]'],
    ['card digits written as \\u0034 escapes', sse({ t: 'x' }).replace('"x"', '"card \\u0034\\u0031\\u0031\\u0031 1111 1111 1111"'), 'card [REDACTED:credit_card]'],
  ])('reads JSON escapes before matching: %s', (_name, chunk, text) => {
    expect(events(drive('sse', [chunk]).outputs.join(''))).toEqual([{ t: text }]);
  });

  it('reads NDJSON lines as JSON, \\u0040 included, and joins their deltas across lines', () => {
    const answer = '{"message":{"content":"mail dana\\u0040example.com, card 4111"}}\n{"message":{"content":" 1111 1111 1111"}}\n{"done":true}\n';
    const passed = drive('ndjson', [answer]).outputs.join('');
    expect(passed.split('\n').filter(Boolean).map((line) => JSON.parse(line) as unknown)).toEqual([
      { message: { content: 'mail [REDACTED:email], card [REDACTED:credit_card]' } },
      { message: { content: '' } },
      { done: true },
    ]);
  });

  it('redacts PII in the keys of an event', () => {
    const { outputs, redactor } = drive('sse', ['data: {"contacts": {"dana@example.com": "primary", "lee@example.com": "backup"}}\n\n']);
    expect(events(outputs.join(''))).toEqual([{ contacts: { '[REDACTED:email]': 'primary', '[REDACTED:email]#2': 'backup' } }]);
    expect(redactor.redacted).toEqual(['contacts.[REDACTED:email]#2:email', 'contacts.[REDACTED:email]:email']);
  });

  it('judges naming fields (ids, types, models) on their own, never holding them', () => {
    const event = sse({ id: 'call_4111', type: 'x', model: 'm-1111' });
    expect(drive('sse', [event, event]).outputs).toEqual([event, event]);
  });

  it('redacts data that is not JSON as text joined across events, and every other line on its own', () => {
    const chunks = ['id: 1\ndata: card 4111 1111\n\n', ': note dana@example.com\nid: 2\ndata:  1111 1111 ok\n\n'];
    expect(drive('sse', chunks).outputs.join('')).toBe('id: 1\ndata: card [REDACTED:credit_card]\n\n: note [REDACTED:email]\nid: 2\ndata:  ok\n\n');
  });

  it('keeps CRLF line ends and multi-line JSON data', () => {
    const event = 'event: result\r\ndata: {"a":\r\ndata:  "dana@example.com"}\r\n\r\n';
    expect(drive('sse', [event]).outputs.join('')).toBe('event: result\r\ndata: {"a":\r\ndata:  "[REDACTED:email]"}\r\n\r\n');
  });

  it('passes an event without PII byte for byte, whatever the chunks', () => {
    const event = 'event: message\ndata: {"result": {"text": "all done, 3 rows."}}\n\n';
    const bytes = encode(event);
    for (let cut = 1; cut < bytes.length; cut++) {
      const redactor = new EventStreamRedactor(ALL, 'sse');
      expect(redactor.push(bytes.subarray(0, cut), false) + redactor.push(bytes.subarray(cut), true)).toBe(event);
    }
  });

  it('decodes characters split across chunks', () => {
    const text = sse({ t: 'héllo → dana@example.com ✓' });
    const bytes = encode(text);
    for (let cut = 1; cut < bytes.length; cut++) {
      const redactor = new EventStreamRedactor(ALL, 'sse');
      const passed = redactor.push(bytes.subarray(0, cut), false) + redactor.push(bytes.subarray(cut), true);
      expect(events(passed)).toEqual([{ t: 'héllo → [REDACTED:email] ✓' }]);
    }
  });

  it.each<[string, string[], Partial<StreamLimits>, RegExp]>([
    ['a JSON event with a key twice', ['data: {"delta": "4111", "delta": "x"}\n\n'], {}, /key twice/],
    ['a value whose pieces are further apart than the horizon', [sse({ delta: 'mail dana' }), ...Array.from({ length: DEFAULT_STREAM_LIMITS.horizonEvents }, () => sse({ other: 'x' })), sse({ delta: '@example.com' })], {}, /continues text already passed on/],
    ['base64 holding an address that keeps growing past the bound', (Buffer.from(`mail dana@example.com ${'x'.repeat(6000)}`).toString('base64').match(/.{1,100}/gu) ?? []).map((piece) => sse({ delta: piece })), {}, /characters of a field/],
    ['more held back than a buffered answer may be', [sse({ delta: 'held' }), ...Array.from({ length: 20 }, () => sse({ other: 'x'.repeat(100) }))], { maxPending: 1000, horizonEvents: 100 }, /would have to be held back/],
  ])('fails closed on %s', (_name, chunks, limits, reason) => {
    const redactor = new EventStreamRedactor(ALL, 'sse', limits);
    expect(() => {
      chunks.forEach((chunk, index) => redactor.push(encode(chunk), index === chunks.length - 1));
    }).toThrow(reason);
  });

  it('fails closed on bytes that are not UTF-8', () => {
    expect(() => new EventStreamRedactor(ALL, 'sse').push(new Uint8Array([0x64, 0x61, 0x74, 0x61, 0x3a, 0xff, 0x0a]), false)).toThrow(RedactionError);
  });

  const word = fc.stringMatching(/^[a-z0-9]{1,12}$/);
  const sample = fc.constantFrom(...SAMPLES);
  const separator = fc.constantFrom('\n', ', ', '. ', '; ', ': ', '! ', '"', 'é', '→', '🙂');

  it('a reader joining the deltas sees exactly the whole-text redaction, however the text is split into events and the events into chunks (property)', () => {
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.oneof(sample, word), separator), { maxLength: 20 }), fc.array(fc.nat({ max: 400 }), { maxLength: 30 }), fc.array(fc.nat({ max: 4000 }), { maxLength: 12 }), (parts, splits, cuts) => {
        const text = parts.map(([value, apart]) => value + apart).join('');
        const points = [...new Set(splits.map((at) => Math.min(at, text.length)))].sort((a, b) => a - b);
        const pieces = [0, ...points].map((at, index) => text.slice(at, points[index] ?? text.length));
        const answer = encode(pieces.map((piece) => sse({ delta: piece })).join(''));
        const chunkAt = [...new Set(cuts.map((at) => Math.min(at, answer.length)))].sort((a, b) => a - b);
        const redactor = new EventStreamRedactor(ALL, 'sse');
        let passed = '';
        let from = 0;
        for (const at of chunkAt) {
          passed += redactor.push(answer.subarray(from, at), false);
          from = at;
        }
        passed += redactor.push(answer.subarray(from), true);
        expect(joined(passed, delta)).toBe(oracle(text));
      }),
      { numRuns: 400 },
    );
  });
});

describe('redactText', () => {
  it('redacts a whole text answer, escaped forms included', () => {
    expect(redactText('call +1 415 555 2671 or dana&#64;example.com', ALL)).toEqual({ text: 'call [REDACTED:phone] or [REDACTED:email]', redacted: [':email', ':phone'] });
  });
});
