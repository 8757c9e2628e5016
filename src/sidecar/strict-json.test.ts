import { describe, expect, it } from 'vitest';
import { parseStrictJson, StrictJsonError } from './strict-json.ts';

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
  ])('refuses %s', (_name, text, message) => {
    expect(() => parseStrictJson(text)).toThrow(StrictJsonError);
    expect(() => parseStrictJson(text)).toThrow(message);
  });
});
