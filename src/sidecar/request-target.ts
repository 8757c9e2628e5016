// The request target as the sidecar reads it: one strict normal form of a
// path and of a query string, and a refusal with a reason for anything two
// reasonable parsers could read differently (RFC 3986; the `..;` of Tomcat and
// Spring, the `\` of the WHATWG URL parser, servers that decode twice, accept
// overlong UTF-8 or `%u`, read `a[]` as a list or `+` as a space). Pure.
import { foldName } from '../compiler/strict-json.ts';

export class TargetRefusal extends Error {
  override readonly name = 'TargetRefusal';
}

function refuse(reason: string): never {
  throw new TargetRefusal(reason);
}

/** RFC 3986 pchar without pct-encoded, and `/`, less `;` (path parameters), which is refused with its own reason. */
const PATH_CHAR = /^[A-Za-z0-9\-._~!$&'()*+,=:@/%]$/;
/** RFC 3986 query characters less `;` (a separator to some servers) and `+` (a space to form decoders, a plus to others). */
const QUERY_CHAR = /^[A-Za-z0-9\-._~!$&'()*,=:@/?%]$/;
// eslint-disable-next-line no-control-regex -- control characters are what it finds
const CONTROL = /[\u0000-\u001f\u007f-\u009f]/;
const DOUBLE_ENCODED = /%(?:[0-9a-f]{2}|u)/i;
/** A query key the sidecar reads as the name it is: no brackets, dots or other structure a server may parse. */
const PLAIN_KEY = /^[A-Za-z0-9_$-]+$/;

const utf8 = new TextDecoder('utf-8', { fatal: true });

// One fold for query names and JSON keys: the strict JSON parser's.
export { foldName };

function describe(char: string): string {
  const code = char.codePointAt(0) ?? 0;
  return code < 0x21 || code > 0x7e ? `U+${code.toString(16).toUpperCase().padStart(4, '0')}` : JSON.stringify(char);
}

function checkRawCharacters(raw: string, allowed: RegExp, where: string): void {
  for (const char of raw) {
    if (allowed.test(char)) continue;
    if (char === '\\') refuse(`the ${where} holds a backslash, which some parsers read as a slash`);
    if (char === ';') refuse(`the ${where} holds a ";", which some servers read as a parameter separator and others as data`);
    if (where === 'query' && char === '+') refuse('the query holds a "+", a space to form decoders and a plus to others: write %20 or %2B');
    if (where === 'query' && (char === '[' || char === ']')) refuse('the query holds a bracket, which some servers read as a list or an object');
    refuse(`the ${where} holds the character ${describe(char)}, which must be percent-encoded (RFC 3986)`);
  }
}

/** One round of percent-decoding, strict: %XX only (no %uXXXX), and the bytes must be UTF-8 without overlong forms. */
function percentDecode(raw: string, where: string): string {
  const bad = /%(?![0-9A-Fa-f]{2})/.exec(raw);
  if (bad !== null) {
    if (/^%u/i.test(raw.slice(bad.index))) refuse(`the ${where} holds a %u escape, which only some servers decode`);
    refuse(`the ${where} holds a "%" not followed by two hex digits`);
  }
  if (!raw.includes('%')) return raw;
  const bytes = Buffer.from(raw.replace(/%([0-9A-Fa-f]{2})/g, (_match, hex: string) => String.fromCharCode(Number.parseInt(hex, 16))), 'latin1');
  try {
    return utf8.decode(bytes);
  } catch {
    return refuse(`the ${where} does not decode to UTF-8 (an invalid or overlong sequence, read differently by different servers)`);
  }
}

/** What a decoded piece may not hold: it would read differently decoded once, twice, or not at all. */
function checkDecoded(decoded: string, where: string): void {
  if (CONTROL.test(decoded)) refuse(`the ${where} decodes to a control character`);
  if (DOUBLE_ENCODED.test(decoded)) refuse(`the ${where} is percent-encoded twice (%25 before an escape), which servers that decode twice read otherwise`);
  if (decoded.normalize('NFKC') !== decoded) refuse(`the ${where} is not in Unicode normal form NFKC (servers that normalize it read other characters)`);
}

function checkSegment(raw: string, decoded: string): void {
  if (raw === '.' || raw === '..' || decoded === '.' || decoded === '..') refuse('the path holds a dot segment (. or ..), before or after percent-decoding');
  if (decoded.includes('/')) refuse('the path holds an encoded slash (%2F)');
  if (decoded.includes('\\')) refuse('the path holds an encoded backslash (%5C), which some parsers read as a slash');
  if (decoded.includes(';')) refuse('the path holds an encoded ";" (%3B), which servers that decode before stripping parameters read as one');
  if (decoded.includes('?') || decoded.includes('#')) refuse('the path holds an encoded "?" or "#", which a server that decodes first reads as the start of a query or fragment');
}

/**
 * The normal form of a request path (without its query): each segment
 * percent-decoded once. Refused, with the reason: a path that is not absolute,
 * `;` parameters, a backslash raw or encoded, an encoded slash, dot segments
 * before or after decoding, an empty segment (`//`), `%u` escapes, double
 * encoding, bytes that are not UTF-8 (overlong forms included), control
 * characters, and text that Unicode NFKC normalization would change.
 */
export function normalPath(raw: string): string {
  if (!raw.startsWith('/')) refuse(`the path ${JSON.stringify(raw)} is not absolute`);
  checkRawCharacters(raw, PATH_CHAR, 'path');
  const segments = raw.slice(1).split('/');
  const decoded = segments.map((segment, i) => {
    if (segment === '' && i < segments.length - 1) refuse('the path holds an empty segment (//)');
    const text = percentDecode(segment, 'path');
    checkSegment(segment, text);
    checkDecoded(text, 'path');
    return text;
  });
  return `/${decoded.join('/')}`;
}

function keyRefusal(key: string): string {
  if (key === '') return 'the query holds a parameter without a name';
  if (/[[\]]/.test(key)) return `the query parameter ${JSON.stringify(key)} is bracketed, which some servers read as a list or an object`;
  if (key.includes('.')) return `the query parameter ${JSON.stringify(key)} holds a dot, which some servers read as a nested name`;
  return `the query parameter ${JSON.stringify(key)} is not a plain name (letters, digits, _, - and $)`;
}

/**
 * The parameters of a query string (without the `?`), each value a string.
 * Strict, whatever a rule reads: pairs are separated by `&` only (a `;` is
 * refused), spaces are written %20 (a raw `+` is refused), names are plain
 * (no brackets or dots, raw or encoded), and no name appears twice: not
 * repeated, not percent-encoded into another's name, not differing only in
 * letter case.
 */
export function queryParams(query: string): Record<string, string> {
  const params: Record<string, string> = {};
  if (query === '') return params;
  checkRawCharacters(query, QUERY_CHAR, 'query');
  const seen = new Map<string, string>();
  for (const pair of query.split('&')) {
    if (pair === '') refuse('the query holds an empty parameter (&& or a trailing &)');
    const equals = pair.indexOf('=');
    const key = percentDecode(equals < 0 ? pair : pair.slice(0, equals), 'query');
    const value = equals < 0 ? '' : percentDecode(pair.slice(equals + 1), 'query');
    if (!PLAIN_KEY.test(key)) refuse(keyRefusal(key));
    if (CONTROL.test(value)) refuse(`the query parameter ${key} decodes to a control character`);
    const other = seen.get(foldName(key));
    if (other === key) refuse(`the query parameter ${key} is repeated`);
    if (other !== undefined) refuse(`the query parameters ${other} and ${key} differ only in letter case`);
    seen.set(foldName(key), key);
    // A "__proto__" parameter stays a parameter.
    Object.defineProperty(params, key, { value, enumerable: true, writable: true, configurable: true });
  }
  return params;
}
