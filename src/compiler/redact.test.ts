import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { luhnValid } from './detectors.ts';
import { MAX_REDACTION_DEPTH, redact, type Redaction } from './redact.ts';

describe('redact', () => {
  it.each<[string, unknown, readonly Redaction[], unknown, string[]]>([
    ['replaces an SSN inside text', { note: 'ssn 123-45-6789 ok' }, ['ssn'], { note: 'ssn [REDACTED:ssn] ok' }, ['note:ssn']],
    ['replaces an e-mail address', { to: 'dana@example.com' }, ['email'], { to: '[REDACTED:email]' }, ['to:email']],
    [
      'replaces a card number written with spaces',
      { memo: 'paid with 4111 1111 1111 1111.' },
      ['credit_card'],
      { memo: 'paid with [REDACTED:credit_card].' },
      ['memo:credit_card'],
    ],
    ['turns an integer card number into the marker', { card: 4111111111111111 }, ['credit_card'], { card: '[REDACTED:credit_card]' }, ['card:credit_card']],
    ['replaces a phone number', { p: 'call (415) 555-2671' }, ['phone'], { p: 'call [REDACTED:phone]' }, ['p:phone']],
    ['replaces an IBAN', { iban: 'DE89 3704 0044 0532 0130 00' }, ['iban'], { iban: '[REDACTED:iban]' }, ['iban:iban']],
    [
      'redacts all five kinds for pii',
      { a: 'a@b.io 123-45-6789', b: ['+14155552671'] },
      ['pii'],
      { a: '[REDACTED:email] [REDACTED:ssn]', b: ['[REDACTED:phone]'] },
      ['a:email', 'a:ssn', 'b.0:phone'],
    ],
    ['leaves kinds not asked for', { a: 'a@b.io 123-45-6789' }, ['ssn'], { a: 'a@b.io [REDACTED:ssn]' }, ['a:ssn']],
    [
      'replaces a whole parameter of any type',
      { notes: { text: 'x', n: 1 }, keep: 1 },
      [{ param: 'notes' }],
      { notes: '[REDACTED]', keep: 1 },
      ['notes:param'],
    ],
    ['follows dotted paths through arrays', { items: [{ s: 'a' }, { s: 'b' }] }, [{ param: 'items.1.s' }], { items: [{ s: 'a' }, { s: '[REDACTED]' }] }, ['items.1.s:param']],
    ['ignores a path that is not there', { a: 1 }, [{ param: 'b.c' }], { a: 1 }, []],
    ['leaves values without matches alone', { a: 'hello', b: true, c: null, d: 1.5 }, ['pii'], { a: 'hello', b: true, c: null, d: 1.5 }, []],
    ['redacts nothing for an empty list', { a: 'a@b.io' }, [], { a: 'a@b.io' }, []],
    ['redacts a string at the root', 'a@b.io', ['email'], '[REDACTED:email]', [':email']],
    ['reads nine bare digits as an SSN in a field named for it', { patient: { ssn: '078051120' } }, ['ssn'], { patient: { ssn: '[REDACTED:ssn]' } }, ['patient.ssn:ssn']],
    ['reads an integer as an SSN in a field named for it', { taxId: 123456789 }, ['ssn'], { taxId: '[REDACTED:ssn]' }, ['taxId:ssn']],
    ['removes an e-mail written with an HTML reference, reference and all', { to: 'dana&#64;example.com' }, ['email'], { to: '[REDACTED:email]' }, ['to:email']],
    ['removes a card grouped by non-breaking spaces, spaces and all', { memo: 'card 4111\u00a01111\u00a01111\u00a01111.' }, ['credit_card'], { memo: 'card [REDACTED:credit_card].' }, ['memo:credit_card']],
    ['removes a card sent as base64', { blob: 'NDExMTExMTExMTExMTExMQ==' }, ['credit_card'], { blob: '[REDACTED:credit_card]' }, ['blob:credit_card']],
  ])('%s', (_name, params, spec, expected, redacted) => {
    expect(redact(params, spec)).toEqual({ params: expected, redacted });
  });

  it('keeps __proto__ and constructor keys as own data', () => {
    const params: unknown = JSON.parse('{"__proto__": {"e": "a@b.io"}, "constructor": "x"}');
    const result = redact(params, ['email']);
    expect(Object.getPrototypeOf(result.params)).toBe(Object.prototype);
    expect(JSON.stringify(result.params)).toBe('{"__proto__":{"e":"[REDACTED:email]"},"constructor":"x"}');
    expect(result.redacted).toEqual(['__proto__.e:email']);
  });

  it('replaces what is nested past the depth bound', () => {
    let nested: unknown = 'a@b.io';
    for (let level = 0; level < MAX_REDACTION_DEPTH + 5; level++) {
      nested = [nested];
    }
    const result = redact(nested, ['email']);
    expect(JSON.stringify(result.params)).not.toContain('a@b.io');
    expect(result.redacted).toHaveLength(1);
    expect(result.redacted[0]).toMatch(/:too_deep$/u);
  });
});

