import { describe, expect, it } from 'vitest';
import { numberRefusal, parseStrictJson, StrictJsonError } from './strict-json.ts';

describe('parseStrictJson', () => {
  it.each([
    ['an object with nested arrays', '{"a": [1, {"b": null}], "c": "x"}', { a: [1, { b: null }], c: 'x' }],
    ['numbers of every form', '[0, -1.5, 2e3, 4E-2]', [0, -1.5, 2000, 0.04]],
    ['escaped quotes in keys and values', '{"a\\"b": "c\\\\"}', { 'a"b': 'c\\' }],
    ['the same key in sibling objects', '[{"a": 1}, {"a": 2}]', [{ a: 1 }, { a: 2 }]],
    ['surrounding whitespace', ' \n{ } \t', {}],
  ])('accepts %s', (_name, text, expected) => {
    expect(parseStrictJson(text)).toEqual(expected);
  });

  it.each([
    ['a duplicate key', '{"amount": 1, "amount": 99999}', /duplicate key "amount"/],
    ['a duplicate key spelled with an escape', '{"a": 1, "\\u0061": 2}', /duplicate key "a"/],
    ['a duplicate key in a nested object', '{"x": {"k": 1, "k": 2}}', /duplicate key "k"/],
    ['a truncated object', '{"amount": 1', /expected "}"|expected ","/],
    ['a truncated string', '{"a": "b', /unterminated string/],
    ['trailing text', '{} {}', /after the JSON value/],
    ['a trailing comma', '[1,]', /expected a JSON value/],
    ['single quotes', "{'a': 1}", /expected an object key/],
    ['an empty text', '', /expected a JSON value/],
    ['a bad escape', '{"a": "\\x"}', /invalid string/],
    ['nesting deeper than 64', '['.repeat(70) + ']'.repeat(70), /nested deeper than 64/],
    ['keys that differ only in letter case', '{"amount": 1, "AMOUNT": 90000}', /"amount" and "AMOUNT" differ only in letter case/],
    ['keys that differ by a Kelvin sign, which Go folds to k', '{"k": 1, "\u212a": 2}', /differ only in letter case/],
    ['a number past the precision of a double', '{"amount": 5000.0000000000000001}', /5000\.0000000000000001 is not exactly the double it reads as \(5000\)/],
  ])('refuses %s', (_name, text, message) => {
    expect(() => parseStrictJson(text)).toThrow(StrictJsonError);
    expect(() => parseStrictJson(text)).toThrow(message);
  });
});

describe('numberRefusal', () => {
  it.each([
    ['1.5'], ['0.1'], ['1e3'], ['5000.0'], ['5000'], ['-0'], ['0.0e10'], ['0.30000000000000004'], ['9007199254740992'], ['5e-324'], ['1.7976931348623157e308'],
    // The shortest form of its double is the value written, though the double is not exactly it.
    ['1e23'],
    ['5000.000000000000000000'],
  ])('takes %s, the value of the double it reads as', (numeral) => {
    expect(numberRefusal(numeral)).toBeUndefined();
  });

  it.each([
    ['5000.0000000000000001', /reads as \(5000\)/],
    ['9007199254740993', /reads as \(9007199254740992\)/],
    ['0.3000000000000000444', /reads as \(0\.30000000000000004\)/],
    ['123456789012345678901234567890', /reads as \(1\.2345678901234568e\+29\)/],
    ['1e-400', /reads as \(0\)/],
    ['2.5e-324', /reads as \(5e-324\)/],
    ['1e400', /beyond the range of a double/],
    ['-1e400', /beyond the range of a double/],
  ])('refuses %s, naming the double it reads as', (numeral, reason) => {
    expect(numberRefusal(numeral)).toMatch(reason);
  });
});
