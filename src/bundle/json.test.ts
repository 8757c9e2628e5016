import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { canonicalJson } from './index.ts';

describe('canonicalJson', () => {
  it('sorts keys by code point at every level and writes no whitespace', () => {
    expect(canonicalJson({ b: [{ z: 1, a: 2 }], a: 'x', '\u{1F600}': 0, '\uFFFD': 1 })).toBe('{"a":"x","b":[{"a":2,"z":1}],"\uFFFD":1,"\u{1F600}":0}');
  });

  it('escapes the line and paragraph separators as Go does', () => {
    expect(canonicalJson('a\u2028b\u2029')).toBe('"a\\u2028b\\u2029"');
  });

  it('keeps __proto__ as an ordinary key', () => {
    expect(canonicalJson(JSON.parse('{"__proto__":{"x":1}}'))).toBe('{"__proto__":{"x":1}}');
  });

  it.each([
    ['undefined', { a: undefined }],
    ['infinity', [Number.POSITIVE_INFINITY]],
    ['a date', { when: new Date(0) }],
    ['a map', new Map()],
    ['a bigint', 1n],
  ])('refuses %s', (_name, value) => {
    expect(() => canonicalJson(value)).toThrow(expect.objectContaining({ code: 'bundle_data_invalid' }) as Error);
  });

  it('reads back to the same value', () => {
    fc.assert(
      fc.property(fc.jsonValue(), (value) => {
        expect(JSON.parse(canonicalJson(value))).toEqual(JSON.parse(JSON.stringify(value)));
      }),
      { numRuns: 300 },
    );
  });
});