const filler = fc.string({ unit: fc.constantFrom('a', 'b', 'z', ' ', ',', '.', '\n', 'Q'), maxLength: 12 });

const ssn = fc
  .tuple(fc.integer({ min: 1, max: 899 }), fc.integer({ min: 1, max: 99 }), fc.integer({ min: 1, max: 9999 }))
  .filter(([area]) => area !== 666)
  .map(([area, group, serial]) => `${String(area).padStart(3, '0')}-${String(group).padStart(2, '0')}-${String(serial).padStart(4, '0')}`);

/** A 16-digit number completed with its Luhn check digit. */
const card = fc
  .array(fc.integer({ min: 0, max: 9 }), { minLength: 15, maxLength: 15 })
  .map((digits) => {
    const body = `4${digits.slice(1).join('')}`;
    const check = [...Array(10).keys()].find((digit) => luhnValid(`${body}${digit}`)) ?? 0;
    return `${body}${check}`;
  })
  .filter((number) => !/^(\d)\1*$/u.test(number));

const email = fc
  .tuple(fc.stringMatching(/^[a-z][a-z0-9]{0,8}$/u), fc.stringMatching(/^[a-z]{1,8}$/u), fc.constantFrom('com', 'io', 'org'))
  .map(([local, domain, tld]) => `${local}@${domain}.${tld}`);

const secret = fc.oneof(ssn, card, email);

/** Parameters with secrets embedded in text, and the list of secrets embedded. */
const paramsWithSecrets = fc
  .array(fc.tuple(fc.stringMatching(/^[a-z]{1,6}$/u), filler, secret, filler), { minLength: 1, maxLength: 6 })
  .map((entries) => ({
    params: { nested: { list: entries.map(([key, before, value, after]) => ({ [key]: `${before} ${value} ${after}` })) } },
    secrets: entries.map(([, , value]) => value),
  }));

describe('redact properties', () => {
  it('never throws on arbitrary JSON', () => {
    fc.assert(
      fc.property(fc.jsonValue(), fc.subarray<Redaction>(['ssn', 'email', 'credit_card', 'phone', 'iban', 'pii']), (value, spec) => {
        redact(value, spec);
      }),
      { numRuns: 300 },
    );
  });

  it('leaves none of the matched secrets in the output', () => {
    fc.assert(
      fc.property(paramsWithSecrets, ({ params, secrets }) => {
        const output = JSON.stringify(redact(params, ['pii']).params);
        for (const value of secrets) {
          expect(output).not.toContain(value);
        }
      }),
      { numRuns: 300 },
    );
  });

  it('never lists a secret in what it reports as redacted', () => {
    fc.assert(
      fc.property(paramsWithSecrets, ({ params, secrets }) => {
        const report = redact(params, ['pii']).redacted.join('\n');
        for (const value of secrets) {
          expect(report).not.toContain(value);
        }
      }),
      { numRuns: 100 },
    );
  });

  it('is idempotent', () => {
    const anyParams = fc.oneof(
      paramsWithSecrets.map(({ params }) => params as unknown),
      fc.jsonValue().map((value) => value as unknown),
    );
    fc.assert(
      fc.property(anyParams, (params) => {
        const once = redact(params, ['pii', { param: 'nested' }]).params;
        expect(redact(once, ['pii', { param: 'nested' }]).params).toEqual(once);
      }),
      { numRuns: 300 },
    );
  });

  it('does not modify its input', () => {
    fc.assert(
      fc.property(fc.oneof(paramsWithSecrets.map(({ params }) => params as unknown), fc.jsonValue()), (params) => {
        const before = structuredClone(params);
        redact(params, ['pii', { param: 'nested.list' }]);
        expect(params).toEqual(before);
      }),
      { numRuns: 200 },
    );
  });
});

describe('integers that carry a card number', () => {
  it('are redacted beyond 2^53 too, as the answer redaction reads them', () => {
    const { params, redacted } = redact({ card: -4146192850243993600, order: 9007199254740993000 }, ['credit_card']);
    expect(params).toEqual({ card: '-[REDACTED:credit_card]', order: 9007199254740993000 });
    expect(redacted).toEqual(['card:credit_card']);
  });
});
