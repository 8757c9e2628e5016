import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { PiiKind } from '../compiler/detectors.ts';
import { findPii, PII_KINDS } from '../compiler/detectors.ts';
import { MAX_REDACTION_DEPTH, redact, redactionMarker } from '../compiler/redact.ts';
import { MAX_HELD, MAX_VALUE_LENGTH, piiKindsOf, RedactionError, redactJson, redactText, responseKindOf, StreamRedactor } from './ext-proc-redaction.ts';

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

/** Pushes the text's UTF-8 bytes cut at the given offsets; returns what was passed on after each push. */
function stream(text: string, cuts: number[], kinds: readonly PiiKind[] = ALL): { outputs: string[]; redactor: StreamRedactor } {
  const bytes = encode(text);
  const points = [...new Set(cuts.map((c) => Math.min(c, bytes.length)))].sort((a, b) => a - b);
  const redactor = new StreamRedactor(kinds);
  const outputs: string[] = [];
  let from = 0;
  for (const point of points) {
    outputs.push(redactor.push(bytes.subarray(from, point), false));
    from = point;
  }
  outputs.push(redactor.push(bytes.subarray(from), true));
  return { outputs, redactor };
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

  it('keeps keys, redacts integers holding a card number (beyond 2^53 too) as marker strings, and leaves fractions', () => {
    const text = '{"dana@example.com": 4111111111111111, "long": 6011000990139424124, "f": 4111111111111111.5}';
    const result = redactJson(text, ALL);
    expect(result?.text).toBe('{"dana@example.com": "[REDACTED:credit_card]", "long": "[REDACTED:credit_card]", "f": 4111111111111111.5}');
    expect(result?.redacted).toEqual(['dana@example.com:credit_card', 'long:credit_card']);
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
      value: fc.oneof({ depthSize: 'small' }, leaf, fc.array(tie('value'), { maxLength: 4 }), fc.dictionary(fc.string().filter((k) => k !== '__proto__'), tie('value'), { maxKeys: 4 })),
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

describe('StreamRedactor', () => {
  it('redacts an SSN split across two chunks, passing no digit of it before the second chunk', () => {
    const { outputs } = stream('data: {"ssn": "123-45-6789"}\n\n', [encode('data: {"ssn": "123-45-').length]);
    expect(outputs[0]).toBe('data: {"ssn": "');
    expect(outputs.join('')).toBe('data: {"ssn": "[REDACTED:ssn]"}\n\n');
  });

  it('passes a complete event-stream event at once, holding nothing back', () => {
    const redactor = new StreamRedactor(ALL);
    const event = 'event: message\ndata: {"result": "mail [x]"}\n\n';
    expect(redactor.push(encode(event), false)).toBe(event);
    expect(redactor.heldLength).toBe(0);
  });

  it('holds back only the trailing run of characters a value may hold', () => {
    const redactor = new StreamRedactor(ALL);
    expect(redactor.push(encode('data: {"t": "call +1 415'), false)).toBe('data: {"t": "');
    expect(redactor.heldLength).toBe('call +1 415'.length);
    expect(redactor.push(encode(' 555 2671"}\n\n'), false)).toBe('call [REDACTED:phone]"}\n\n');
  });

  it('lists what it redacted by detector, never the text', () => {
    const { redactor } = stream('a 123-45-6789 b dana@example.com', [3, 20]);
    expect(redactor.redacted).toEqual([':email', ':ssn']);
  });

  it('decodes characters split across chunks', () => {
    const text = 'héllo → dana@example.com ✓';
    const bytes = encode(text);
    for (let cut = 1; cut < bytes.length; cut++) expect(stream(text, [cut]).outputs.join('')).toBe(oracle(text));
  });

  it('fails closed on bytes that are not UTF-8', () => {
    const redactor = new StreamRedactor(ALL);
    expect(() => redactor.push(new Uint8Array([0x61, 0xff, 0x0a]), false)).toThrow(RedactionError);
  });

  it(`ends with an error rather than hold more than ${MAX_HELD} characters back`, () => {
    const redactor = new StreamRedactor(ALL);
    redactor.push(encode('mail a@b.c'), false);
    // The address keeps growing ("a@b.cooo…"): every cut would split it.
    expect(() => {
      for (let i = 0; i < 20; i++) redactor.push(encode('o'.repeat(100)), false);
    }).toThrow(RedactionError);
  });

  const word = fc.stringMatching(/^[a-z0-9]{1,12}$/);
  const sample = fc.constantFrom(...SAMPLES);
  const cutsOf = (max: number): fc.Arbitrary<number[]> => fc.array(fc.nat({ max }), { maxLength: 16 });

  /** Pushes the bytes cut at the offsets, checking the held tail after each push; returns all that was passed on. */
  function streamChecked(text: string, cuts: number[], kinds: readonly PiiKind[] = ALL): string {
    const bytes = encode(text);
    const points = [...new Set(cuts.map((c) => Math.min(c, bytes.length)))].sort((a, b) => a - b);
    const redactor = new StreamRedactor(kinds);
    let out = '';
    let from = 0;
    for (const point of points) {
      out += redactor.push(bytes.subarray(from, point), false);
      expect(redactor.heldLength).toBeLessThanOrEqual(2 * MAX_VALUE_LENGTH);
      from = point;
    }
    return out + redactor.push(bytes.subarray(from), true);
  }

  it('passes on exactly the whole-text redaction of values set apart by punctuation or line breaks, whatever the chunks (property)', () => {
    const separator = fc.constantFrom('\n', '\n\n', ', ', '. ', '"', '", "', ': ', '; ', '\ndata: ', 'é', '→', '🙂');
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.oneof(sample, word, fc.stringMatching(/^[a-z ]{1,300}$/)), separator), { maxLength: 30 }), cutsOf(1500), fc.subarray([...ALL], { minLength: 1 }), (parts, cuts, kinds) => {
        const text = parts.map(([value, apart]) => value + apart).join('');
        expect(streamChecked(text, cuts, kinds)).toBe(oracle(text, kinds));
      }),
      { numRuns: 500 },
    );
  });

  it('never passes a value the whole-text redaction removes, even with values side by side (property)', () => {
    fc.assert(
      fc.property(fc.array(fc.oneof(sample, word), { minLength: 1, maxLength: 40 }), cutsOf(800), (pieces, cuts) => {
        const text = pieces.join(' ');
        const streamed = streamChecked(text, cuts);
        const whole = oracle(text);
        const count = (haystack: string, needle: string): number => haystack.split(needle).length - 1;
        for (const match of findPii(text)) {
          const value = text.slice(match.start, match.end);
          // Detectors read runs of digits greedily, so a value beside another may be found in one reading and not the other:
          // streaming may redact more than the whole text, never less.
          expect(count(streamed, value)).toBeLessThanOrEqual(count(whole, value));
        }
      }),
      { numRuns: 300 },
    );
  });
});

describe('redactText', () => {
  it('redacts a whole text answer', () => {
    expect(redactText('call +1 415 555 2671 or dana@example.com', ALL)).toEqual({ text: 'call [REDACTED:phone] or [REDACTED:email]', redacted: [':email', ':phone'] });
  });
});
